"""A W&B-protocol test server that the real ``wandb`` client can talk to.

W&B cloud is out of reach in tests, so this stands in for it on 127.0.0.1 at a random
port. It speaks just enough of the protocol wandb 0.31 uses for ``wandb.init`` /
``log`` / ``save`` / ``finish``, ``wandb sweep`` and ``wandb agent``:

* ``POST /graphql``: operations are told apart by their root field (``viewer``,
  ``project { sweep }``, ``upsertSweep``, ``createAgent``, ``agentHeartbeat``,
  ``upsertBucket``, ``createRunFiles``, ``serverInfo``, ``entity``); anything else gets
  an empty ``data`` object, and its name still lands in ``operations``.
* ``POST /files/ENTITY/PROJECT/RUN/file_stream``: history, summary, console output,
  ``complete`` and ``exitcode``.
* ``PUT /storage/...``: the upload URLs handed out by ``createRunFiles``.
* anything else (``/sdk/otel/...`` telemetry included): 404.

It records everything it receives, answers heartbeats from a script that a test sets,
and can be told to fail requests. Use it with :func:`wandb_env`::

    with WandbTestServer() as server:
        sweep_id = server.add_sweep({"program": "train.py", "method": "grid"}, project="p")
        server.script(sweep_id, [
            {"type": "run", "run_id": "r1", "args": {"lr": {"value": 0.1}}},
            {"type": "exit"},
        ])
        subprocess.run(["wandb", "agent", f"{server.entity}/p/{sweep_id}"],
                       env=wandb_env(server, tmp_path, project="p"))
        assert server.runs["r1"].config["lr"] == 0.1
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import yaml

#: Passes the client's local format check (40+ characters of ``[A-Za-z0-9_]``).
DUMMY_API_KEY = "nbsweeptest" + "0" * 29

Command = dict[str, Any]
#: ``hook(server, heartbeat)`` returns the commands to answer, or None for "not yet".
Hook = Callable[["WandbTestServer", "Heartbeat"], "Command | Iterable[Command] | None"]


# --------------------------------------------------------------------------- records


@dataclass
class Request:
    """One HTTP request as received, with the status it was answered with."""

    method: str
    path: str
    operation: str | None  # GraphQL operation name; None for other paths
    variables: dict[str, Any]
    query: str
    body: bytes
    status: int = 200
    time: float = field(default_factory=time.monotonic)


@dataclass
class RunRecord:
    """A run as the client reported it (``upsertBucket`` + file stream + uploads)."""

    id: str
    entity: str
    project: str
    storage_id: str
    sweep: str | None = None
    display_name: str | None = None
    state: str = "running"
    #: Config values, unwrapped from the ``{"value": v}`` form the client sends.
    config: dict[str, Any] = field(default_factory=dict)
    #: Variables of every ``UpsertBucket`` for this run, in order.
    upserts: list[dict[str, Any]] = field(default_factory=list)
    #: File-stream files as lists of lines, as sent: ``wandb-history.jsonl`` (JSON rows),
    #: ``wandb-summary.json`` (one JSON object per update), ``output.log`` ("ISO-time text",
    #: "ERROR ISO-time text" for stderr), ``wandb-events.jsonl`` (system metrics).
    streams: dict[str, list[str]] = field(default_factory=dict)
    exitcode: int | None = None
    complete: bool = False
    #: Uploaded files (``wandb.save``, ``config.yaml``, ...), name -> contents.
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.streams.get("wandb-history.jsonl", [])]

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.streams.get("wandb-summary.json", [])
        return json.loads(lines[-1]) if lines else {}

    @property
    def output(self) -> str:
        """Console output as streamed, without the time stamps (stderr lines too)."""
        lines = self.streams.get("output.log", [])
        return "".join(_CONSOLE_PREFIX.sub("", line) + "\n" for line in lines)

    @property
    def user_config(self) -> dict[str, Any]:
        """``config`` without wandb's own ``_wandb`` entry."""
        return {k: v for k, v in self.config.items() if not k.startswith("_")}


