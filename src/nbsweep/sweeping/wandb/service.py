"""The few W&B GraphQL operations a sweep agent needs, in one place.

wandb 0.31 keeps its agent helpers private (``wandb.apis.public.sweeps._register_agent``,
``_agent_heartbeat``) and routes them through the wandb-core sidecar; they moved between
releases. nbsweep owns these operations instead and sends them over HTTPS with ``requests``
(a wandb dependency): sweep lookup, sweep creation, agent registration and heartbeats.
Transient failures and 5xx are retried with backoff; 4xx answers are final.
"""

from __future__ import annotations

import json
import netrc
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from nbsweep.errors import SweepNotFound, UsageError, WandbServerError
from nbsweep.status import SweepAction, SweepState
from nbsweep.sweeping.path import SweepPath, run_environment

if TYPE_CHECKING:
    import requests

DEFAULT_BASE_URL = "https://api.wandb.ai"

_SWEEP_QUERY = """
query Sweep($entity: String, $project: String, $sweep: String!) {
  project(name: $project, entityName: $entity) {
    sweep(sweepName: $sweep) { id name state config }
  }
}"""

_UPSERT_SWEEP = """
mutation UpsertSweep($config: String, $entityName: String, $projectName: String) {
  upsertSweep(input: {config: $config, entityName: $entityName, projectName: $projectName}) {
    sweep { name project { name entity { name } } }
  }
}"""

_SET_SWEEP_STATE = """
mutation UpsertSweep($id: ID, $state: String, $entityName: String, $projectName: String) {
  upsertSweep(input: {id: $id, state: $state, entityName: $entityName,
                      projectName: $projectName}) {
    sweep { name }
  }
}"""

_CREATE_AGENT = """
mutation CreateAgent($host: String!, $projectName: String, $entityName: String,
                     $sweep: String!) {
  createAgent(input: {host: $host, projectName: $projectName, entityName: $entityName,
                      sweep: $sweep}) {
    agent { id }
  }
}"""

_HEARTBEAT = """
mutation Heartbeat($id: ID!, $metrics: JSONString, $runState: JSONString) {
  agentHeartbeat(input: {id: $id, metrics: $metrics, runState: $runState}) {
    agent { id }
    commands
  }
}"""


@dataclass(frozen=True)
class Credentials:
    base_url: str
    api_key: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Credentials:
        """``WANDB_BASE_URL`` and ``WANDB_API_KEY``, else the key ``wandb login`` stored."""
        base_url = environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL).rstrip("/")
        key = environ.get("WANDB_API_KEY") or _netrc_key(base_url, environ)
        if not key:
            raise UsageError(
                f"no W&B API key for {base_url}: run `wandb login` or set WANDB_API_KEY"
            )
        return cls(base_url, key)


