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
import codecs
import contextlib
import functools
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

from nbsweep.status import to_json_number

METRICS_FILE_ENV = "NBSWEEP_METRICS_FILE"
TRIAL_FILE_ENV = "NBSWEEP_TRIAL_FILE"
"""A Python literal: {"values": {...}, "sweep_id": str | None, "sweep_config": dict | None}."""
INSTALL_HOOKS = """\
try:
    __import__("nbsweep.kernel.hooks").kernel.hooks.install()
except ImportError:
    pass
"""
"""What installs this module in a kernel (the setup's template too): patches wandb now, or
when the notebook imports it; a kernel without nbsweep runs the notebook as it is."""

_channels: dict[str, int] = {}
_warned: set[str] = set()
_STREAM_PIECE = 1 << 20
"""Characters of one stream message at most (see ``_send_streams_in_pieces``)."""


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


class _TrialRuns:
    """Which of the notebook's ``wandb.init`` calls opens the trial's run, and which
    ``wandb.agent`` call runs. The trial's run is the one opened inside the chosen sweep
    function (W&B's tutorials), or, in a notebook that calls no ``wandb.agent``, the first
    one opened. Every other ``wandb.init`` runs disabled: its code runs, nothing is
    recorded, and no second run takes the trial's id."""

    def __init__(self) -> None:
        self.agent_calls = 0
        self.in_sweep_function = False
        self.sweep_function_ran = False
        self.trial_run: int | None = None
        """``id()`` of the trial's run, once opened."""
        self.disabled: list[Any] = []
        """Runs opened disabled, kept so that no later run gets one's ``id()``."""

    def wants_trial_run(self) -> bool:
        if self.trial_run is not None:
            return False
        if trial_file().get("sweep_function") is None:
            return True
        return self.in_sweep_function

    def is_chosen(self, function: Any) -> bool:
        """Whether this ``wandb.agent`` call is the one the trial runs (see
        ``wandb_way.SweepFunction``)."""
        ordinal = self.agent_calls
        self.agent_calls += 1
        chosen = trial_file().get("sweep_function")
        if self.sweep_function_ran:
            return False
        if not isinstance(chosen, Mapping):
            return True
        name = chosen.get("name")
        if name is None:
            return ordinal == chosen.get("ordinal")
        return ordinal >= int(chosen.get("ordinal") or 0) and _callable_name(function) == name

    def counts(self, run: Any) -> bool:
        """Whether nbsweep reads this run's records: the trial's run (any, before one)."""
        if any(run is disabled for disabled in self.disabled):
            return False
        return self.trial_run is None or id(run) == self.trial_run


_runs = _TrialRuns()


def _callable_name(function: Any) -> str | None:
    while hasattr(function, "func"):  # functools.partial, nested or not
        function = function.func
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) else None


def flush_pending() -> None:
    """Commit rows a notebook left open (``commit=False``) before the trial's end."""
    for history in _histories.values():
        history.flush()


def install() -> None:
    """Patch wandb now if it is imported, else when the notebook imports it; give shell
    lines no stdin; send huge prints in pieces."""
    _close_shell_stdin()
    _send_streams_in_pieces()
    module = sys.modules.get("wandb")
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _WandbImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WandbImport())


def _send_streams_in_pieces() -> None:
    """A cell that prints 500 MB would be one message, which nbsweep holds three times over
    while it decodes it (bytes, text, parsed text) before any of it can go to a side file.
    Pieces of ``_STREAM_PIECE`` characters go one by one, in order, from ipykernel's own
    hook on its outgoing stream messages (hooks are per thread: registered on the thread
    that sends)."""
    for stream in (sys.stdout, sys.stderr):
        register = getattr(stream, "register_hook", None)
        thread = getattr(stream, "pub_thread", None)
        if register is None or thread is None or getattr(stream, "_nbsweep_pieces", False):
            continue
        hook = functools.partial(_in_pieces, stream)
        thread.schedule(functools.partial(register, hook))
        stream._nbsweep_pieces = True  # type: ignore[union-attr]  # ipykernel's OutStream


def _in_pieces(stream: Any, msg: dict[str, Any]) -> dict[str, Any]:
    """Send all of a big stream message but its last piece; return that piece as the message
    (a hook that returns None makes ipykernel drop the rest of that flush)."""
    text = msg["content"].get("text", "")
    last = (len(text) - 1) // _STREAM_PIECE * _STREAM_PIECE
    for at in range(0, last, _STREAM_PIECE):
        content = {**msg["content"], "text": text[at : at + _STREAM_PIECE]}
        piece = stream.session.msg("stream", content, parent=msg["parent_header"])
        stream.session.send(stream.pub_thread, piece, ident=stream.topic)
    if last > 0:
        msg["content"] = {**msg["content"], "text": text[last:]}
    return msg


def _close_shell_stdin() -> None:
    """``!cmd`` runs under a pseudo-terminal in ipykernel, so a command that prompts
    (``!wandb login``, ``!apt install`` without -y) waits for ever for a person who is not
    there. In a trial it runs in its own session (no terminal to open) with stdin at
    /dev/null: a prompt reads end-of-file at once."""
    shell_module = sys.modules.get("ipykernel.zmqshell")
    if shell_module is None or getattr(shell_module.system, "_nbsweep", False):
        return

    def system(cmd: str) -> int:
        import subprocess

        process = subprocess.Popen(
            cmd,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            executable=shutil.which(os.environ.get("SHELL") or "sh"),
        )
        assert process.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while chunk := os.read(process.stdout.fileno(), 65536):
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
            return process.wait()
        except BaseException:  # an interrupt: the command and what it started end too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()
            raise
        finally:
            process.stdout.close()

    system._nbsweep = True  # type: ignore[attr-defined]
    shell_module.system = system  # type: ignore[attr-defined]


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
        # Patched by the setup a forked kernel started from: this trial's channel hears of
        # wandb too.
        emit({"w": 1})
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
        if not forwarding and isinstance(data, Mapping) and _runs.counts(self):
            _histories.setdefault(id(self), _History()).log(data, step, commit)

    def summary_update(self: Any, record: Any) -> None:
        summary(self, record)
        if not _runs.counts(self):
            return
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
        if not _runs.wants_trial_run():
            has_function = trial_file().get("sweep_function") is not None
            outside = has_function and not _runs.in_sweep_function
            where = "outside the sweep function" if outside else "again"
            note(
                f"wandb.init {where} runs disabled in a trial (nothing is recorded): only "
                "the sweep function's run is the trial's run"
            )
            disabled = init(*args, **{**kwargs, "mode": "disabled"})
            _runs.disabled.append(disabled)
            return disabled
        run = init(*args, **kwargs)
        _runs.trial_run = id(run)
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
    if not _runs.is_chosen(function):
        note(
            f"wandb.agent({_callable_name(function) or 'function'}) skipped: a trial runs one "
            "sweep function (the last wandb.agent call's; --sweep-function picks another)"
        )
        return
    # This kernel is one trial: the function runs once, whatever count says. As wandb's
    # agent does, the run it opened is finished when it returns, failed if it raised.
    _runs.sweep_function_ran = True
    _runs.in_sweep_function = True
    try:
        function()
    except BaseException:
        _finish_trial_run(exit_code=1)
        raise
    finally:
        _runs.in_sweep_function = False
    _finish_trial_run(exit_code=0)


def _finish_trial_run(exit_code: int) -> None:
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None)
    if run is not None and id(run) == _runs.trial_run:
        run.finish(exit_code=exit_code)


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