@dataclass
class SweepRecord:
    id: str
    entity: str
    project: str
    config: dict[str, Any]
    config_yaml: str
    state: str = "RUNNING"
    upserts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Heartbeat:
    agent: str
    sweep: str
    #: ``{run_id: alive}`` as the agent reported it.
    run_state: dict[str, bool]
    metrics: dict[str, Any]
    #: What the server answered.
    commands: list[Command] = field(default_factory=list)
    time: float = field(default_factory=time.monotonic)

    @property
    def live_runs(self) -> list[str]:
        return [run for run, alive in self.run_state.items() if alive]


@dataclass
class AgentRecord:
    id: str
    sweep: str
    entity: str | None
    project: str | None
    host: str | None
    heartbeats: list[Heartbeat] = field(default_factory=list)


@dataclass
class _Failure:
    key: str
    status: int
    times: int


def stop_after_rows(run_id: str, rows: int) -> Hook:
    """A script step: answer ``stop`` for ``run_id`` once it has logged ``rows`` history rows."""

    def hook(server: WandbTestServer, heartbeat: Heartbeat) -> list[Command] | None:
        run = server.runs.get(run_id)
        if run is None or len(run.history) < rows:
            return None
        return [{"type": "stop", "run_id": run_id}]

    return hook


# --------------------------------------------------------------------------- server


