"""One agent process per GPU (``--gpus``) or per worker (``--workers``): start them, prefix
their output, forward Ctrl-C and SIGTERM, and return an exit code that reflects them all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nbsweep.errors import EXIT_INTERRUPTED, UsageError
from nbsweep.options import STORE_ENV
from nbsweep.processes import die_with_parent


@dataclass(frozen=True)
class Worker:
    label: str
    """Printed before each of its lines: ``gpu0``, ``worker1``."""
    env: Mapping[str, str]


def gpu_workers(spec: str, environ: Mapping[str, str]) -> list[Worker]:
    """``0,1,3`` or ``all`` (the inherited CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``)."""
    if spec.strip() == "all":
        ids = _visible_gpus(environ)
        if not ids:
            raise UsageError("--gpus all found no GPU (CUDA_VISIBLE_DEVICES and nvidia-smi -L)")
    else:
        ids = [part.strip() for part in spec.split(",") if part.strip()]
        if not ids or len(set(ids)) != len(ids):
            raise UsageError(f"--gpus {spec!r}: give distinct GPU ids such as 0,1,2 or 'all'")
    return [Worker(f"gpu{gpu}", {"CUDA_VISIBLE_DEVICES": gpu}) for gpu in ids]


def cpu_workers(count: int) -> list[Worker]:
    return [Worker(f"worker{index}", {"CUDA_VISIBLE_DEVICES": ""}) for index in range(count)]


def _visible_gpus(environ: Mapping[str, str]) -> list[str]:
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        return [part.strip() for part in inherited.split(",") if part.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(listing.splitlines()) if line.startswith("GPU")]


def run_workers(workers: Sequence[Worker], argv: Sequence[str]) -> int:
    """Run ``nbsweep <argv>`` once per worker, in parallel, until all have exited."""
    processes: list[subprocess.Popen[str]] = []
    lock = threading.Lock()
    signalled: list[int] = []

    def forward(signum: int, frame: object) -> None:
        signalled.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    pumps: list[threading.Thread] = []
    try:
        for worker in workers:
            process = subprocess.Popen(
                [sys.executable, "-m", "nbsweep", *argv],
                env={**os.environ, **worker.env, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                # Own session: a terminal's Ctrl-C reaches the workers once, from us; and
                # if we die, they are told to stop (and stop their kernels).
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
            processes.append(process)
            for stream, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                pump = threading.Thread(
                    target=_pump, args=(stream, target, f"[{worker.label}] ", lock), daemon=True
                )
                pump.start()
                pumps.append(pump)
        codes = [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for pump in pumps:
        pump.join(timeout=5)
    return combined_exit_code(codes, interrupted=bool(signalled))


def combined_exit_code(codes: Sequence[int], interrupted: bool) -> int:
    """0 if every worker succeeded; 130 when interrupted; else the first failure's code."""
    if interrupted:
        return EXIT_INTERRUPTED
    failures = [code if code > 0 else 128 - code for code in codes if code != 0]
    return failures[0] if failures else 0


def _pump(stream: IO[str] | None, target: IO[str], prefix: str, lock: threading.Lock) -> None:
    if stream is None:
        return
    for line in stream:
        with lock:
            target.write(prefix + line)
            target.flush()
    stream.close()


def agents_on_store(
    workers: Sequence[Worker], argv: Sequence[str], store: Path | str | None
) -> tuple[list[Worker], list[str]]:
    """Workers and their command line for a local store: a file as ``--store``; a database
    URL (it may hold a password) in each worker's environment, out of ``ps``'s sight."""
    if store is None:
        return list(workers), list(argv)
    if isinstance(store, Path):
        return list(workers), [*argv, "--store", str(store)]
    return [Worker(w.label, {**w.env, STORE_ENV: store}) for w in workers], list(argv)
