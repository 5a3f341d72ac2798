"""Keep secrets (API keys, tokens, passwords from the environment) out of saved notebooks
and of what nbsweep prints.

A secret is the value of an environment variable whose name says it is one (KEY, TOKEN,
SECRET, PASSWORD, CREDENTIAL), or the password in a URL-valued variable (``NBSWEEP_STORE``,
``DATABASE_URL``), as written and percent-decoded. Only values of at least
``MIN_SECRET_LENGTH`` characters count: shorter ones would mask ordinary text. Only the
literal text is matched: an encoded form (base64, URL-encoding of a plain secret, hex) is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar, cast
from urllib.parse import unquote

if TYPE_CHECKING:
    from nbformat import NotebookNode


V = TypeVar("V")

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
_PASSWORD_PARAMETER = re.compile(r"(?i)password=([^&\s]*)")
MIN_SECRET_LENGTH = 8
MASK = "***"


def url_passwords(url: str) -> list[str]:
    """The password in ``url``'s credentials and in any password= parameter.

    Read from the raw text, not a URL parser: a password with an unencoded ``#``, ``?``,
    ``/`` or ``@`` would make a parser find no password at all."""
    found = []
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials = rest.rsplit("@", 1)[0]
        if ":" in credentials:
            found.append(credentials.split(":", 1)[1])
    found += _PASSWORD_PARAMETER.findall(url)
    return [secret for secret in found if secret]


class Redactor:
    """Replaces every occurrence of known secret values with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        # Longest first: a secret that contains another is masked whole.
        self._pattern = re.compile("|".join(map(re.escape, self.secrets))) if self.secrets else None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Redactor:
        secrets = {value for name, value in environ.items() if _SECRET_NAME.search(name)}
        for value in environ.values():
            for password in url_passwords(value):
                secrets |= {password, unquote(password)}
        return cls(secrets)

    def text(self, text: str) -> str:
        # `in` is a fast scan; the regex is slower by ten on megabytes of output.
        if self._pattern is None or not any(secret in text for secret in self.secrets):
            return text
        return self._pattern.sub(MASK, text)

    def value(self, value: V) -> V:
        """``value`` with every string in it redacted, dict keys and nested values too."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return cast(V, self.text(value))
        if isinstance(value, dict):
            return cast(V, type(value)((self.value(k), self.value(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return cast(V, type(value)(self.value(item) for item in value))
        return value

    def stream(self) -> StreamRedactor:
        """A redactor for text that arrives in pieces (one stream of one cell)."""
        return StreamRedactor(self)

    def notebook(self, nb: NotebookNode) -> None:
        """Redact every cell's source, metadata and outputs (every MIME type), in place."""
        if self._pattern is None:
            return
        nb.metadata = self.value(nb.metadata)
        for cell in nb.cells:
            for key in ("source", "metadata", "outputs", "attachments"):
                if key in cell:
                    cell[key] = self.value(cell[key])


class StreamRedactor:
    """Redacts a stream fed in pieces (a secret printed one character per flush): holds back
    the end of what it was fed while that end could be the start of a secret."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._held = ""

    def feed(self, text: str) -> str:
        """What of the stream so far can be shown now, redacted."""
        redactor = self.redactor
        if redactor._pattern is None:
            return text
        text = self._held + text
        shown, start = [], 0
        if any(secret in text for secret in redactor.secrets):
            for match in redactor._pattern.finditer(text):
                shown += [text[start : match.start()], MASK]
                start = match.end()
        held = self._pending(text, start)
        self._held = text[held:]
        if not shown:
            return text[:held]  # the whole of a huge piece is that piece, not a copy
        return "".join([*shown, text[start:held]])

    def flush(self) -> str:
        """The rest: the stream has ended (or another output comes between)."""
        held, self._held = self._held, ""
        return held

    def _pending(self, text: str, start: int) -> int:
        """Where the longest end of ``text`` (from ``start`` on) that begins a secret starts;
        ``len(text)`` where none does."""
        longest = len(self.redactor.secrets[0])
        for at in range(max(start, len(text) - longest + 1), len(text)):
            end = text[at:]
            if any(secret.startswith(end) for secret in self.redactor.secrets):
                return at
        return len(text)
