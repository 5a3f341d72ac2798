"""Keep secrets (API keys, tokens, passwords from the environment) out of saved notebooks
and of what nbsweep prints."""

from __future__ import annotations

import re
from collections.abc import Mapping

from nbformat import NotebookNode

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
_MIN_SECRET_LENGTH = 8
MASK = "***"


class Redactor:
    """Replaces every occurrence of known secret values with ``***``."""

    def __init__(self, secrets: set[str]) -> None:
        ordered = sorted((s for s in secrets if len(s) >= _MIN_SECRET_LENGTH), key=len)
        self._pattern = (
            re.compile("|".join(re.escape(s) for s in reversed(ordered))) if ordered else None
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        return cls({value for name, value in environ.items() if _SECRET_NAME.search(name)})

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern and text else text

    def notebook(self, nb: NotebookNode) -> None:
        """Redact every cell's source and text outputs, in place."""
        if self._pattern is None:
            return
        for cell in nb.cells:
            cell.source = self.text(cell.source)
            for output in cell.get("outputs", []):
                self._output(output)

    def _output(self, output: NotebookNode) -> None:
        if "text" in output:
            output.text = self.text(output.text)
        if "evalue" in output:
            output.evalue = self.text(output.evalue)
            output.traceback = [self.text(line) for line in output.get("traceback", [])]
        for mime, value in output.get("data", {}).items():
            if isinstance(value, str) and (mime.startswith("text/") or mime.endswith("json")):
                output.data[mime] = self.text(value)
