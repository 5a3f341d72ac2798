"""What nbsweep installs inside a trial's kernel: the metrics channel, and wandb made to
behave as a sweep program's wandb does (imports nothing heavy; wandb is patched only when
the notebook imports it).

Every metric goes to the trial's channel file (``NBSWEEP_METRICS_FILE``) as one JSON line,
written with one ``os.write`` before the call returns: nothing sits in a buffer, and unlike
IOPub (whose high-water marks drop messages from a notebook that logs fast) a file never
drops a line. The runner reads it as it grows and once more after the last cell.

Under a trial the notebook's own W&B calls mean what they mean under ``wandb agent`` with a
script: ``wandb.sweep`` creates nothing and returns the trial's sweep id, ``wandb.agent``
calls its function once (this kernel *is* the trial), ``wandb.controller`` and
``wandb.login`` do nothing, and ``wandb.init`` gets the trial's values in its config,
locked as the sweep's (they win over the defaults the notebook passes, as with W&B).
Records the notebook logs to its own run go to W&B once, by wandb; nbsweep only reads them.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from nbsweep.status import to_json_number

METRICS_FILE_ENV = "NBSWEEP_METRICS_FILE"
TRIAL_FILE_ENV = "NBSWEEP_TRIAL_FILE"
"""A Python literal: {"values": {...}, "sweep_id": str | None, "sweep_config": dict | None}."""

_channels: dict[str, int] = {}
_warned: set[str] = set()


def emit(record: Mapping[str, Any]) -> bool:
    """Append one record to the trial's channel; False where there is none (plain Jupyter)."""
    path = os.environ.get(METRICS_FILE_ENV)
    if not path:
        return False
    fd = _channels.get(path)
    if fd is None:
        fd = _channels[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=repr) + "\n"
    # O_APPEND and one write per line: records from threads never interleave.
    os.write(fd, line.encode())
    return True


def plain(value: Any) -> Any:
    """Numbers from numpy, torch and friends as Python numbers; nan and inf as the strings
    JSON writers use ("NaN", "Infinity"): the channel is strict JSON."""
    if hasattr(value, "item") and callable(value.item):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            value = value.item()
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(value)
    return to_json_number(number)


def scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numbers, strings and booleans of a wandb record, nested keys dotted; media
    (images, tables, histograms) stay W&B's: a sweep ranks by numbers."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(scalars(value, f"{name}."))
            continue
        if hasattr(value, "item") and callable(value.item):
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            flat[name] = plain(value)
    return flat