class WandbTestServer:
    """An in-process W&B server on ``127.0.0.1``; see the module docstring.

    Records: ``runs`` (run id -> :class:`RunRecord`), ``sweeps`` (sweep id ->
    :class:`SweepRecord`), ``agents`` (agent id -> :class:`AgentRecord`), ``heartbeats``,
    ``operations`` (GraphQL operation names in order), ``unknown_operations`` and
    ``requests`` (everything, with status and time).
    """

    def __init__(self, entity: str = "test-entity") -> None:
        self.entity = entity
        self._lock = threading.Condition(threading.RLock())
        self._runs: dict[str, RunRecord] = {}
        self._sweeps: dict[str, SweepRecord] = {}
        self._agents: dict[str, AgentRecord] = {}
        self._requests: list[Request] = []
        self._scripts: dict[str, deque[Any] | Hook] = {}
        self._failures: list[_Failure] = []
        self._unknown_operations: list[str] = []
        self._ids = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> WandbTestServer:
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="wandb-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()  # joins the handler threads
        assert self._thread is not None
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> WandbTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ---- what tests set up

    def add_sweep(
        self,
        config: dict[str, Any] | str,
        *,
        sweep_id: str | None = None,
        entity: str | None = None,
        project: str = "uncategorized",
        state: str = "RUNNING",
    ) -> str:
        """Create a sweep directly (as ``wandb sweep`` would) and return its id."""
        config_yaml = config if isinstance(config, str) else yaml.safe_dump(config)
        with self._lock:
            sweep = SweepRecord(
                id=sweep_id or self._new_id("sweep"),
                entity=entity or self.entity,
                project=project,
                config=yaml.safe_load(config_yaml) or {},
                config_yaml=config_yaml,
                state=state,
            )
            self._sweeps[sweep.id] = sweep
            return sweep.id

    def script(self, sweep_id: str, steps: Iterable[Any] | Hook) -> None:
        """Set how heartbeats from the agents of ``sweep_id`` are answered.

        ``steps`` is a list; each heartbeat takes the step at its front:

        * a command dict (``{"type": "run", "run_id": ..., "args": {k: {"value": v}}}``,
          ``{"type": "stop", "run_id": ...}``, ``{"type": "exit"}``) or a list of them is
          answered and removed. Like W&B, batches holding anything but ``stop`` wait until
          the agent reports no live run (so ``exit`` does not kill the previous trial);
        * a callable ``hook(server, heartbeat)`` is asked each time; it returns the commands
          (then the step is removed) or None (answer nothing yet, ask again next time).

        When the list is used up, heartbeats get ``[]``. ``steps`` may instead be one
        callable, asked on every heartbeat. A ``run`` command without ``program`` gets the
        sweep config's ``program``.
        """
        with self._lock:
            self._scripts[sweep_id] = steps if callable(steps) else deque(steps)

    def fail_next(self, key: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``key`` with ``status``.

        ``key`` is a GraphQL operation name (``"Heartbeat"``) or a path; a path ending in
        ``/`` matches every path under it (``"/files/"``).
        """
        with self._lock:
            self._failures.append(_Failure(key, status, times))

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0) -> bool:
        """Wait until ``predicate()`` is true (checked after each request); False on timeout."""
        with self._lock:
            return bool(self._lock.wait_for(predicate, timeout))

    # ---- what tests read (snapshots of the containers; the records are live)

    @property
    def runs(self) -> dict[str, RunRecord]:
        with self._lock:
            return dict(self._runs)

    @property
    def sweeps(self) -> dict[str, SweepRecord]:
        with self._lock:
            return dict(self._sweeps)

    @property
    def agents(self) -> dict[str, AgentRecord]:
        with self._lock:
            return dict(self._agents)

    @property
    def heartbeats(self) -> list[Heartbeat]:
        with self._lock:
            return [hb for agent in self._agents.values() for hb in agent.heartbeats]

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def operations(self) -> list[str]:
        """GraphQL operation names in the order received, failed ones included."""
        with self._lock:
            return [r.operation for r in self._requests if r.operation]

    @property
    def unknown_operations(self) -> list[str]:
        """GraphQL operations the server did not know and answered with empty ``data``."""
        with self._lock:
            return list(self._unknown_operations)

    def requests_for(self, operation: str) -> list[Request]:
        return [r for r in self.requests if r.operation == operation]

    # ---- request handling (called from the handler threads)

    def _receive(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Record one request and answer it: ``(HTTP status, JSON-able reply or bytes)``."""
        operation, variables, query = None, {}, ""
        if path == "/graphql" and method == "POST":
            payload = _json_or_empty(body)
            query = payload.get("query") or ""
            variables = payload.get("variables") or {}
            operation = payload.get("operationName") or _operation_name(query)
        request = Request(method, path, operation, variables, query, body)
        with self._lock:
            self._requests.append(request)
            try:
                failure = self._injected_failure(operation, path)
                request.status, reply = failure or self._route(request)
            except Exception as error:  # a bug here should show up as a 500, not a hang
                request.status, reply = 500, {"errors": [{"message": repr(error)}]}
            self._lock.notify_all()
        return request.status, reply

    def _injected_failure(self, operation: str | None, path: str) -> tuple[int, Any] | None:
        for failure in self._failures:
            matches = failure.key in (operation, path) or (
                failure.key.endswith("/") and path.startswith(failure.key)
            )
            if matches and failure.times > 0:
                failure.times -= 1
                return failure.status, {"errors": [{"message": "injected failure"}]}
        return None

    def _route(self, request: Request) -> tuple[int, Any]:
        path = request.path
        if path == "/graphql":
            return self._graphql(request)
        if path.startswith("/files/") and path.endswith("/file_stream"):
            return self._file_stream(path, request.body)
        if path.startswith("/storage/"):
            return self._storage(request)
        return 404, {"error": "not found"}

    def _graphql(self, request: Request) -> tuple[int, Any]:
        root = _root_field(request.query)
        handler = {
            "viewer": self._viewer,
            "project": self._project,
            "upsertSweep": self._upsert_sweep,
            "createAgent": self._create_agent,
            "agentHeartbeat": self._heartbeat,
            "upsertBucket": self._upsert_bucket,
            "createRunFiles": self._create_run_files,
            "serverInfo": self._server_info,
            "entity": self._entity,
        }.get(root or "")
        if handler is None:
            self._unknown_operations.append(request.operation or root or "?")
            return 200, {"data": {}}
        return handler(request.variables, request.query)

    # ---- GraphQL operations

    def _viewer(self, variables: dict, query: str) -> tuple[int, Any]:
        viewer = {
            "id": "viewer-1",
            "entity": self.entity,
            "username": self.entity,
            "email": "tests@localhost",
            "admin": False,
            "flags": "{}",
            "teams": {"edges": []},
        }
        return 200, {"data": {"viewer": viewer}}

    def _server_info(self, variables: dict, query: str) -> tuple[int, Any]:
        # ServerFeaturesQuery: no optional server features.
        return 200, {"data": {"serverInfo": {"features": []}}}

    def _entity(self, variables: dict, query: str) -> tuple[int, Any]:
        # OrganizationCoreWeaveOrganizationID: not a CoreWeave organization.
        name = variables.get("entityName") or self.entity
        return 200, {
            "data": {"entity": {"id": f"entity-{name}", "name": name, "organization": None}}
        }

    def _project(self, variables: dict, query: str) -> tuple[int, Any]:
        entity, project = variables.get("entity"), variables.get("project")
        if re.search(r"\brun\s*\(", query):  # the public API's run lookup (Api().run)
            run = self._runs.get(variables.get("name") or variables.get("run") or "")
            node = self._project_node(entity or self.entity, project or "uncategorized")
            return 200, {"data": {"project": {**node, "run": self._public_run(run)}}}
        if not re.search(r"\bsweep\s*\(", query):
            name = project or "uncategorized"
            return 200, {"data": {"project": self._project_node(entity or self.entity, name)}}
        sweep = self._sweeps.get(variables.get("sweep") or variables.get("name") or "")
        if (
            sweep is None
            or entity not in (None, sweep.entity)
            or project not in (None, sweep.project)
        ):
            return 200, {"data": {"project": None}}
        node = {**self._project_node(sweep.entity, sweep.project), "sweep": self._sweep_node(sweep)}
        return 200, {"data": {"project": node}}

    def _upsert_sweep(self, variables: dict, query: str) -> tuple[int, Any]:
        sweep = self._sweeps.get(variables.get("id") or "")
        if sweep is None:
            sweep_id = self.add_sweep(
                variables.get("config") or "",
                entity=variables.get("entityName"),
                project=variables.get("projectName") or "uncategorized",
            )
            sweep = self._sweeps[sweep_id]
        elif variables.get("config"):
            sweep.config_yaml = variables["config"]
            sweep.config = yaml.safe_load(sweep.config_yaml) or {}
        if variables.get("state"):
            sweep.state = variables["state"]
        sweep.upserts.append(variables)
        node = {
            "id": sweep.id,
            "name": sweep.id,
            "project": self._project_node(sweep.entity, sweep.project),
        }
        reply = {"upsertSweep": {"sweep": node, "configValidationWarnings": []}}
        return 200, {"data": reply}

    def _create_agent(self, variables: dict, query: str) -> tuple[int, Any]:
        sweep = self._sweeps.get(variables.get("sweep") or "")
        if sweep is None:
            return 404, {"errors": [{"message": f"Sweep {variables.get('sweep')} not found"}]}
        if sweep.state != "RUNNING":
            return 400, {"errors": [{"message": f"Sweep {sweep.id} is not running"}]}
        agent = AgentRecord(
            id=self._new_id("agent"),
            sweep=sweep.id,
            entity=variables.get("entityName"),
            project=variables.get("projectName"),
            host=variables.get("host"),
        )
        self._agents[agent.id] = agent
        return 200, {"data": {"createAgent": {"agent": {"id": agent.id}}}}

    def _heartbeat(self, variables: dict, query: str) -> tuple[int, Any]:
        agent = self._agents.get(variables.get("id") or "")
        if agent is None:
            return 404, {"errors": [{"message": "agent not found"}]}
        heartbeat = Heartbeat(
            agent=agent.id,
            sweep=agent.sweep,
            run_state=_json_or_empty(variables.get("runState")),
            metrics=_json_or_empty(variables.get("metrics")),
        )
        heartbeat.commands = self._next_commands(heartbeat)
        agent.heartbeats.append(heartbeat)
        reply = {"agent": {"id": agent.id}, "commands": json.dumps(heartbeat.commands)}
        return 200, {"data": {"agentHeartbeat": reply}}

    def _next_commands(self, heartbeat: Heartbeat) -> list[Command]:
        script = self._scripts.get(heartbeat.sweep)
        if callable(script):
            commands = _as_commands(script(self, heartbeat))
        elif not script:
            commands = []
        elif callable(script[0]):
            commands = _as_commands(script[0](self, heartbeat))
            if commands:
                script.popleft()
        else:
            commands = _as_commands(script[0])
            if heartbeat.live_runs and any(c.get("type") != "stop" for c in commands):
                return []  # W&B hands out work only to an idle agent
            script.popleft()
        program = self._sweeps[heartbeat.sweep].config.get("program")
        for command in commands:
            if command.get("type") in ("run", "resume"):
                command.setdefault("run_id", self._new_id("run"))
                command.setdefault("args", {})
                if program is not None:
                    command.setdefault("program", program)
        return commands

    def _upsert_bucket(self, variables: dict, query: str) -> tuple[int, Any]:
        name = variables.get("name") or self._new_id("run")
        run = self._runs.get(name)
        if run is None:
            run = RunRecord(
                id=name,
                entity=variables.get("entity") or self.entity,
                project=variables.get("project") or "uncategorized",
                storage_id=self._new_id("storage"),
            )
            self._runs[name] = run
        run.upserts.append(variables)
        if variables.get("config"):
            raw = _json_or_empty(variables["config"])
            run.config = {key: _unwrap(value) for key, value in raw.items()}
        run.sweep = variables.get("sweep") or run.sweep
        run.display_name = variables.get("displayName") or run.display_name
        bucket = {
            "id": run.storage_id,
            "name": run.id,
            "displayName": run.display_name,
            "description": None,
            "config": json.dumps({k: {"value": v} for k, v in run.config.items()}),
            "sweepName": run.sweep,
            "historyLineCount": len(run.streams.get("wandb-history.jsonl", [])),
            "project": self._project_node(run.entity, run.project),
        }
        reply = {"upsertBucket": {"bucket": bucket, "inserted": len(run.upserts) == 1}}
        return 200, {"data": reply}

    def _create_run_files(self, variables: dict, query: str) -> tuple[int, Any]:
        run = self._runs.get(variables.get("run") or "")
        if run is None:
            return 404, {"errors": [{"message": f"run {variables.get('run')} not found"}]}
        files = [
            {"name": name, "uploadUrl": f"{self.url}/storage/{run.storage_id}/{quote(name)}"}
            for name in variables.get("files") or []
        ]
        reply = {"runID": run.storage_id, "uploadHeaders": [], "files": files}
        return 200, {"data": {"createRunFiles": reply}}

    # ---- file stream and uploads

    def _file_stream(self, path: str, body: bytes) -> tuple[int, Any]:
        run_id = unquote(path.split("/")[-2])  # /files/ENTITY/PROJECT/RUN/file_stream
        run = self._runs.get(run_id)
        if run is None:
            return 404, {"error": f"run {run_id} not found"}
        payload = _json_or_empty(body)
        for name, chunk in (payload.get("files") or {}).items():
            lines = run.streams.setdefault(name, [])
            offset = chunk.get("offset", len(lines))
            for index, line in enumerate(chunk.get("content") or [], start=offset):
                if index < len(lines):
                    lines[index] = line
                else:
                    lines.extend([""] * (index - len(lines)) + [line])
        if payload.get("complete"):
            run.complete = True
            run.exitcode = payload.get("exitcode")
            run.state = "finished" if run.exitcode == 0 else "failed"
        return 200, {}

    def _storage(self, request: Request) -> tuple[int, Any]:
        storage_id, _, name = request.path[len("/storage/") :].partition("/")
        run = next((r for r in self._runs.values() if r.storage_id == storage_id), None)
        if run is None:
            return 404, {"error": "unknown upload URL"}
        if request.method == "PUT":
            run.files[unquote(name)] = request.body
            return 200, {}
        contents = run.files.get(unquote(name))
        return (200, contents) if contents is not None else (404, {"error": "no such file"})

    # ---- helpers

    def _new_id(self, kind: str) -> str:
        return f"{kind[0]}{next(self._ids):04d}{os.urandom(2).hex()}"

    def _project_node(self, entity: str, project: str) -> dict[str, Any]:
        return {
            "id": f"project-{entity}-{project}",
            "name": project,
            "entity": {"id": f"entity-{entity}", "name": entity},
        }

    def _sweep_node(self, sweep: SweepRecord) -> dict[str, Any]:
        runs = [run for run in self._runs.values() if run.sweep == sweep.id]
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        return {
            "id": sweep.id,
            "name": sweep.id,
            "displayName": sweep.config.get("name"),
            "method": sweep.config.get("method"),
            "state": sweep.state,
            "description": sweep.config.get("description"),
            "config": sweep.config_yaml,
            "createdAt": now,
            "heartbeatAt": now,
            "updatedAt": now,
            "earlyStopJobRunning": False,
            "bestLoss": None,
            "controller": None,
            "scheduler": None,
            "runCount": len(runs),
            "runCountExpected": None,
            "project": self._project_node(sweep.entity, sweep.project),
            "runs": {"edges": [{"node": self._run_node(run)} for run in runs]},
        }

    def _public_run(self, run: RunRecord | None) -> dict[str, Any] | None:
        """A run as ``wandb.Api().run()`` reads it."""
        if run is None:
            return None
        return {
            **self._run_node(run),
            "__typename": "Run",
            "tags": [],
            "sweepName": run.sweep,
            "group": None,
            "jobType": None,
            "commit": None,
            "readOnly": False,
            "createdAt": "2026-01-01T00:00:00",
            "description": None,
            "notes": None,
            "systemMetrics": "{}",
            "historyLineCount": len(run.history),
            "historyKeys": "{}",
            "projectId": 1,
            "user": {"name": "tester", "username": "tester"},
            "fileCount": len(run.files),
            "files": {
                "edges": [{"node": self._file_node(run, name)} for name in run.files],
                "pageInfo": {"endCursor": None, "hasNextPage": False},
            },
        }

    def _file_node(self, run: RunRecord, name: str) -> dict[str, Any]:
        url = f"{self.url}/storage/{quote(run.storage_id)}/{quote(name)}"
        return {
            "__typename": "File",
            "id": f"{run.storage_id}:{name}",
            "name": name,
            "url": url,
            "directUrl": url,
            "sizeBytes": len(run.files[name]),
            "mimetype": "application/octet-stream",
            "updatedAt": "2026-01-01T00:00:00",
            "md5": "",
            "digest": "",
        }

    def _run_node(self, run: RunRecord) -> dict[str, Any]:
        return {
            "id": run.storage_id,
            "name": run.id,
            "displayName": run.display_name,
            "state": run.state,
            "config": json.dumps({k: {"value": v} for k, v in run.config.items()}),
            "exitcode": run.exitcode,
            "heartbeatAt": None,
            "shouldStop": False,
            "failed": run.exitcode not in (None, 0),
            "stopped": False,
            "running": not run.complete,
            "summaryMetrics": json.dumps(run.summary),
            "sampledHistory": [run.history],
        }


# --------------------------------------------------------------------------- HTTP plumbing

SERVER_STARTS = "nbsweep.tests.server_starts"  # the audit event a test server raises on bind


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins the handler threads
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type, app: WandbTestServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        sys.audit(SERVER_STARTS, self.server_address)  # conftest keeps unit tests off servers
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake the handler threads that wait on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # wandb-core keeps connections alive
    timeout = 60
    server: _HTTPServer

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:  # wandb-core resets keep-alive connections abruptly
            self.close_connection = True

    def do_POST(self) -> None:
        status, reply = self.server.app._receive(
            self.command, urlsplit(self.path).path, self._body()
        )
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return body

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the server records requests itself


# --------------------------------------------------------------------------- parsing


def _json_or_empty(data: bytes | str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


_CONSOLE_PREFIX = re.compile(r"^(?:ERROR )?\d{4}-\d\d-\d\dT\S+ ?")  # output.log stream lines
_OPERATION = re.compile(r"\b(?:query|mutation)\s+(\w+)")
_ROOT_FIELD = re.compile(r"\b(?:query|mutation)\b[^{(]*(?:\([^)]*\))?\s*\{\s*(?:\w+\s*:\s*)?(\w+)")


def _operation_name(query: str) -> str | None:
    match = _OPERATION.search(query)
    return match.group(1) if match else None


def _root_field(query: str) -> str | None:
    match = _ROOT_FIELD.search(query)
    return match.group(1) if match else None


def _unwrap(value: Any) -> Any:
    return value["value"] if isinstance(value, dict) and "value" in value else value


def _as_commands(commands: Command | Iterable[Command] | None) -> list[Command]:
    if commands is None:
        return []
    if isinstance(commands, dict):
        return [dict(commands)]
    return [dict(command) for command in commands]


# --------------------------------------------------------------------------- client side


def wandb_env(
    server: WandbTestServer,
    tmp_path: Path,
    *,
    entity: str | None = None,
    project: str = "p",
    **overrides: str | None,
) -> dict[str, str]:
    """Environment for a real ``wandb`` process that talks to ``server`` and nothing else.

    Starts from ``os.environ`` minus any ``WANDB_*`` and proxy settings, with a fresh
    home and wandb directories under ``tmp_path/wandb-client``, a dummy key, short
    retries, no system metrics, and this interpreter's ``bin`` first on ``PATH``.
    ``entity`` defaults to the server's; an override of None removes a variable
    (``WANDB_PROJECT=None``).
    """
    root = tmp_path / "wandb-client"
    dirs = {name: root / name for name in ("home", "dir", "config", "cache", "data")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WANDB_") and key.lower() not in proxies
    }
    env.update(
        HOME=str(dirs["home"]),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        NO_PROXY="127.0.0.1,localhost",
        WANDB_BASE_URL=server.url,
        WANDB_API_KEY=DUMMY_API_KEY,
        WANDB_DIR=str(dirs["dir"]),
        WANDB_CONFIG_DIR=str(dirs["config"]),
        WANDB_CACHE_DIR=str(dirs["cache"]),
        WANDB_DATA_DIR=str(dirs["data"]),
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        WANDB_DISABLE_GIT="true",
        WANDB_DISABLE_CODE="true",
        # No system metrics or machine probes (they would also ask cloud metadata URLs).
        WANDB__DISABLE_STATS="true",
        WANDB__DISABLE_MACHINE_INFO="true",
        # Retry a failed request twice, a second apart. wandb-core truncates these
        # settings to whole seconds and takes 0 as "use the default" (2 s, 4 s, ...).
        WANDB__GRAPHQL_RETRY_MAX="2",
        WANDB__GRAPHQL_RETRY_WAIT_MIN_SECONDS="1",
        WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS="1",
        WANDB__FILE_STREAM_RETRY_MAX="2",
        WANDB__FILE_STREAM_RETRY_WAIT_MIN_SECONDS="1",
        WANDB__FILE_STREAM_RETRY_WAIT_MAX_SECONDS="1",
        WANDB__FILE_TRANSFER_RETRY_MAX="2",
        WANDB__FILE_TRANSFER_RETRY_WAIT_MIN_SECONDS="1",
        WANDB__FILE_TRANSFER_RETRY_WAIT_MAX_SECONDS="1",
        WANDB_INIT_TIMEOUT="60",
        # Stream history every second (whole seconds only; the default is 15 s).
        WANDB__FILE_STREAM_TRANSMIT_INTERVAL="1",
    )
    env["WANDB_ENTITY"] = entity or server.entity
    env["WANDB_PROJECT"] = project
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
