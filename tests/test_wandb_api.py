"""The W&B protocol module against the test server, in process (no kernels)."""

from __future__ import annotations

import random

import pytest
from wandb_server import DUMMY_API_KEY, WandbTestServer

from nbsweep.errors import UsageError
from nbsweep.sweeping.path import SweepPath
from nbsweep.sweeping.wandb.service import (
    Credentials,
    RetryPolicy,
    SweepNotFound,
    SweepService,
    WandbServerError,
)


def service_for(server: WandbTestServer, **kwargs) -> SweepService:
    sleeps: list[float] = []
    service = SweepService(
        Credentials(server.url, DUMMY_API_KEY),
        retry=RetryPolicy(attempts=4, first_delay=0.01, max_delay=0.05),
        rng=random.Random(0),
        sleep=sleeps.append,
        **kwargs,
    )
    service.sleeps = sleeps  # type: ignore[attr-defined]
    return service


@pytest.mark.parametrize(
    "text,expected",
    [
        ("abc123", SweepPath("abc123", "envp", "enve")),
        ("proj/abc123", SweepPath("abc123", "proj", "enve")),
        ("ent/proj/abc123", SweepPath("abc123", "proj", "ent")),
    ],
)
def test_sweep_path(text, expected):
    assert SweepPath.parse(text, {"WANDB_PROJECT": "envp", "WANDB_ENTITY": "enve"}) == expected
    assert str(SweepPath.parse("e/p/s", {})) == "e/p/s"


@pytest.mark.parametrize("text", ["", "a//b", "a/b/c/d"])
def test_bad_sweep_paths(text):
    with pytest.raises(UsageError, match="is not ID, PROJECT/ID or ENTITY/PROJECT/ID"):
        SweepPath.parse(text, {})


def test_credentials(tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.example.com\n  login user\n  password k" + "0" * 39 + "\n")
    netrc.chmod(0o600)
    found = Credentials.from_environment(
        {"WANDB_BASE_URL": "https://api.example.com/", "HOME": str(tmp_path)}
    )
    assert found == Credentials("https://api.example.com", "k" + "0" * 39)
    with pytest.raises(UsageError, match="run `wandb login` or set WANDB_API_KEY"):
        Credentials.from_environment({"HOME": str(tmp_path / "nowhere")})


@pytest.mark.e2e
def test_create_lookup_register_and_heartbeat(server):
    service = service_for(server)
    path = service.create_sweep(
        "method: grid\nprogram: nb.ipynb\nparameters:\n  lr: {values: [1e-5]}\n", None, "proj"
    )
    assert path.project == "proj" and path.entity == server.entity
    sweep = service.sweep(path)
    assert sweep["config"]["parameters"]["lr"]["values"] == [1e-5]
    agent_id = service.create_agent(path, "host1")
    server.script(path.sweep, [{"type": "run", "run_id": "r1", "args": {"lr": {"value": 1}}}])
    commands = service.heartbeat(agent_id, {})
    assert commands[0]["run_id"] == "r1" and commands[0]["args"] == {"lr": {"value": 1}}
    assert service.heartbeat(agent_id, {"r1": True}) == []
    assert server.heartbeats[-1].run_state == {"r1": True}
    assert server.agents[agent_id].host == "host1"


@pytest.mark.e2e
def test_5xx_is_retried_then_given_up(server):
    retried: list[str] = []
    service = service_for(server, on_retry=retried.append)
    path = SweepPath(server.add_sweep({"method": "grid"}, project="p"), "p", server.entity)
    server.fail_next("CreateAgent", status=502, times=2)
    assert service.create_agent(path, "h")
    assert len(retried) == 2 and "answered 502; retrying" in retried[0]
    server.fail_next("CreateAgent", status=500, times=10)
    with pytest.raises(WandbServerError, match="gave up after 4 tries"):
        service.create_agent(path, "h")


@pytest.mark.e2e
def test_4xx_is_final_and_404_means_gone(server):
    service = service_for(server)
    stopped = server.add_sweep({"method": "grid"}, project="p", state="FINISHED")
    with pytest.raises(WandbServerError, match="not running"):
        service.create_agent(SweepPath(stopped, "p", server.entity), "h")
    assert service.sleeps == []  # type: ignore[attr-defined]
    with pytest.raises(SweepNotFound):
        service.sweep(SweepPath("nope", "p", server.entity))


@pytest.mark.e2e
def test_unreachable_server_is_retried(server):
    url = server.url
    server.stop()
    service = SweepService(
        Credentials(url, DUMMY_API_KEY),
        retry=RetryPolicy(attempts=2, first_delay=0.01),
        sleep=lambda s: None,
    )
    with pytest.raises(WandbServerError, match=r"cannot reach .*gave up after 2 tries"):
        service.sweep(SweepPath("s", "p", "e"))
