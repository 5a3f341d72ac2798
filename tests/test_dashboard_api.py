"""The dashboard's JSON endpoints and guards, through the real Starlette application over a
real store (SQLite, and PostgreSQL for the incremental reads): token, host and origin checks,
what changed since a page last asked, history by key, a run, its notebook, the controls."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

pytest.importorskip(
    "starlette", reason="needs the dashboard extra: pip install 'nbsweep[dashboard]'"
)
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2")
pytest.importorskip("sweeps", reason="needs the local sweep engine: pip install 'nbsweep[local]'")

from helpers import write_notebook
from starlette.testclient import TestClient

from nbsweep.dashboard.app import cookie_name, create_app
from nbsweep.dashboard.data import SweepData
from nbsweep.local.store import AgentIdentity, LoggedRow, RunRecord, RunState, Store
from nbsweep.options import DashboardOptions, StoreOptions

TOKEN = "t0ken-for-tests"
PORT = 8123
HOST = f"127.0.0.1:{PORT}"
HOSTILE = "<img src=x onerror=alert(1)>"
CONFIG = {
    "method": "grid",
    "metric": {"name": "loss", "goal": "minimize"},
    "parameters": {"lr": {"values": [0.1, 0.2, 0.3, 0.4]}, "opt": {"values": ["adam", HOSTILE]}},
}


def grid(points: list[dict]):
    def propose(runs: list[RunRecord]) -> dict | None:
        taken = [run.values for run in runs]
        return next((point for point in points if point not in taken), None)

    return propose


POINTS = [{"lr": lr, "opt": opt} for lr in (0.1, 0.2, 0.3, 0.4) for opt in ("adam", HOSTILE)]


class Sweep:
    """A store with one sweep whose runs the test moves along as an agent would."""

    def __init__(self, location: str, folder: Path) -> None:
        self.location = location
        self.folder = folder
        self.store = Store.open(location)
        self.sweep_id = self.store.create_sweep(CONFIG, name="demo")
        self.agent = AgentIdentity.current("node-a")
        self.rows: dict[str, int] = {}

    def start(self):
        run = self.store.hand_out(self.sweep_id, self.agent, grid(POINTS))
        assert run is not None
        self.rows[run.run_id] = 0
        return run

    def log(self, run_id: str, *values: dict) -> None:
        rows = []
        for value in values:
            n = self.rows[run_id]
            rows.append(LoggedRow(n, n, time.time(), value))
            self.rows[run_id] = n + 1
        assert self.store.log_metrics(run_id, self.agent, rows)

    def finish(self, run_id: str, state: RunState, summary: dict, error: str | None = None):
        notebook = self.folder / "runs" / run_id / "nb.ipynb"
        notebook.parent.mkdir(parents=True)
        cell = nbformat.v4.new_code_cell("print('hello from', 'the trial')")
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="hello from the trial\n"),
            nbformat.v4.new_output(
                "display_data", data={"text/html": "<script>parent.pwned = 1</script><b>x</b>"}
            ),
        ]
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
        relative = str(notebook.relative_to(self.folder))
        assert self.store.finish(run_id, self.agent, state, summary, relative, error)


@pytest.fixture
def sweep(tmp_path):
    made = Sweep(str(tmp_path / "sweeps.db"), tmp_path)
    yield made
    made.store.close()


@contextlib.contextmanager
def client_for(sweep: Sweep) -> Iterator[TestClient]:
    location = sweep.location if "://" in sweep.location else Path(sweep.location)
    settings = DashboardOptions(StoreOptions(location), notebooks=sweep.folder, refresh=0.0)
    data = SweepData(settings)
    try:
        with TestClient(create_app(data, TOKEN, PORT), base_url=f"http://{HOST}") as client:
            yield client
    finally:
        data.close()


@pytest.fixture
def client(sweep):
    with client_for(sweep) as opened:
        opened.cookies.set(cookie_name(PORT), TOKEN)
        yield opened


def test_every_request_needs_the_token_and_the_first_one_sets_a_cookie(sweep):
    with client_for(sweep) as anonymous:
        for path in ("/", "/api/sweeps", f"/api/sweeps/{sweep.sweep_id}", "/static/app.js"):
            refused = anonymous.get(path)
            assert refused.status_code == 403 and "token" in refused.text, path
        assert anonymous.get("/api/sweeps?token=wrong").status_code == 403
        page = anonymous.get(f"/?token={TOKEN}")
        assert page.status_code == 200 and "app.js" in page.text
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{cookie_name(PORT)}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # the cookie alone now opens the rest
        assert anonymous.get("/api/sweeps").status_code == 200
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["referrer-policy"] == "no-referrer"


def test_a_loopback_dashboard_refuses_other_host_names(client):
    """A DNS name rebound to 127.0.0.1 reaches the port but not the dashboard."""
    assert client.get("/api/sweeps", headers={"host": f"evil.example:{PORT}"}).status_code == 403
    assert client.get("/api/sweeps", headers={"host": f"localhost:{PORT}"}).status_code == 200


def test_controls_need_the_pages_own_origin_and_json(client, sweep):
    url = f"/api/sweeps/{sweep.sweep_id}/control"
    body = json.dumps({"action": "pause"})
    json_type = {"content-type": "application/json"}
    assert client.post(url, content=body, headers=json_type).status_code == 403  # no Origin
    other = {**json_type, "origin": "http://evil.example"}
    assert client.post(url, content=body, headers=other).status_code == 403
    form = {"origin": f"http://{HOST}", "content-type": "application/x-www-form-urlencoded"}
    assert client.post(url, content="action=pause", headers=form).status_code == 403
    assert sweep.store.sweep(sweep.sweep_id).state.value == "running"
    same = {**json_type, "origin": f"http://{HOST}"}
    done = client.post(url, content=body, headers=same)
    assert done.status_code == 200, done.text
    assert done.json()["said"] == f"sweep {sweep.sweep_id}: paused"
    assert sweep.store.sweep(sweep.sweep_id).state.value == "paused"
    bad = client.post(url, content=json.dumps({"action": "explode"}), headers=same)
    assert bad.status_code == 404 and "pause, resume, stop or cancel" in bad.json()["error"]


def test_stop_run_from_the_page_requests_the_stop(client, sweep):
    run = sweep.start()
    same = {"content-type": "application/json", "origin": f"http://{HOST}"}
    done = client.post(f"/api/runs/{run.run_id}/stop", content="{}", headers=same)
    assert done.status_code == 200, done.text
    assert sweep.store.stop_requested(run.run_id)


def test_the_sweeps_list_counts_runs_per_state_and_names_the_best(client, sweep):
    first, second = sweep.start(), sweep.start()
    sweep.finish(first.run_id, RunState.finished, {"loss": 0.5})
    sweep.finish(second.run_id, RunState.failed, {"loss": 0.2}, "cell 3 raised ValueError")
    [listed] = client.get("/api/sweeps").json()
    assert listed["sweep_id"] == sweep.sweep_id and listed["name"] == "demo"
    assert listed["totals"]["finished"] == 1 and listed["totals"]["failed"] == 1
    assert listed["best"] == {"run_id": second.run_id, "metric": 0.2}
    assert listed["metric"] == {"name": "loss", "goal": "minimize"} and listed["method"] == "grid"


def test_a_page_gets_only_what_changed_since_it_last_asked(client, sweep):
    first = sweep.start()
    url = f"/api/sweeps/{sweep.sweep_id}"
    everything = client.get(f"{url}?since=0").json()
    assert everything["complete"] and [r["run_id"] for r in everything["runs"]] == [first.run_id]
    assert everything["sweep"]["config"]["parameters"]["opt"]["values"][1] == HOSTILE
    version = everything["version"]
    quiet = client.get(f"{url}?since={version}").json()
    assert quiet["runs"] == [] and quiet["sweep"] is None and quiet["version"] == version
    second = sweep.start()
    sweep.finish(first.run_id, RunState.finished, {"loss": 0.5})
    changed = client.get(f"{url}?since={version}").json()
    assert sorted(r["run_id"] for r in changed["runs"]) == sorted([first.run_id, second.run_id])
    assert changed["sweep"]["totals"]["finished"] == 1  # the counts changed with them
    [finished] = [r for r in changed["runs"] if r["run_id"] == first.run_id]
    assert finished["state"] == "finished" and finished["metric"] == 0.5
    assert finished["notebook"] is True
    # A number this dashboard never gave out (it was restarted): everything again.
    again = client.get(f"{url}?since={changed['version'] + 100}").json()
    assert again["complete"] and len(again["runs"]) == 2


def test_history_comes_by_key_and_only_the_rows_not_yet_sent(client, sweep):
    first, second = sweep.start(), sweep.start()
    sweep.log(first.run_id, {"loss": 1.0, "acc": 0.1}, {"loss": 0.8})
    sweep.log(second.run_id, {"loss": 2.0, "note": "text"})
    url = f"/api/sweeps/{sweep.sweep_id}/history"
    answer = client.get(f"{url}?key=loss&after=0").json()
    assert answer["runs"] == {first.run_id: [[0, 1.0], [1, 0.8]], second.run_id: [[0, 2.0]]}
    assert not answer["more"]
    assert client.get(f"{url}?key=acc&after=0").json()["runs"] == {first.run_id: [[0, 0.1]]}
    assert client.get(f"{url}?key=note&after=0").json()["runs"] == {}  # text is not charted
    later = client.get(f"{url}?key=loss&after={answer['after']}").json()
    assert later["runs"] == {} and later["after"] == answer["after"]
    sweep.log(second.run_id, {"loss": float("nan")}, {"loss": 7})
    newer = client.get(f"{url}?key=loss&after={answer['after']}").json()
    assert newer["runs"] == {second.run_id: [[1, "NaN"], [2, 7]]}
    assert client.get(url).status_code == 400
    keys = client.get(f"/api/sweeps/{sweep.sweep_id}?since=0").json()["keys"]
    assert keys == []  # summaries come when runs finish
    sweep.finish(first.run_id, RunState.finished, {"loss": 0.8, "acc": 0.1, "note": "x"})
    assert client.get(f"/api/sweeps/{sweep.sweep_id}?since=0").json()["keys"] == ["acc", "loss"]


def test_a_long_history_comes_in_stretches(client, sweep, monkeypatch):
    monkeypatch.setattr("nbsweep.dashboard.data.HISTORY_ROWS_PER_ANSWER", 2)
    first, second = sweep.start(), sweep.start()
    sweep.log(first.run_id, {"loss": 3}, {"acc": 1}, {"loss": 1})
    sweep.log(second.run_id, {"loss": 2})
    url = f"/api/sweeps/{sweep.sweep_id}/history?key=loss"
    seen, after, answers = [], 0, 0
    while True:
        answer = client.get(f"{url}&after={after}").json()
        answers += 1
        seen += [(run_id, point) for run_id, points in answer["runs"].items() for point in points]
        after = answer["after"]
        if not answer["more"]:
            break
    # A row without the key still counts: the stretches go on past it.
    assert seen == [(first.run_id, [0, 3]), (first.run_id, [2, 1]), (second.run_id, [0, 2])]
    assert answers == 3  # 2 rows, 2 rows, then none: "more" while a stretch is full


def test_a_run_has_its_values_reason_curves_and_notebook(client, sweep):
    run = sweep.start()
    sweep.log(run.run_id, {"loss": 1.0}, {"loss": 0.5})
    sweep.finish(run.run_id, RunState.failed, {"loss": 0.5}, "cell 2 raised KeyError: 'x'")
    detail = client.get(f"/api/runs/{run.run_id}").json()
    assert detail["state"] == "failed" and detail["error"] == "cell 2 raised KeyError: 'x'"
    assert detail["curves"] == {"loss": [[0, 1.0], [1, 0.5]]}
    assert detail["values"] == {"lr": 0.1, "opt": "adam"} and detail["number"] == 1
    assert detail["agent"]["host"] == "node-a" and detail["notebook_problem"] is None
    page = client.get(f"/runs/{run.run_id}/notebook.html")
    assert page.status_code == 200 and "hello from the trial" in page.text
    policy = page.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "default-src 'none'" in policy
    assert "script-src" not in policy  # default-src 'none' covers scripts
    download = client.get(f"/runs/{run.run_id}/notebook.ipynb")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["content-security-policy"].startswith("sandbox;")
    assert nbformat.reads(download.text, as_version=4).cells[0].outputs[0]["text"]
    assert client.get("/api/runs/nosuchrun").status_code == 404


@pytest.mark.parametrize("recorded", ["../outside.ipynb", "/etc/passwd", "runs/x/nb.txt"])
def test_a_notebook_path_from_the_store_stays_inside_the_served_folder(client, sweep, recorded):
    """The store's notebook path is untrusted: only an .ipynb inside --notebooks is served."""
    (sweep.folder.parent / "outside.ipynb").write_text("{}")
    run = sweep.start()
    assert sweep.store.finish(run.run_id, sweep.agent, RunState.finished, {}, recorded)
    for path in ("notebook.html", "notebook.ipynb"):
        refused = client.get(f"/runs/{run.run_id}/{path}")
        assert refused.status_code == 404, recorded
        assert "--notebooks" in refused.text or "not there" in refused.text
    assert client.get(f"/api/runs/{run.run_id}").json()["notebook_problem"]


