"""The dashboard's Starlette application. Every request needs the token (in the URL once,
then a cookie, as Jupyter does); a control action also needs the page's own origin. Loopback
dashboards answer only to loopback host names (no DNS rebinding). Pages get a strict
Content-Security-Policy; a rendered notebook gets a sandbox of its own (``notebooks``)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nbsweep.dashboard.data import SweepData
from nbsweep.dashboard.notebooks import NOTEBOOK_POLICY
from nbsweep.errors import NbsweepError, UsageError

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
STATIC = Path(str(resources.files("nbsweep.dashboard") / "static"))


def cookie_name(port: int) -> str:
    """Cookies ignore ports: each dashboard on this host has its own."""
    return f"nbsweep-dashboard-{port}"


def create_app(data: SweepData, token: str, port: int) -> Starlette:
    """The application over ``data``; ``port``: the one it is served on (for the host check
    and the cookie's name)."""
    guard = _Guard(token, port, data.options.host)

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        response.headers["Cache-Control"] = "no-store"
        return response

    async def sweeps(request: Request) -> Response:
        return await _answer(data.sweeps)

    async def sweep(request: Request) -> Response:
        since = _integer(request, "since")
        return await _answer(data.changes, request.path_params["sweep_id"], since)

    async def history(request: Request) -> Response:
        key = request.query_params.get("key")
        if not key:
            return _error(400, "history needs ?key=NAME: one of the keys the runs logged")
        after = _integer(request, "after")
        return await _answer(data.history, request.path_params["sweep_id"], key, after)

    async def run(request: Request) -> Response:
        return await _answer(data.run, request.path_params["run_id"])

    async def notebook_html(request: Request) -> Response:
        try:
            html = await run_in_threadpool(data.notebook_html, request.path_params["run_id"])
        except NbsweepError as problem:
            return PlainTextResponse(str(problem), status_code=404)
        response = Response(html, media_type="text/html")
        response.headers["Content-Security-Policy"] = NOTEBOOK_POLICY + "; frame-ancestors 'self'"
        return response

    async def notebook_file(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            path = await run_in_threadpool(data.notebook, run_id)
        except NbsweepError as problem:
            return PlainTextResponse(str(problem), status_code=404)
        return FileResponse(
            path,
            media_type="application/x-ipynb+json",
            filename=f"{run_id}-{path.name}",
            headers={"Content-Security-Policy": "sandbox; default-src 'none'"},
        )

    async def control(request: Request) -> Response:
        body = await _json_body(request)
        action = body.get("action") if isinstance(body, dict) else None
        if not isinstance(action, str):
            return _error(400, 'send {"action": "pause"} (or resume, stop, cancel)')
        return await _answer(_said(data.control), request.path_params["sweep_id"], action)

    async def stop_run(request: Request) -> Response:
        await _json_body(request)
        return await _answer(_said(data.stop_run), request.path_params["run_id"])

    routes = [
        Route("/", index),
        Route("/api/sweeps", sweeps),
        Route("/api/sweeps/{sweep_id}", sweep),
        Route("/api/sweeps/{sweep_id}/history", history),
        Route("/api/sweeps/{sweep_id}/control", control, methods=["POST"]),
        Route("/api/runs/{run_id}", run),
        Route("/api/runs/{run_id}/stop", stop_run, methods=["POST"]),
        Route("/runs/{run_id}/notebook.html", notebook_html),
        Route("/runs/{run_id}/notebook.ipynb", notebook_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_GuardMiddleware, guard=guard)
    return app


class _Guard:
    def __init__(self, token: str, port: int, host: str) -> None:
        self.token = token
        self.cookie = cookie_name(port)
        self.port = port
        # Bound to loopback: only loopback names (a rebound DNS name is refused).
        self.hosts = (
            {f"{name}:{port}" for name in LOOPBACK} if host in ("127.0.0.1", "localhost") else None
        )

    def refusal(self, request: Request) -> Response | None:
        """Why the request is refused, or None to serve it."""
        if self.hosts is not None and request.headers.get("host") not in self.hosts:
            return PlainTextResponse("this dashboard answers on 127.0.0.1 only", status_code=403)
        given = (
            request.query_params.get("token")
            or request.cookies.get(self.cookie)
            or request.headers.get("authorization", "").removeprefix("token ")
        )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse(
                "this dashboard needs its token: open the URL `nbsweep dashboard` printed",
                status_code=403,
            )
        if request.method != "GET" and not self._same_origin(request):
            return _error(403, "control actions come from the dashboard's own page only")
        return None

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        host = request.headers.get("host")
        json_body = request.headers.get("content-type", "").startswith("application/json")
        return bool(origin and host and origin == f"http://{host}" and json_body)


class _GuardMiddleware:
    """Checks every request with ``_Guard`` and sets the headers every answer carries."""

    def __init__(self, app: Callable[..., Awaitable[None]], guard: _Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        refused = self.guard.refusal(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        set_cookie = request.query_params.get("token") is not None

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if not any(name == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                if set_cookie:
                    cookie = (
                        f"{self.guard.cookie}={self.guard.token}; Path=/; HttpOnly; SameSite=Strict"
                    )
                    headers.append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _answer(work: Callable[..., Any], *args: Any) -> Response:
    """``work(*args)`` on a thread (the store blocks), as JSON; a usage error as 404. The
    JSON is encoded on that thread too: a long history would hold the event loop."""
    try:
        response = await run_in_threadpool(lambda: JSONResponse(work(*args)))
    except UsageError as problem:
        return _error(404, str(problem))
    except NbsweepError as problem:
        return _error(500, str(problem))
    response.headers["Cache-Control"] = "no-store"
    return response


def _said(work: Callable[..., str]) -> Callable[..., dict[str, str]]:
    return lambda *args: {"said": work(*args)}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _integer(request: Request, name: str) -> int:
    text = request.query_params.get(name, "0")
    return int(text) if text.isdigit() else 0


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        return None
