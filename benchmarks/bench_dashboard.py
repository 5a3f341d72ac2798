"""The dashboard under load: a sweep of 1,000 runs and 100,000 history rows.

Measured against a real ``nbsweep dashboard`` process over an SQLite store written here
through nbsweep's own store (as agents write it):

* **first load**: in a real browser (Playwright driving Debian's chromium, when both are
  there), from opening the sweep's URL to its leaderboard holding every run and its
  history chart every row of the metric (the median of three); and the same JSON answers
  over plain HTTP;
* **update**: rows logged and a run finished while the page is open: the time until the
  page shows the new count, and the size of the answer that carried it (what changed)
  against a full one;
* **memory**: the server's PSS while a page polls as the real one does (the sweep's
  changes and the metric's new history rows) through a simulated hour (``--polls``, one
  per simulated second, 3,600 by default) while rows keep arriving: at the start, its peak,
  and at the end.

    python benchmarks/bench_dashboard.py                 # 1,000 runs x 100 rows
    python benchmarks/bench_dashboard.py --runs 100 --rows 10 --polls 60
    python benchmarks/bench_dashboard.py --quick          # that it still runs (the suite's)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import aligned, isolated_env, machine

from nbsweep.local.store import AgentIdentity, LoggedRow, RunRecord, RunState, Store

CHROMIUM = Path("/usr/bin/chromium")
MB = 1024 * 1024


def build_store(path: Path, runs: int, rows: int) -> tuple[Store, str, AgentIdentity]:
    """A grid sweep with ``runs`` finished runs of ``rows`` history rows each."""
    store = Store.open(path)
    config = {
        "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {
            "lr": {"values": [round(0.001 * (i + 1), 6) for i in range(runs)]},
            "layers": {"values": [1]},
        },
    }
    sweep_id = store.create_sweep(config, name="load")
    agent = AgentIdentity.current("bench")
    points = [{"lr": value, "layers": 1} for value in config["parameters"]["lr"]["values"]]

    def propose(done: list[RunRecord]) -> dict[str, Any] | None:
        return points[len(done)] if len(done) < len(points) else None

    # Every run handed out first: a hand-out reads every run's history for the engine.
    handed = []
    for _ in range(runs):
        run = store.hand_out(sweep_id, agent, propose)
        assert run is not None
        handed.append(run)
    for index, run in enumerate(handed):
        lr = run.values["lr"]
        history = [
            LoggedRow(n, n, time.time(), {"loss": 1.0 / (1 + lr * n), "acc": n / rows})
            for n in range(rows)
        ]
        store.log_metrics(run.run_id, agent, history)
        summary = {"loss": history[-1].values["loss"], "acc": history[-1].values["acc"]}
        store.finish(run.run_id, agent, RunState.finished, summary, None)
        if index % 200 == 0:
            print(f"  store: {index}/{runs} runs", file=sys.stderr)
    return store, sweep_id, agent


def pss(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().pss


def get(url: str) -> tuple[Any, int]:
    with urllib.request.urlopen(url) as answer:
        body = answer.read()
    return json.loads(body), len(body)


def first_load_http(base: str, token: str, sweep_id: str) -> dict[str, Any]:
    started = time.perf_counter()
    changes, size = get(f"{base}/api/sweeps/{sweep_id}?since=0&token={token}")
    runs_done = time.perf_counter()
    after, rows, more, history_bytes = 0, 0, True, 0
    while more:
        answer, length = get(
            f"{base}/api/sweeps/{sweep_id}/history?key=loss&after={after}&token={token}"
        )
        after, more = answer["after"], answer["more"]
        rows += sum(len(points) for points in answer["runs"].values())
        history_bytes += length
    return {
        "runs_s": runs_done - started,
        "runs_bytes": size,
        "history_s": time.perf_counter() - runs_done,
        "history_bytes": history_bytes,
        "history_rows": rows,
        "version": changes["version"],
        "runs": len(changes["runs"]),
    }


def first_load_browser(url: str, sweep_id: str, runs: int, rows: int) -> dict[str, Any] | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: playwright is not installed"
    if not CHROMIUM.exists():
        return "skipped: no /usr/bin/chromium (apt-get install chromium)"
    base = url.split("/?")[0]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        # The page's CSP would refuse the probes below (they are scripts Playwright evaluates);
        # they are cheap where expect()'s locator checks would share the page's thread.
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
        page.goto(url)  # sets the cookie; the sweeps list
        page.wait_for_selector("#sweeps tbody tr")
        shown = f"document.querySelector('#shown')?.textContent === '{runs} of {runs} runs'"
        charted = f"document.querySelector('#history-chart')?.dataset.rows === '{runs * rows}'"
        tables, everything = [], []
        for _ in range(3):
            page.goto(f"{base}/#/")
            page.wait_for_selector("#sweeps tbody tr")
            started = time.perf_counter()
            page.goto(f"{base}/#/sweep/{sweep_id}")
            page.wait_for_function(shown, polling="raf", timeout=60_000)
            tables.append(time.perf_counter() - started)
            page.wait_for_function(charted, polling="raf", timeout=60_000)
            everything.append(time.perf_counter() - started)
        browser.close()
    return {"table_s": statistics.median(tables), "everything_s": statistics.median(everything)}


def update(store: Store, sweep_id: str, agent: AgentIdentity, base: str, token: str, since: int):
    """Log rows to a new run and finish it: the answer's size since ``since`` and the time
    until the server reports it."""
    run = store.hand_out(sweep_id, agent, lambda done: {"lr": 9.0, "layers": 1})
    assert run is not None
    store.log_metrics(
        run.run_id, agent, [LoggedRow(n, n, time.time(), {"loss": 0.5}) for n in range(10)]
    )
    written = time.perf_counter()
    store.finish(run.run_id, agent, RunState.finished, {"loss": 0.5}, None)
    while True:
        changes, size = get(f"{base}/api/sweeps/{sweep_id}?since={since}&token={token}")
        if any(r["run_id"] == run.run_id and r["state"] == "finished" for r in changes["runs"]):
            return {
                "seen_s": time.perf_counter() - written,
                "bytes": size,
                "runs": len(changes["runs"]),
            }
        time.sleep(0.05)


def simulated_hour(store, sweep_id, agent, base, token, pid, polls: int) -> dict[str, Any]:
    """A page's polls, one per simulated second, while a run logs a row per poll."""
    run = store.hand_out(sweep_id, agent, lambda done: {"lr": 10.0, "layers": 1})
    assert run is not None
    version, after = 0, 0
    samples = [pss(pid)]
    started = time.perf_counter()
    for second in range(polls):
        store.log_metrics(
            run.run_id, agent, [LoggedRow(second, second, time.time(), {"loss": 1.0})]
        )
        changes, _ = get(f"{base}/api/sweeps/{sweep_id}?since={version}&token={token}")
        version = changes["version"]
        history, _ = get(
            f"{base}/api/sweeps/{sweep_id}/history?key=loss&after={after}&token={token}"
        )
        after = history["after"]
        if second % max(1, polls // 60) == 0:
            samples.append(pss(pid))
    samples.append(pss(pid))
    store.finish(run.run_id, agent, RunState.finished, {"loss": 1.0}, None)
    return {
        "polls": polls,
        "wall_s": time.perf_counter() - started,
        "pss_start_mb": samples[0] / MB,
        "pss_peak_mb": max(samples) / MB,
        "pss_end_mb": samples[-1] / MB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100, help="history rows per run")
    parser.add_argument("--polls", type=int, default=3600)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--quick", action="store_true", help="20 runs x 5 rows, 20 polls: that it still runs"
    )
    options = parser.parse_args()
    if options.quick:
        options.runs, options.rows, options.polls = 20, 5, 20

    print(json.dumps(machine()), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="nbsweep-bench-dashboard-") as folder:
        root = Path(folder)
        built = time.perf_counter()
        store, sweep_id, agent = build_store(root / "sweeps.db", options.runs, options.rows)
        print(f"store written in {time.perf_counter() - built:.1f} s", file=sys.stderr)
        env = {**isolated_env(root), "NBSWEEP_STORE": str(root / "sweeps.db")}
        server = subprocess.Popen(
            [sys.executable, "-m", "nbsweep", "dashboard", "--port", "0"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = server.stdout.readline().strip()  # type: ignore[union-attr]
            base, token = url.split("/?")[0], url.split("token=")[1]
            idle = pss(server.pid)
            http = first_load_http(base, token, sweep_id)
            again = first_load_http(base, token, sweep_id)
            browser = first_load_browser(url, sweep_id, options.runs, options.rows)
            changed = update(store, sweep_id, agent, base, token, http["version"])
            hour = simulated_hour(store, sweep_id, agent, base, token, server.pid, options.polls)
        finally:
            server.terminate()
            server.wait(30)
            store.close()
    rows = [
        ["what", "figure"],
        ["sweep", f"{options.runs} runs, {options.runs * options.rows} history rows"],
        ["server PSS, idle", f"{idle / MB:.0f} MB"],
        ["first load, runs (HTTP)", f"{http['runs_s']:.3f} s, {http['runs_bytes'] / 1024:.0f} KB"],
        [
            "first load, history of 'loss' (HTTP)",
            f"{http['history_s']:.3f} s, {http['history_bytes'] / 1024:.0f} KB, "
            f"{http['history_rows']} rows",
        ],
        ["second load, runs + history (HTTP)", f"{again['runs_s'] + again['history_s']:.3f} s"],
    ]
    if isinstance(browser, str):
        rows.append(["first load in chromium", browser])
    else:
        rows.append(["first load in chromium: leaderboard", f"{browser['table_s']:.3f} s"])
        rows.append(["first load in chromium: + every chart", f"{browser['everything_s']:.3f} s"])
    rows += [
        ["update: a run finished, seen after", f"{changed['seen_s']:.3f} s"],
        [
            "update: its answer",
            f"{changed['bytes'] / 1024:.1f} KB ({changed['runs']} run(s)) against "
            f"{http['runs_bytes'] / 1024:.0f} KB in full",
        ],
        [f"simulated hour: {hour['polls']} polls in", f"{hour['wall_s']:.1f} s"],
        [
            "server PSS: start / peak / end",
            f"{hour['pss_start_mb']:.0f} / {hour['pss_peak_mb']:.0f} / {hour['pss_end_mb']:.0f} MB",
        ],
    ]
    print(aligned(rows))
    if options.json:
        options.json.write_text(
            json.dumps(
                {"http": http, "browser": browser, "update": changed, "hour": hour}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
