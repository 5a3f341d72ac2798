"""The fork template's shell: runs a notebook's setup cells as a kernel would, in a plain
IPython ``InteractiveShell``, and records each cell's outputs as nbformat outputs.

A kernel is no place to run the setup in: its threads, ZMQ sockets and event loop would not
survive the fork that makes each trial's kernel. This shell has none (its history lives in
memory; no saving thread). It records what a kernel would have sent, shaped as nbclient turns
it into a notebook: streams buffered per name as ipykernel buffers them (one output for
``print(a); print(c)`` around a ``print(b, file=sys.stderr)``), rich displays, results numbered
as the kernel numbers them, tracebacks, display updates and ``clear_output``. What C code and
subprocesses write to the file descriptors goes to a file per cell, read without a thread.

Loaded by the template from this file (``kernel/launcher.py``), never imported as part of
nbsweep: the template and its kernels hold only their notebook's modules. So this imports
the standard library, IPython and ipykernel only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import IO, Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Type
from traitlets.config import Config

Output = dict[str, Any]
# ipykernel flushes a stream's buffer this long after its first unflushed write.
_FLUSH_INTERVAL = 0.2
_STREAMS = ("stdout", "stderr")


class Recorder:
    """The outputs of every cell run so far (a later cell may update an earlier display)."""

    def __init__(self, stream_limit: int) -> None:
        self.stream_limit = stream_limit
        self.cells: list[list[Output]] = []
        self.outputs: list[Output] = []
        self.clear_on_next = False
        self.display_ids: dict[str, list[tuple[int, int]]] = {}
        self.buffers = dict.fromkeys(_STREAMS, "")
        self.first_write = dict.fromkeys(_STREAMS, 0.0)
        self.kept = dict.fromkeys(_STREAMS, 0)
        self.descriptor_files: dict[str, IO[bytes]] = {}
        self.descriptor_read = dict.fromkeys(_STREAMS, 0)

    def start_cell(self) -> None:
        self.outputs = []
        self.cells.append(self.outputs)
        self.clear_on_next = False
        self.buffers = dict.fromkeys(_STREAMS, "")
        self.kept = dict.fromkeys(_STREAMS, 0)

    def write(self, name: str, text: str) -> None:
        now = time.monotonic()
        if not self.buffers[name]:
            self.first_write[name] = now
        self.buffers[name] += text
        if now - self.first_write[name] > _FLUSH_INTERVAL:
            self.flush_streams()

    def _read_descriptors(self) -> None:
        # The file shares its offset with fd 1 or 2 (dup2): read at a position of our own.
        for name, file in self.descriptor_files.items():
            position = self.descriptor_read[name]
            data = os.pread(file.fileno(), 1 << 24, position)
            while data:
                position += len(data)
                self.buffers[name] += data.decode("utf-8", "replace")
                data = os.pread(file.fileno(), 1 << 24, position)
            self.descriptor_read[name] = position

    def flush_streams(self) -> None:
        self._read_descriptors()
        for name in _STREAMS:
            text, self.buffers[name] = self.buffers[name], ""
            if text:
                self.add({"output_type": "stream", "name": name, "text": self._limited(name, text)})

    def _limited(self, name: str, text: str) -> str:
        """What of a stream the notebook keeps: a trial's own cells keep ``stream_limit``
        characters of each stream a cell prints; so does the setup (the rest is not kept)."""
        room = self.stream_limit - self.kept[name]
        if room < 0:
            return ""
        self.kept[name] += len(text)
        if len(text) <= room:
            return text
        self.kept[name] = self.stream_limit + 1
        return (
            f"{text[:room]}\n[nbsweep: {name} past {self.stream_limit:,} characters is not kept]\n"
        )

    def add(self, output: Output, display_id: str | None = None) -> None:
        if output["output_type"] != "stream":
            self.flush_streams()
        elif not output["text"]:
            return
        if self.clear_on_next:
            self.outputs.clear()
            self.clear_on_next = False
        last = self.outputs[-1] if self.outputs else None
        if (
            last is not None
            and output["output_type"] == "stream"
            and last["output_type"] == "stream"
            and last["name"] == output["name"]
        ):
            last["text"] += output["text"]
            return
        self.outputs.append(output)
        if display_id:
            where = (len(self.cells) - 1, len(self.outputs) - 1)
            self.display_ids.setdefault(display_id, []).append(where)

    def update(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        for cell, index in self.display_ids.get(display_id, []):
            if index < len(self.cells[cell]):
                self.cells[cell][index].update(data=data, metadata=metadata)

    def clear(self, wait: bool) -> None:
        self.flush_streams()
        if wait:
            self.clear_on_next = True
        else:
            self.outputs.clear()


class _Stream:
    """``sys.stdout`` or ``sys.stderr`` while a cell runs."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, name: str, recorder: Recorder) -> None:
        self.name = name
        self.recorder = recorder

    def write(self, text: str) -> int:
        current = getattr(sys, self.name)
        if current is not self:
            # Kept past its cell (a logging handler made in the setup holds it): what it
            # gets now goes where the process's stream goes, as a kernel's handler's would.
            return int(current.write(text))
        if text:
            self.recorder.write(self.name, str(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        current = getattr(sys, self.name)
        if current is not self:
            current.flush()

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1 if self.name == "stdout" else 2


class _DisplayHook(DisplayHook):
    def write_output_prompt(self) -> None:
        pass

    def write_format_data(
        self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None
    ) -> None:
        output = {
            "output_type": "execute_result",
            "execution_count": self.prompt_count,
            "data": format_dict,
            "metadata": md_dict or {},
        }
        _recorder(self.shell).add(output)

    def finish_displayhook(self) -> None:
        pass


class _DisplayPublisher(DisplayPublisher):
    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: object = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **_: object,
    ) -> None:
        recorder = _recorder(self.shell)
        display_id = (transient or {}).get("display_id")
        if update and display_id:
            recorder.update(display_id, data, metadata or {})
            return
        output = {"output_type": "display_data", "data": data, "metadata": metadata or {}}
        recorder.add(output, display_id)

    def clear_output(self, wait: bool = False) -> None:
        _recorder(self.shell).clear(wait)


def _recorder(shell: Any) -> Recorder:
    recorder = getattr(shell, "recorder", None)
    assert isinstance(recorder, Recorder)
    return recorder


class SetupShell(InteractiveShell):
    """An ``InteractiveShell`` that records outputs as a kernel's would be."""

    displayhook_class = Type(_DisplayHook)
    display_pub_class = Type(_DisplayPublisher)
    recorder: Recorder

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        output = {
            "output_type": "error",
            "ename": str(etype.__name__),
            "evalue": str(evalue),
            "traceback": stb,
        }
        self.recorder.add(output)

    def enable_gui(self, gui: str | None = None) -> None:
        """As ipykernel's: no GUI event loop here."""

    def system_piped(self, cmd: str) -> None:
        """``!cmd`` as a kernel's shell runs it (ipykernel's ``system``, which nbsweep's
        hooks make give the command no stdin), its output in the cell's."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        from ipykernel import zmqshell

        self.user_ns["_exit_code"] = zmqshell.system(self.var_expand(cmd, depth=1))

    system = system_piped


def make_shell(stream_limit: int) -> SetupShell:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # no SQLite file, no saving thread
    config.HistoryManager.enabled = False
    # ipykernel's compiler names cells as a kernel does (/tmp/ipykernel_<pid>/<hash>.py):
    # warnings, SyntaxError messages and code objects read the same as a kernel's.
    from ipykernel.compiler import XCachingCompiler

    shell = SetupShell.instance(config=config, compiler_class=XCachingCompiler)
    shell.recorder = Recorder(stream_limit)
    return shell


_WATCHED = ((1, "stdout"), (2, "stderr"))


def _watches_descriptors() -> bool:
    """Whether a kernel here would show what is written to fds 1 and 2: ipykernel's
    output streams watch them, except under pytest (whose capture they leave alone)."""
    return sys.platform.startswith(("linux", "darwin")) and "PYTEST_CURRENT_TEST" not in os.environ


def run_cell(shell: SetupShell, source: str) -> tuple[list[Output], BaseException | None]:
    """Run one cell: its outputs, and what it raised (None if it ran to its end)."""
    recorder = shell.recorder
    recorder.start_cell()
    saved = sys.stdout, sys.stderr
    descriptors = {}
    for fd, name in _WATCHED if _watches_descriptors() else ():
        file = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        descriptors[name] = (file, os.dup(fd))
        os.dup2(file.fileno(), fd)
    recorder.descriptor_files = {name: file for name, (file, _) in descriptors.items()}
    recorder.descriptor_read = dict.fromkeys(_STREAMS, 0)
    sys.stdout, sys.stderr = _Stream("stdout", recorder), _Stream("stderr", recorder)
    try:
        result = shell.run_cell(source, store_history=True, silent=False)
    finally:
        sys.stdout, sys.stderr = saved
        recorder.flush_streams()
        recorder.descriptor_files = {}
        for fd, name in _WATCHED if descriptors else ():
            file, original = descriptors[name]
            os.dup2(original, fd)
            os.close(original)
            file.close()
    error = result.error_before_exec or result.error_in_exec
    return recorder.outputs, error
