"""Peak memory of ``nbsweep run`` on a cell that prints one huge string.

The notebook keeps 1 Mi characters of a stream; the rest goes to a side file. What nbsweep
itself holds meanwhile is the figure here: the peak resident set (``VmHWM`` in
``/proc/PID/status``, read every 20 ms until the process exits) of the ``nbsweep run``
process, not of its kernel, which holds the string it prints whatever nbsweep does.

Run it from the repository root; ``--baseline SRC`` measures another source tree in the
same run (a worktree of an earlier commit), so the two figures share a machine and a moment::

    git worktree add /tmp/base HEAD
    python benchmarks/huge_output.py --baseline /tmp/base/src
    python benchmarks/huge_output.py --sizes 200 500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_notebook

SRC = Path(__file__).resolve().parent.parent / "src"


def peak_rss_mb(src: Path, megabytes: int, folder: Path) -> tuple[float, float]:
    """(peak resident MB of ``nbsweep run``, seconds) for a cell printing ``megabytes`` MB."""
    notebook = write_notebook(folder, [f"print('x' * {megabytes * 1_000_000})"])
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbsweep", "run", str(notebook), "-o", str(folder / "out.ipynb")],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    status = Path(f"/proc/{process.pid}/status")
    peak_kb = 0
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    seconds = time.monotonic() - started
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"nbsweep run failed ({src}):\n{stderr.decode()[-2000:]}")
    return peak_kb / 1000, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500], help="MB printed")
    parser.add_argument("--baseline", type=Path, help="another tree's src/ to measure first")
    args = parser.parse_args()
    trees = ([("baseline", args.baseline)] if args.baseline else []) + [("this tree", SRC)]
    print("tree        printed  nbsweep peak RSS  wall")
    for megabytes in args.sizes:
        for label, src in trees:
            with tempfile.TemporaryDirectory(prefix="nbsweep-huge-") as folder:
                peak, seconds = peak_rss_mb(src, megabytes, Path(folder))
            print(f"{label:<10}  {megabytes:>4} MB  {peak:>12.0f} MB  {seconds:5.1f}s", flush=True)


if __name__ == "__main__":
    main()
