"""Bad bytes, bombs and self-destroying options: one line, exit 2, nothing lost (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import one_line_usage_error, write_notebook

NOTEBOOK = [("x = 1", ["parameters"]), "print(x)"]


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
        ('{"cells": []}'.encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (b"42", "holds a JSON int, not a notebook object"),
        (b"[1, 2]", "holds a JSON list, not a notebook object"),
    ],
    ids=["binary", "utf-16", "json-int", "json-list"],
)
@pytest.mark.parametrize("command", ["run", "inspect"])
def test_bad_bytes_in_a_notebook(cli, tmp_path, data, needle, command):
    (tmp_path / "bad.ipynb").write_bytes(data)
    one_line_usage_error(cli(command, "bad.ipynb"), "'bad.ipynb'", needle)


def test_a_notebook_with_a_byte_order_mark_is_read(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    text = (tmp_path / "nb.ipynb").read_text(encoding="utf-8")
    (tmp_path / "bom.ipynb").write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = cli("inspect", "bom.ipynb")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["x", "1"]


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
def test_bad_bytes_in_sweep_and_parameter_files(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "bin.yaml").write_bytes(b"program: nb.ipynb\n\xff\xfe\x00garbage")
    for args in (["sweep", "bin.yaml", "--dry-run"], ["sweep", "--local", "bin.yaml"]):
        one_line_usage_error(cli(*args), "sweep file 'bin.yaml' is not UTF-8 text")
    one_line_usage_error(cli("run", "nb.ipynb", "-f", "bin.yaml"), "parameters file 'bin.yaml'")
    (tmp_path / "args.json").write_bytes(b'{"x": "\xff"}')
    one_line_usage_error(cli("run", "nb.ipynb", "args.json"), "--args-json file 'args.json'")


BOMB = """\
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
x: [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
def test_a_yaml_alias_bomb_is_refused_at_once(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "bomb.yaml").write_text(BOMB)
    started = time.monotonic()
    result = cli("run", "nb.ipynb", "-f", "bomb.yaml")
    one_line_usage_error(result, "expands to more than 1,000,000 values")
    (tmp_path / "sweep.yaml").write_text("program: nb.ipynb\nmethod: grid\n" + BOMB)
    one_line_usage_error(cli("sweep", "sweep.yaml", "--dry-run"), "expands to more than")
    assert time.monotonic() - started < 10


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
@pytest.mark.parametrize(
    "args,needle",
    [
        (["-o", "nb.ipynb"], "--output 'nb.ipynb' is the notebook being run"),
        (["--metrics-json", "nb.ipynb"], "--metrics-json 'nb.ipynb' is the notebook being run"),
        (["--metrics-json", "./nb.ipynb"], "is the notebook being run"),
        (["--metrics-json", "link.ipynb"], "is the notebook being run"),
        (["-o", "out/x.ipynb", "--metrics-json", "out/x.ipynb"], "is also --output"),
        (["-o", "out/x.ipynb", "--html", "--metrics-json", "out/x.html"], "is also --html"),
    ],
    ids=["output", "metrics", "dot-path", "hard-link", "metrics-is-output", "metrics-is-html"],
)
def test_outputs_never_overwrite_the_source_or_each_other(cli, tmp_path, args, needle):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    os.link(tmp_path / "nb.ipynb", tmp_path / "link.ipynb")
    before = (tmp_path / "nb.ipynb").read_bytes()
    one_line_usage_error(cli("run", "nb.ipynb", *args), needle)
    assert (tmp_path / "nb.ipynb").read_bytes() == before


@pytest.mark.kernel
def test_overwriting_an_earlier_runs_output_is_allowed(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    for value in (1, 2):
        args = ["-o", "out.ipynb", "--metrics-json", "m.json"]
        result = cli("run", "nb.ipynb", f"--x={value}", *args)
        assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["missing"] == []


@pytest.mark.kernel
def test_100000_records_in_a_tight_loop_all_arrive(cli, tmp_path):
    write_notebook(
        tmp_path / "fast.ipynb",
        [("n = 100_000", ["parameters"]),
         "import nbsweep\nfor i in range(n):\n    nbsweep.log({'loss': 1.0 / (i + 1), 'i': i})\n"
         "print('last line')"],
    )  # fmt: skip
    result = cli("run", "fast.ipynb", "--metrics-json", "m.json", "-o", "out.ipynb")
    assert result.returncode == 0, result.stderr[-2000:]
    history = json.loads((tmp_path / "m.json").read_text())["history"]
    assert len(history) == 100_000
    assert [row["i"] for row in history] == list(range(100_000)), "all, in order"
    assert history[-1] == {"step": 99_999, "loss": 1.0 / 100_000, "i": 99_999}
    assert "last line" in (tmp_path / "out.ipynb").read_text()
    assert signal.SIGTERM  # the agent's store is checked in test_local_sweeps


@pytest.mark.kernel
def test_progress_and_errors_name_a_cell_alike(cli, tmp_path):
    write_notebook(
        tmp_path / "slow.ipynb",
        ["# md: a title", ("x = 1", ["parameters"]), "print(x)", "import time\ntime.sleep(30)"],
    )
    result = cli("run", "slow.ipynb", "--x=2", "--timeout", "1", "--stop-grace", "1")
    assert result.returncode == 1, result.stderr
    assert "cell 3 started (4/4)" in result.stderr
    assert "the injected parameters started (2/4)" in result.stderr
    assert "Error: cell 3 failed" in result.stderr


@pytest.mark.kernel
def test_a_huge_cell_output_goes_to_a_side_file(cli, tmp_path):
    write_notebook(
        tmp_path / "loud.ipynb",
        ["import os\nline = 'x' * 999 + '\\n'\nfor _ in range(3000):\n    print(line, end='')\n"
         "print('THE END')", "print('next cell')"],
    )  # fmt: skip
    result = cli("run", "loud.ipynb", "-o", "out/loud.ipynb")
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "out" / "loud.ipynb").read_text()
    assert len(saved) < 1_200_000, "at most 1 Mi characters of a cell's stdout are kept"
    assert (
        "stdout past 1,048,576 characters is not kept in the notebook; the rest is in "
        "loud.cell0.stdout.txt" in saved
    )
    assert "next cell" in saved
    side = (tmp_path / "out" / "loud.cell0.stdout.txt").read_text()
    assert side.endswith("THE END\n")
    assert len(side) + 1_048_576 == 3000 * 1000 + len("THE END\n")