def trial_file() -> dict[str, Any]:
    path = os.environ.get(TRIAL_FILE_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            loaded = ast.literal_eval(file.read())
    except (OSError, ValueError, SyntaxError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def note(message: str) -> None:
    """Say something once per kernel, on stderr (it lands in the cell's output)."""
    if message not in _warned:
        _warned.add(message)
        print(f"nbsweep: {message}", file=sys.stderr)


class _History:
    """wandb's step and commit rules, so that nbsweep sees the rows W&B records: a call
    without ``step`` commits (unless ``commit=False``); with ``step`` it adds to that step's
    row, which is committed by ``commit=True`` or when a later step begins; an earlier step
    is ignored, as wandb ignores it."""

    def __init__(self) -> None:
        self.step = 0
        self.pending: dict[str, Any] = {}

    def log(self, data: Mapping[str, Any], step: int | None, commit: bool | None) -> None:
        if step is not None:
            step = int(step)
            if step < self.step:
                return
            if step > self.step:
                self.flush()
                self.step = step
        self.pending.update(scalars(data))
        if commit or (step is None and commit is None):
            self.flush(always=True)

    def flush(self, always: bool = False) -> None:
        if self.pending or always:
            emit({"h": self.pending, "s": self.step, "o": "wandb"})
            self.pending = {}
            self.step += 1


_histories: dict[int, _History] = {}
forwarding = False
"""True while ``nbsweep.log`` hands a record to the notebook's run: nbsweep has it already."""


def flush_pending() -> None:
    """Commit rows a notebook left open (``commit=False``) before the trial's end."""
    for history in _histories.values():
        history.flush()


def install() -> None:
    """Patch wandb now if it is imported, else when the notebook imports it."""
    module = sys.modules.get("wandb")
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _WandbImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WandbImport())


class _WandbImport:
    """Finds nothing itself: when ``wandb`` is imported, it wraps the real loader so that
    the module is patched the moment it has loaded."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "wandb":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec("wandb")
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        load = loader.exec_module

        def exec_module(module: Any) -> None:
            load(module)
            _patch(module)

        loader.exec_module = exec_module  # this spec's loader only
        return spec


def _patch(wandb: Any) -> None:
    if getattr(wandb, "_nbsweep_patched", False):
        return
    try:
        from wandb.sdk.wandb_run import Run
    except ImportError:  # not the wandb we know: leave it alone
        return
    wandb._nbsweep_patched = True
    emit({"w": 1})
    _wrap_run(Run)
    init = wandb.init
    wandb.init = _init(init)
    wandb.sweep = _sweep
    wandb.agent = _agent
    wandb.controller = _controller
    wandb.login = _login


def _wrap_run(run_class: Any) -> None:
    history = run_class._partial_history_callback
    summary = run_class._summary_update_callback
    finish = run_class.finish

    def partial_history(self: Any, data: Any, step: Any = None, commit: Any = None) -> None:
        history(self, data, step, commit)
        if not forwarding and isinstance(data, Mapping):
            _histories.setdefault(id(self), _History()).log(data, step, commit)

    def summary_update(self: Any, record: Any) -> None:
        summary(self, record)
        values = {".".join(map(str, item.key)): item.value for item in record.update}
        flat = scalars(values)
        if flat:
            emit({"u": flat})

    def finish_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = _histories.pop(id(self), None)
        if pending is not None:
            pending.flush()
        return finish(self, *args, **kwargs)

    run_class._partial_history_callback = partial_history
    run_class._summary_update_callback = summary_update
    run_class.finish = finish_run


def _init(init: Callable[..., Any]) -> Callable[..., Any]:
    def trial_init(*args: Any, **kwargs: Any) -> Any:
        run = init(*args, **kwargs)
        values = trial_file().get("values")
        config = getattr(run, "config", None)
        if values and config is not None:
            # What wandb does with a sweep's values: they win, and stay.
            lock = getattr(config, "merge_locked", None) or config.update_locked
            lock(values, user="sweep", _allow_val_change=True)
        return run

    trial_init.__wrapped__ = init  # type: ignore[attr-defined]
    trial_init.__doc__ = init.__doc__
    return trial_init


def _sweep(sweep: Any = None, entity: Any = None, project: Any = None, **_: Any) -> str:
    trial = trial_file()
    running = trial.get("sweep_config")
    if isinstance(sweep, Mapping) and isinstance(running, Mapping):
        differs = [
            key
            for key in ("method", "metric", "parameters")
            if key in running and _normalised(sweep.get(key)) != _normalised(running.get(key))
        ]
        if differs:
            note(
                f"this notebook's sweep config differs from the running sweep's "
                f"({', '.join(differs)}); the trial runs with the running sweep's values"
            )
    return str(os.environ.get("WANDB_SWEEP_ID") or trial.get("sweep_id") or "nbsweep-trial")


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr)) if value else value


def _agent(
    sweep_id: Any = None,
    function: Callable[[], Any] | None = None,
    entity: Any = None,
    project: Any = None,
    count: Any = None,
    **_: Any,
) -> None:
    if function is None:
        raise ValueError("wandb.agent needs the trial's function (function=...) under nbsweep")
    # This kernel is one trial: the function runs once, whatever count says.
    function()


class _Controller:
    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _controller(sweep_id_or_config: Any = None, entity: Any = None, project: Any = None) -> Any:
    sweep_id = sweep_id_or_config if isinstance(sweep_id_or_config, str) else _sweep()
    return _Controller(sweep_id)


def _login(*args: Any, **kwargs: Any) -> bool:
    return True
