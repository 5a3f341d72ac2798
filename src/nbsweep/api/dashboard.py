"""``nbsweep dashboard`` as a library call: serve a store's sweeps on a live page."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nbsweep.errors import UsageError
from nbsweep.local.server import local_sweep_id
from nbsweep.options import DashboardOptions, StoreOptions

if TYPE_CHECKING:
    from nbsweep.dashboard.serve import DashboardServer

INSTALL_HINT = "the dashboard needs its extra: pip install 'nbsweep[dashboard]'"


def dashboard_warning(host: str) -> str:
    """The one line said when the dashboard listens beyond this machine's loopback."""
    return (
        f"warning: the dashboard listens on {host}: anyone who can reach this machine and "
        "has the URL's token can see and steer these sweeps"
    )


def dashboard_server(options: DashboardOptions) -> DashboardServer:
    """The dashboard bound to its port, not yet serving (``run()`` or ``start()`` it)."""
    try:
        from nbsweep.dashboard.serve import DashboardServer
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return DashboardServer(options)


def dashboard(
    sweep_id: str | None = None,
    store: str | os.PathLike[str] | StoreOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    notebooks: str | os.PathLike[str] = ".",
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serve the store's sweeps until Ctrl-C; ``on_ready`` gets the URL (with its token)
    once it can be opened, and a warning line first if ``host`` is not loopback."""
    from nbsweep.api.sweeps import store_options

    options = DashboardOptions(
        store=store_options(store),
        notebooks=Path(notebooks),
        host=host,
        port=port,
        sweep_id=(local_sweep_id(sweep_id) or sweep_id) if sweep_id else None,
    )
    server = dashboard_server(options)
    if server.exposed:
        on_ready(dashboard_warning(host))
    on_ready(server.url)
    server.run()