def _netrc_key(base_url: str, environ: Mapping[str, str]) -> str | None:
    path = environ.get("NETRC") or os.path.join(environ.get("HOME", "~"), ".netrc")
    try:
        entry = netrc.netrc(os.path.expanduser(path)).authenticators(
            urlparse(base_url).hostname or ""
        )
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures: connection errors, timeouts, 429 and 5xx."""

    attempts: int = 8
    first_delay: float = 0.5
    max_delay: float = 15.0

    def delays(self, rng: random.Random) -> list[float]:
        return [
            min(self.max_delay, self.first_delay * 2**n) * rng.uniform(0.75, 1.25)
            for n in range(self.attempts - 1)
        ]


@dataclass
class SweepService:
    """A W&B server as a sweep agent sees it."""

    offline_runs = False  # trials report to the server through their own online wandb runs

    credentials: Credentials
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    on_retry: Callable[[str], None] = lambda message: None
    session: requests.Session = field(default_factory=lambda: _requests().Session())

    def graphql(self, operation: str, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """POST one operation; retry what is transient; return its ``data``."""
        url = f"{self.credentials.base_url}/graphql"
        body: dict[str, Any] = {
            "query": query,
            "variables": dict(variables),
            "operationName": operation,
        }
        requests = _requests()
        for delay in [*self.retry.delays(self.rng), None]:
            try:
                response = self.session.post(
                    url, json=body, auth=("api", self.credentials.api_key), timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                problem = f"cannot reach {self.credentials.base_url}: {type(error).__name__}"
            else:
                if response.status_code == 404:
                    raise SweepNotFound(f"{operation}: the server answered 404 (not found)")
                if response.status_code < 500 and response.status_code != 429:
                    return _data(operation, response)
                problem = f"{operation}: the server answered {response.status_code}"
            if delay is None:
                raise WandbServerError(f"{problem}; gave up after {self.retry.attempts} tries")
            self.on_retry(f"{problem}; retrying in {delay:.1f}s")
            self.sleep(delay)
        raise AssertionError("unreachable")

    def prepare(self) -> None:
        """Nothing to load: the W&B server proposes the runs."""

    def sweep(self, path: SweepPath) -> dict[str, Any]:
        """The sweep's ``name``, ``state`` and ``config`` (parsed from its YAML)."""
        from nbsweep.sweeping.configs import yamlfile

        data = self.graphql(
            "Sweep",
            _SWEEP_QUERY,
            {"entity": path.entity, "project": path.project, "sweep": path.sweep},
        )
        sweep = (data.get("project") or {}).get("sweep")
        if not sweep:
            raise SweepNotFound(f"sweep {path} not found on {self.credentials.base_url}")
        config = sweep.get("config") or "{}"
        return {**sweep, "config": yamlfile.loads(config) if isinstance(config, str) else config}

    def create_sweep(self, config_yaml: str, entity: str | None, project: str | None) -> SweepPath:
        data = self.graphql(
            "UpsertSweep",
            _UPSERT_SWEEP,
            {"config": config_yaml, "entityName": entity, "projectName": project},
        )
        sweep = data["upsertSweep"]["sweep"]
        return SweepPath(
            sweep["name"], sweep["project"]["name"], sweep["project"]["entity"]["name"]
        )

    def set_sweep_state(self, path: SweepPath, action: SweepAction | str) -> str:
        """Pause, resume, stop or cancel the sweep as ``wandb sweep --pause`` does; returns
        the new state as W&B spells it (PAUSED...). The W&B server then tells its agents
        (stop: no new runs; cancel: running runs stopped too)."""
        target = SweepAction(action).state
        state = target.wandb_name
        sweep = self.sweep(path)
        current = str(sweep.get("state") or "").upper()
        movable = (SweepState.PAUSED.wandb_name, SweepState.RUNNING.wandb_name)
        if target is SweepState.PAUSED and current not in movable:
            raise UsageError(f"sweep {path} is {current.lower()}: it cannot be paused")
        if target is SweepState.RUNNING and current not in movable:
            raise UsageError(f"sweep {path} is {current.lower()}: it cannot be resumed")
        # PENDING: W&B's state of a sweep no agent has asked for a run yet.
        if target is not SweepState.RUNNING and current not in (*movable, "PENDING"):
            raise UsageError(f"sweep {path} is already {current.lower()}")
        self.graphql(
            "UpsertSweep",
            _SET_SWEEP_STATE,
            {
                "id": sweep["id"],
                "state": state,
                "entityName": path.entity,
                "projectName": path.project,
            },
        )
        return state

    def create_agent(self, path: SweepPath, host: str) -> str:
        data = self.graphql(
            "CreateAgent",
            _CREATE_AGENT,
            {
                "host": host,
                "entityName": path.entity,
                "projectName": path.project,
                "sweep": path.sweep,
            },
        )
        return str(data["createAgent"]["agent"]["id"])

    def heartbeat(self, agent_id: str, running: Mapping[str, bool]) -> list[dict[str, Any]]:
        """Report live runs; the server answers with commands (run, stop, exit)."""
        data = self.graphql(
            "Heartbeat",
            _HEARTBEAT,
            {"id": agent_id, "metrics": "{}", "runState": json.dumps(dict(running))},
        )
        commands = data["agentHeartbeat"]["commands"]
        parsed = json.loads(commands) if isinstance(commands, str) else commands
        return list(parsed or [])

    def run_environment(self, path: SweepPath, run_id: str, param_file: Path) -> dict[str, str]:
        return run_environment(path, run_id, param_file)

    def record_metric(self, run_id: str, record: Any) -> None:
        """Nothing: metrics reach W&B through the trial's wandb run."""

    def trial_finished(self, run_id: str, result: Any) -> None:
        """Nothing: the trial's wandb run carries its end to W&B."""


def _requests() -> Any:
    import requests  # 40 ms: only where a server is talked to, not for SweepPath

    return requests


def _data(operation: str, response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if response.status_code >= 400 or errors:
        messages = [e.get("message", str(e)) for e in errors or []] or [response.text[:200]]
        raise WandbServerError(f"{operation}: {'; '.join(messages)}")
    return body.get("data") or {}
