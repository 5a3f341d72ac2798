"""Serving the dashboard with uvicorn: on the calling thread until Ctrl-C (``nbsweep
dashboard``), or on a thread of its own beside running agents (``nbsweep sweep --run
--dashboard``, and tests)."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import uvicorn

from nbsweep.dashboard.app import create_app
from nbsweep.dashboard.data import SweepData
from nbsweep.errors import UsageError
from nbsweep.options import DashboardOptions

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class DashboardServer:
    """The dashboard on its socket (bound at once: the URL is good as soon as it exists)."""

    def __init__(self, options: DashboardOptions) -> None:
        self.options = options
        self.token = secrets.token_urlsafe(24)
        self.data = SweepData(options)
        try:
            if options.sweep_id is not None:
                self.data.require(options.sweep_id)
            self.socket = _bind(options.host, options.port)
        except BaseException:
            self.data.close()
            raise
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.data, self.token, self.port),
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.options.host
        shown = f"[{host}]" if ":" in host else host
        opened = f"#/sweep/{self.options.sweep_id}" if self.options.sweep_id else ""
        return f"http://{shown}:{self.port}/?token={self.token}{opened}"

    @property
    def exposed(self) -> bool:
        """Bound to more than this machine's loopback."""
        return self.options.host not in LOOPBACK_HOSTS

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM (uvicorn's own handlers), then close."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.close()

    def start(self) -> None:
        """Serve on a thread; ``stop`` ends it."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise UsageError("the dashboard did not start within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.socket.close()
        self.data.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as problem:
        raise UsageError(
            f"cannot serve the dashboard on {host}:{port}: {problem.strerror}; "
            "choose another --port (0: any free one)"
        ) from None
