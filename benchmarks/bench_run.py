"""Wall-clock cost of running a notebook once, nbsweep against the usual alternatives.

Every repeat runs each of these once, as a fresh subprocess, round-robin (the starting
tool rotates from one repeat to the next so no tool always runs first):

* ``script``: ``python t.py``, the notebook's code cells pasted into one script: the floor;
* ``nbconvert``: ``jupyter nbconvert --to notebook --execute --output OUT nb.ipynb``
  (runs the defaults: nbconvert cannot set parameters);
* ``papermill``: ``papermill nb.ipynb out.ipynb -p lr 0.2``;
* ``nbsweep``: ``nbsweep run nb.ipynb --lr=0.2 -o OUT``.

All three notebook runners start a fresh ipykernel, so the numbers are mostly process and
kernel start-up: what a sweep pays per trial on top of the work itself.

Run it from the repository root (the tools come from the same environment as the
interpreter, so install them there first)::

    pip install -e '.[bench]'
    python benchmarks/bench_run.py --repeats 5
    python benchmarks/bench_run.py --repeats 3 --json benchmarks/results/run.json
    python benchmarks/bench_run.py --notebook notebooks/digits.ipynb --param epochs=3

By default it benchmarks a tiny notebook it writes to a temporary folder: a ``parameters``
cell ``lr = 0.1`` and a cell ``x = sum(i * lr for i in range(1000)); print(x)``.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
from common import (
    aligned,
    console_script,
    machine,
    versions,
    without_agent_env,
    write_json,
    write_notebook,
)

TOOLS = ("script", "nbconvert", "papermill", "nbsweep")
VERSIONS = ("nbsweep", "nbconvert", "papermill", "nbclient", "ipykernel", "jupyter_client")


@dataclass
class Tool:
    name: str
    command: list[str]
    output: Path | None
    """A file the run must leave behind (None for the script)."""
    times: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        return {
            "median": statistics.median(self.times),
            "min": min(self.times),
            "max": max(self.times),
        }


def write_tiny_notebook(folder: Path) -> Path:
    """The default subject: a parameters cell and one cheap cell."""
    return write_notebook(
        folder,
        [("lr = 0.1", ["parameters"]), "x = sum(i * lr for i in range(1000)); print(x)"],
    )


def literal(text: str) -> str:
    """``text`` as Python source: itself if it is a literal, else a quoted string."""
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return repr(text)
    return text


def write_script(notebook: Path, name: str, value: str, path: Path) -> Path:
    """The notebook's code cells as one script, with ``name = value`` after the parameters
    cell (as papermill and nbsweep inject it). Magics and shell escapes are commented out."""
    nb = nbformat.read(notebook, as_version=4)
    chunks: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = [
            f"# {line}" if line.lstrip().startswith(("%", "!")) else line
            for line in cell.source.splitlines()
        ]
        chunks.append("\n".join(lines))
        if "parameters" in cell.metadata.get("tags", []):
            chunks.append(f"{name} = {literal(value)}")
    path.write_text("\n\n".join(chunks) + "\n", encoding="utf-8")
    return path


def build_tools(notebook: Path, name: str, value: str, work: Path) -> list[Tool]:
    script = write_script(notebook, name, value, work / "t.py")
    jupyter = Path(sys.executable).parent / "jupyter"
    nbconvert = (
        [str(jupyter), "nbconvert"] if jupyter.is_file() else [sys.executable, "-m", "nbconvert"]
    )
    outputs = {tool: work / f"out-{tool}.ipynb" for tool in TOOLS[1:]}
    nbconvert_args = ["--to", "notebook", "--execute", "--output", str(outputs["nbconvert"])]
    return [
        Tool("script", [sys.executable, str(script)], None),
        Tool("nbconvert", [*nbconvert, *nbconvert_args, str(notebook)], outputs["nbconvert"]),
        Tool(
            "papermill",
            [
                *console_script("papermill", "papermill"),
                *(str(notebook), str(outputs["papermill"])),
                *("-p", name, value),
            ],
            outputs["papermill"],
        ),
        Tool(
            "nbsweep",
            [
                *console_script("nbsweep", "nbsweep"),
                *("run", str(notebook), f"--{name}={value}"),
                *("-o", str(outputs["nbsweep"])),
            ],
            outputs["nbsweep"],
        ),
    ]


def run_once(tool: Tool, cwd: Path, env: dict[str, str]) -> float:
    if tool.output is not None:
        tool.output.unlink(missing_ok=True)
    started = time.perf_counter()
    completed = subprocess.run(
        tool.command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or (tool.output is not None and not tool.output.is_file()):
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-15:])
        raise SystemExit(
            f"{tool.name} failed (exit {completed.returncode}): {' '.join(tool.command)}\n{tail}"
        )
    return elapsed


def run_benchmark(tools: list[Tool], repeats: int, warmup: int, cwd: Path) -> None:
    env = without_agent_env()
    for _ in range(warmup):  # fill the page cache and __pycache__ before timing anything
        for tool in tools:
            run_once(tool, cwd, env)
    for repeat in range(repeats):
        start = repeat % len(tools)
        for tool in tools[start:] + tools[:start]:
            tool.times.append(run_once(tool, cwd, env))
        done = ", ".join(f"{tool.name} {tool.times[-1]:.2f}s" for tool in tools)
        print(f"repeat {repeat + 1}/{repeats}: {done}", file=sys.stderr, flush=True)


def table(tools: list[Tool]) -> str:
    by_name = {tool.name: tool.stats()["median"] for tool in tools}
    header = ("tool", "median s", "min s", "max s", "x script", "x nbconvert")
    rows = [header]
    for tool in tools:
        stats = tool.stats()
        rows.append(
            (
                tool.name,
                f"{stats['median']:.3f}",
                f"{stats['min']:.3f}",
                f"{stats['max']:.3f}",
                f"{stats['median'] / by_name['script']:.2f}",
                f"{stats['median'] / by_name['nbconvert']:.2f}",
            )
        )
    return aligned(rows)


def report(tools: list[Tool], notebook: Path, repeats: int) -> dict[str, Any]:
    script = statistics.median(next(t for t in tools if t.name == "script").times)
    nbconvert = statistics.median(next(t for t in tools if t.name == "nbconvert").times)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(VERSIONS),
        "notebook": str(notebook),
        "repeats": repeats,
        "tools": {
            tool.name: {
                "command": tool.command,
                "times": [round(t, 4) for t in tool.times],
                **{key: round(value, 4) for key, value in tool.stats().items()},
                "ratio_to_script": round(tool.stats()["median"] / script, 3),
                "ratio_to_nbconvert": round(tool.stats()["median"] / nbconvert, 3),
            }
            for tool in tools
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one notebook run with a plain script, nbconvert, papermill, nbsweep."
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed runs per tool first (default 1)"
    )
    parser.add_argument(
        "--notebook",
        type=Path,
        help="notebook to run (default: a tiny one written to a temporary folder)",
    )
    parser.add_argument(
        "--param",
        default="lr=0.2",
        metavar="NAME=VALUE",
        help="the parameter papermill and nbsweep set (default lr=0.2)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup at least 0")
    if "=" not in args.param:
        parser.error("--param must look like NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name, _, value = args.param.partition("=")
    work = Path(tempfile.mkdtemp(prefix="nbsweep-bench-"))
    try:
        notebook = args.notebook.resolve() if args.notebook else write_tiny_notebook(work)
        tools = build_tools(notebook, name, value, work)
        run_benchmark(tools, args.repeats, args.warmup, cwd=work)
        print(
            f"{notebook.name}, {args.repeats} repeats, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs"
        )
        print(table(tools))
        if args.json is not None:
            data = report(tools, args.notebook or Path("<tiny notebook>"), args.repeats)
            write_json(args.json, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
