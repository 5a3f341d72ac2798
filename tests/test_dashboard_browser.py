"""``nbsweep dashboard`` in a real browser (Playwright driving Debian's Chromium, headless)
against real agents on a local sweep: runs appear and finish live, sorting and brushing hold
across updates, a run's executed notebook shows its cell output, the page pauses and resumes
the sweep, and neither a hostile value nor a notebook's script runs as code.

``NBSWEEP_SCREENSHOTS=DIR`` keeps the main views as PNGs (the README's pictures)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_until

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium: apt-get install chromium", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (Python)")
expect = playwright.expect
pytest.importorskip("uvicorn", reason="needs the dashboard extra: pip install 'nbsweep[dashboard]'")

pytestmark = pytest.mark.e2e

HOSTILE = '<img src=x onerror="window.__xss=1">'
NOTEBOOK = [
    ("lr = 0.1\nopt = 'adam'", ["parameters"]),
    "import time\nimport nbsweep\nfor step in range(3):\n"
    "    time.sleep(0.4)\n    nbsweep.log({'loss': lr * (3 - step), 'acc': step / 3})",
    "print('trained with', opt)",
    "from IPython.display import HTML, display\n"
    'display(HTML("<script>window.top.__nbscript = 1; '
    "document.body.setAttribute('data-ran', '1')</script><b>bold output</b>\"))",
]
SWEEP = (
    "method: grid\nmetric: {name: loss, goal: minimize}\nparameters:\n"
    "  lr: {values: [0.1, 0.2, 0.3]}\n"
    f"  opt: {{values: [adam, '{HOSTILE}']}}\n"
)
RUNS = 6


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield launched
        launched.close()


def start_dashboard(local, *args: str) -> tuple[subprocess.Popen, str]:
    server = local.start("dashboard", *args)
    url = server.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and "token=" in url, server.stderr.read()
    return server, url


def shot(page, name: str) -> None:
    folder = os.environ.get("NBSWEEP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)


def table_column(page, key: str) -> list[str]:
    index = page.locator("#runs thead th").evaluate_all(
        f"(cells) => cells.findIndex((c) => c.dataset.key === {key!r})"
    )
    return page.locator(f"#runs tbody tr td:nth-child({index + 1})").all_text_contents()


def test_the_page_follows_and_steers_a_live_sweep(local, browser):
    sweep_id = local.sweep(SWEEP, NOTEBOOK)
    server, url = start_dashboard(local, f"local:{sweep_id}")
    origin = url.split("/?")[0]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#sweep-header h1")
    assert "token" not in page.url, "the token leaves the address bar once the cookie is set"
    assert page.locator("#runs tbody tr").count() == 0

    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb", "--poll", "0.3")
    # Runs appear, and finish, without a reload.
    page.wait_for_selector("#runs tbody tr", timeout=60_000)
    page.locator("#runs th[data-key='p:lr']").click()  # sort by lr, ascending
    expect(page.locator("#totals")).to_contain_text("finished", timeout=60_000)
    page.locator("button[data-action='pause']").click()
    expect(page.locator("#sweep-state")).to_have_text("paused", timeout=10_000)
    assert "paused" in page.locator("#said").text_content()
    # The running trial finishes; then the agent waits and starts nothing.
    wait_until(
        lambda: not [r for r in local.status(sweep_id)["runs"] if r["state"] == "running"],
        timeout=60,
        what="the trial that was running",
        alive=[agent],
    )
    held = len(local.status(sweep_id)["runs"])
    time.sleep(1.5)  # scenario: five of the agent's 0.3 s polls, through which it waits
    assert agent.poll() is None and len(local.status(sweep_id)["runs"]) == held < RUNS
    page.locator("button[data-action='resume']").click()
    expect(page.locator("#totals")).to_have_text(f"finished {RUNS}", timeout=90_000)
    assert agent.wait(60) == 0

    # The sort survived every update; values are in the table as text.
    assert page.locator("#runs th[data-key='p:lr']").get_attribute("class") == "sorted-asc"
    lrs = [float(text) for text in table_column(page, "p:lr")]
    assert lrs == sorted(lrs) and len(lrs) == RUNS
    assert page.locator("#runs td", has_text=HOSTILE).count() == RUNS // 2
    assert page.evaluate("window.__xss") is None and page.locator("img[src='x']").count() == 0
    page.locator("#history-key").select_option("loss")
    expect(page.locator("#history-chart")).to_have_attribute("data-rows", "18")
    shot(page, "sweep")

    # Brushing the lr axis's low end filters the table; sorting keeps the filter.
    page.locator("rect[data-strip='lr']").scroll_into_view_if_needed()
    strip = page.locator("rect[data-strip='lr']").bounding_box()
    x = strip["x"] + strip["width"] / 2
    page.mouse.move(x, strip["y"] + strip["height"] * 0.7)  # from lr's lower third down
    page.mouse.down()
    page.mouse.move(x, strip["y"] + strip["height"] + 10, steps=5)
    page.mouse.up()
    assert page.locator("#shown").text_content() == f"2 of {RUNS} runs"
    assert set(table_column(page, "p:lr")) == {"0.1"}
    assert "lr:" in page.locator("#brushes").text_content()
    page.locator("#runs th[data-key='metric']").click()
    assert page.locator("#shown").text_content() == f"2 of {RUNS} runs"

    # A run: its reason-free state, its curves, and its notebook's output, rendered inert.
    page.locator("#runs tbody tr").first.click()
    page.wait_for_selector("#run-state")
    assert page.locator("#run-state").text_content() == "finished"
    assert page.locator("#run-curves [data-curve='loss']").count() == 1
    frame = page.frame_locator("#notebook")
    frame.locator(".jp-OutputArea-output pre", has_text="trained with").wait_for(timeout=20_000)
    assert frame.locator(".jp-OutputArea-output b", has_text="bold output").count() == 1
    assert page.evaluate("window.__nbscript") is None
    assert frame.locator("body[data-ran]").count() == 0, "the notebook's script ran"
    assert page.locator("iframe#notebook").get_attribute("sandbox") == "", "no allowances"
    shot(page, "run")

    assert not problems, problems
    outside = [u for u in requests if not u.startswith(origin) and not u.startswith("data:")]
    assert not outside, f"the page fetched from elsewhere: {outside}"
    page.close()
    server.terminate()
    assert server.wait(20) == 143, "SIGTERM ends it as it ends nbsweep's other commands"


def test_two_runs_side_by_side_and_a_failed_runs_reason(local, browser):
    notebook = [
        NOTEBOOK[0],
        "import nbsweep\nnbsweep.log({'loss': lr})\nassert opt == 'adam', 'not adam'",
    ]
    sweep_id = local.sweep(SWEEP.replace("[0.1, 0.2, 0.3]", "[0.1]"), notebook)
    finished = local("agent", f"local:{sweep_id}", "--no-wandb")
    assert finished.returncode == 0, finished.stderr
    server, url = start_dashboard(local)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector(f"#sweeps tr[data-sweep='{sweep_id}']")
    shot(page, "sweeps")
    page.locator(f"#sweeps tr[data-sweep='{sweep_id}']").click()
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    for box in page.locator("#runs tbody input[type=checkbox]").all():
        box.click()
    page.locator("#compare").click()
    page.wait_for_selector("#compare-values")
    differing = page.locator("#compare-values tr.differs").evaluate_all(
        "(rows) => rows.map((row) => row.dataset.name)"
    )
    assert "opt" in differing and "state" in differing and "lr" not in differing
    assert page.locator("#compare-curves [data-curve='loss']").count() == 1
    page.go_back()
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    page.locator("#runs tbody tr", has_text="failed").click()
    page.wait_for_selector("#run-error")
    assert re.search(r"AssertionError.*not adam", page.locator("#run-error").text_content())
    page.close()
    server.send_signal(2)  # Ctrl-C
    assert server.wait(20) == 0
    assert "dashboard stopped" in server.stderr.read()


def test_the_dashboard_without_its_extra_says_what_to_install(local, tmp_path):
    """Where Starlette is missing the command says which extra to install, in one line."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "starlette.py").write_text("raise ImportError('not installed')\n")
    result = local("dashboard", PYTHONPATH=str(blocker))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "Error: the dashboard needs its extra: pip install 'nbsweep[dashboard]'"
    )
