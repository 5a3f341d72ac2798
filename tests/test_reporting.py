import io

from nbsweep.trial.metrics import MetricRecord, Metrics
from nbsweep.trial.reporting import Reporter


def test_terminal_progress_updates_one_line():
    out = io.StringIO()
    reporter = Reporter(out, tty=True)
    reporter.cell_started(3, 2, 5)
    reporter.cell_finished(3, 0.25)
    reporter.warn("careful")
    text = out.getvalue()
    assert text.startswith("\r\x1b[2Kcell 3 started (2/5) [")
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
    assert metrics.take({"w": 1}) is None and metrics.used_wandb
    metrics.take({"h": {"loss": "NaN", "acc": 0.5}, "s": 0, "o": "nbsweep"})
    metrics.take({"u": {"acc": 0.75}})  # a summary write overrides what was logged before
    metrics.take({"h": {"loss": 0.25}, "s": 1, "o": "wandb"})
    metrics.final["best"] = "Infinity"
    assert [(r.step, r.source) for r in seen] == [(0, "nbsweep"), (1, "wandb")]
    assert metrics.summary() == {"loss": 0.25, "acc": 0.75, "best": "Infinity"}
    assert metrics.to_json()["history"][0] == {"step": 0, "loss": "NaN", "acc": 0.5}


def test_the_channel_hands_over_complete_lines_in_order(tmp_path, monkeypatch):
    from nbsweep.kernel import hooks as kernel_hooks
    from nbsweep.trial.metrics import MetricsChannel

    channel = MetricsChannel()
    monkeypatch.setitem(__import__("os").environ, "NBSWEEP_METRICS_FILE", str(channel.path))
    metrics = Metrics()
    for i in range(3):
        kernel_hooks.emit({"h": {"i": i}, "s": i, "o": "nbsweep"})
    with channel.path.open("ab") as file:
        file.write(b'{"h": {"i": 3}')  # a line still being written is not read yet
    assert channel.read(metrics) == 3
    with channel.path.open("ab") as file:
        file.write(b', "s": 3}\n')
    channel.read(metrics)
    assert [r.values["i"] for r in metrics.history] == [0, 1, 2, 3]
    channel.close()
    assert not channel.folder.exists()


def test_log_outside_nbsweep_prints(capsys, monkeypatch):
    import nbsweep

    monkeypatch.delenv("NBSWEEP_TRIAL", raising=False)
    monkeypatch.delenv("NBSWEEP_METRICS_FILE", raising=False)
    nbsweep.log({"loss": 0.5}, step=3)
    assert capsys.readouterr().out == "nbsweep.log step 3: loss=0.5\n"
