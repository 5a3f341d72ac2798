"""``nbsweep dashboard``: a live page over a local sweep store (the ``nbsweep[dashboard]``
extra). ``views`` turns store records into the page's JSON; ``watch`` tells what changed since
a page last asked; ``notebooks`` renders a run's executed notebook; ``app`` is the Starlette
application with its token and origin checks; ``serve`` runs it with uvicorn."""
