"""A run's executed notebook for the dashboard: found inside the folder the dashboard serves
notebooks from (the store's path to it is untrusted), and rendered with nbconvert's lab
template. The HTML is served under a Content-Security-Policy sandbox, so nothing in it runs
and nothing it names is fetched: its outputs stay pictures and text."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from nbsweep.errors import UsageError

RENDERED_KEPT = 16
"""Rendered notebooks kept, keyed by path, size and modification time."""

NOTEBOOK_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"
)
"""The rendered notebook's own policy: an opaque origin, no script, nothing fetched."""


def locate(recorded: str, folder: Path) -> Path:
    """The notebook the store names, if it is an .ipynb inside ``folder`` (relative paths
    are the agent's: taken from ``folder``)."""
    root = folder.resolve()
    path = (root / recorded).resolve()
    if path.suffix != ".ipynb" or not path.is_relative_to(root):
        raise UsageError(
            f"the run's notebook {recorded!r} is outside {str(root)!r}: start the dashboard "
            "with --notebooks DIR naming the folder the agents saved it under"
        )
    if not path.is_file():
        raise UsageError(f"the run's notebook {recorded!r} is not there (moved or deleted?)")
    return path


class Renderer:
    """nbconvert's HTML of a notebook, the last ``RENDERED_KEPT`` kept."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def html(self, path: Path) -> str:
        status = path.stat()
        key = (str(path), status.st_size, status.st_mtime_ns)
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
        rendered = _render(path)
        with self._lock:
            self._kept[key] = rendered
            while len(self._kept) > RENDERED_KEPT:
                self._kept.popitem(last=False)
        return rendered


def _render(path: Path) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.read(path, as_version=4)
    # No URLs to fetch scripts from: the page could not run them, and names no CDN.
    exporter = HTMLExporter(template_name="lab", mathjax_url="", require_js_url="", jquery_url="")
    html, _ = exporter.from_notebook_node(notebook)
    return html