def test_an_unknown_sweep_is_a_one_line_404(client):
    answer = client.get("/api/sweeps/nosuch?since=0")
    assert answer.status_code == 404
    assert "no sweep 'nosuch'" in answer.json()["error"] and "\n" not in answer.json()["error"]


def test_importance_ranks_the_parameter_that_decides_the_metric_first(client, sweep):
    for point in POINTS:
        run = sweep.start()
        loss = point["lr"] * 10 + (0.01 if point["opt"] == "adam" else 0.0)
        sweep.store.finish(run.run_id, sweep.agent, RunState.finished, {"loss": loss}, None)
    table = client.get(f"/api/sweeps/{sweep.sweep_id}?since=0").json()["importance"]
    assert [row["parameter"] for row in table["parameters"]] == ["lr", "opt"]
    lr, opt = table["parameters"]
    assert lr["importance"] > 0.99 and lr["correlation"] > 0.95  # ties in lr, none in loss
    assert opt["importance"] < 0.01 and opt["correlation"] is None
    assert "Spearman" in table["how"] and table["runs"] == len(POINTS)


def test_the_postgres_store_reads_incrementally_too(tmp_path, postgres_url):
    made = Sweep(postgres_url, tmp_path)
    try:
        first = made.start()
        made.log(first.run_id, {"loss": 1.0}, {"loss": 0.5})
        with client_for(made) as opened:
            opened.cookies.set(cookie_name(PORT), TOKEN)
            url = f"/api/sweeps/{made.sweep_id}/history?key=loss"
            answer = opened.get(f"{url}&after=0").json()
            assert answer["runs"] == {first.run_id: [[0, 1.0], [1, 0.5]]}
            made.log(first.run_id, {"loss": 0.25})
            later = opened.get(f"{url}&after={answer['after']}").json()
            assert later["runs"] == {first.run_id: [[2, 0.25]]}
    finally:
        made.store.close()


