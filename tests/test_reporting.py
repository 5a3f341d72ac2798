import io

from nbsweep.metrics import MetricRecord, Metrics
from nbsweep.reporting import Reporter


def test_terminal_progress_updates_one_line():
    out = io.StringIO()
    reporter = Reporter(out, tty=True)
    reporter.cell_started(3, 2, 5)
    reporter.cell_finished(3, 0.25)
    reporter.warn("careful")
    text = out.getvalue()
    assert text.startswith("\r\x1b[2Kcell 2/5 started [")
    assert "cell done in 0.25s" in text
    assert text.endswith("\r\x1b[2Kwarning: careful\n")


def test_plain_lines_without_a_terminal():
    out = io.StringIO()
    reporter = Reporter(out, tty=False, prefix="[gpu0] ")
    reporter.cell_started(0, 1, 1)
    reporter.cell_finished(0, 1.0)
    reporter.metric(MetricRecord(2, {"loss": 0.123456789, "epoch": 2}))
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines()[1:] == ["[gpu0] step 2: loss=0.123457, epoch=2"]


def test_metrics_capture_in_order_and_non_finite_values():
    seen = []
    metrics = Metrics(on_record=seen.append)
    mime = "application/vnd.nbsweep.metrics+json"
    assert metrics.capture({"text/plain": "x"}) is None
    metrics.capture({mime: {"step": 0, "metrics": {"loss": "NaN", "acc": 0.5}}})
    metrics.capture({mime: {"step": 1, "metrics": {"loss": 0.25}}})
    metrics.final["best"] = "Infinity"
    assert [r.step for r in seen] == [0, 1]
    assert metrics.summary() == {"loss": 0.25, "acc": 0.5, "best": "Infinity"}
    assert metrics.to_json()["history"][0] == {"step": 0, "loss": "NaN", "acc": 0.5}


def test_log_outside_nbsweep_prints(capsys, monkeypatch):
    import nbsweep

    monkeypatch.delenv("NBSWEEP_TRIAL", raising=False)
    nbsweep.log({"loss": 0.5}, step=3)
    assert capsys.readouterr().out == "nbsweep.log step 3: loss=0.5\n"