@pytest.mark.e2e
def test_sweep_run_serves_the_dashboard_while_its_agents_run(local):
    sweep_id_line = re.compile(r"created local sweep (\w+)")
    write_notebook(
        local.cwd / "nb.ipynb",
        [("x = 1", ["parameters"]), "import time, nbsweep\ntime.sleep(1.5)\nnbsweep.log({'y': x})"],
    )
    (local.cwd / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nmetric: {name: y}\nparameters:\n  x: {values: [1, 2]}\n"
    )
    run = local.start("sweep", "--local", "sweep.yaml", "--run", "--dashboard", "--no-wandb")
    sweep_id = sweep_id_line.search(run.stdout.readline()).group(1)
    url = run.stdout.readline().removeprefix("dashboard: ").strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"#/sweep/{sweep_id}"), url
    base, token = url.split("/?")[0], url.split("token=")[1].split("#")[0]
    with urllib.request.urlopen(f"{base}/api/sweeps/{sweep_id}?since=0&token={token}") as answer:
        assert json.load(answer)["sweep"]["sweep_id"] == sweep_id
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    with pytest.raises(OSError):  # it stopped with the agents
        urllib.request.urlopen(f"{base}/api/sweeps?token={token}", timeout=5)


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["local:nosuch"], "Error: no sweep 'nosuch' in"),
        (["--store", "missing.db"], "Error: no local sweep store at"),
        (["--port", "99999"], "Invalid value for '--port'"),
    ],
)
def test_the_dashboard_command_refuses_bad_input_in_one_line(local, arguments, said):
    if "missing.db" not in arguments:
        local.sweep("method: grid\nparameters:\n  x: {values: [1]}\n", [("x = 1", ["parameters"])])
    result = local("dashboard", *arguments, timeout=60)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_port_in_use_is_a_one_line_error(local):
    local.sweep("method: grid\nparameters:\n  x: {values: [1]}\n", [("x = 1", ["parameters"])])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = local("dashboard", "--port", str(port), timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(
        f"Error: cannot serve the dashboard on 127.0.0.1:{port}"
    )
    assert "--port" in result.stderr and "Traceback" not in result.stderr
