"""Which modules a warm kernel imports before its trial (``--preload``), and the code that
does it, so that a trial's imports are paid while the previous trial runs.

``auto`` takes the notebook's leading imports: the ``import`` statements of its first code
cells, up to the first statement that is anything else. Preloading binds no names in the
notebook's namespace (the notebook's own ``import`` still runs, and finds the module
loaded), and a module that fails to import is skipped: the notebook's own import then
raises in the trial, as it would have.
"""

from __future__ import annotations

import ast
import copy
import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING

from nbsweep.errors import UsageError
from nbsweep.notebook.install_cells import skip_install_lines
from nbsweep.notebook.parameters import parse_leniently

if TYPE_CHECKING:
    from nbformat import NotebookNode

AUTO = "auto"
NONE = "none"

FIRST_USE: dict[str, tuple[str, ...]] = {
    "wandb": ("wandb.sdk.lib.gitlib", "wandb.sdk.launch", "yaml"),
}
"""Modules a module imports the first time it is used, not when it is imported: a fresh
kernel's first ``wandb.init`` imports these (about a hundred modules). A preload of the
module loads them too, so that every kernel forked from the template finds them loaded.
Importing them starts no thread and opens nothing; a name a version lacks is skipped."""


def first_use(modules: tuple[str, ...]) -> tuple[str, ...]:
    """``modules``, then what ``FIRST_USE`` adds for them."""
    added = [extra for name in modules for extra in FIRST_USE.get(name.split(".")[0], ())]
    return tuple(dict.fromkeys([*modules, *added]))


@dataclass(frozen=True)
class Preload:
    """What ``--preload`` and ``--preload-cuda`` asked for."""

    mode: str = AUTO
    """auto, none, or explicit (``modules`` names them)."""
    modules: tuple[str, ...] = ()
    cuda: bool = False

    @classmethod
    def parse(cls, option: str, cuda: bool = False) -> Preload:
        """``auto``, ``none``, or comma-separated module names."""
        text = option.strip()
        if text.lower() in (AUTO, NONE):
            return cls(text.lower(), (), cuda)
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        bad = [name for name in names if not all(p.isidentifier() for p in name.split("."))]
        if bad or not names:
            shown = repr(bad[0]) if bad else repr(option)
            raise UsageError(
                f"--preload {shown} is not a module name: pass auto, none, or modules "
                "separated by commas (numpy,torch)"
            )
        return cls("explicit", names, cuda)

    def modules_for(
        self, nb: NotebookNode, folder: Path, *, installs_run: bool = False
    ) -> tuple[str, ...]:
        """``installs_run``: the trial runs the notebook's install lines; else they are
        skipped there, so they do not stop the leading imports here either (W&B's
        tutorials start with `!pip install wandb` and `import wandb`)."""
        if self.mode == NONE:
            return ()
        if self.mode == AUTO:
            if not installs_run:
                nb = copy.deepcopy(nb)
                skip_install_lines(nb)
            return leading_imports(nb, folder)
        return self.modules

    def code(self, modules: tuple[str, ...]) -> str | None:
        """Python that imports ``modules`` (and initialises CUDA) without binding names."""
        if not modules and not self.cuda:
            return None
        body = _IMPORT_QUIETLY.format(modules=repr(first_use(modules)), cuda=self.cuda)
        # exec in a dict of its own: the notebook's namespace stays as a fresh kernel's.
        return f"exec({body!r}, {{}})"


_IMPORT_QUIETLY = """\
import importlib
for name in {modules}:
    try:
        importlib.import_module(name)
    except BaseException:
        pass
if {cuda}:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.init()
            torch.empty(1, device="cuda")
    except BaseException:
        pass
"""


def leading_imports(nb: NotebookNode, folder: Path) -> tuple[str, ...]:
    """The modules the notebook's leading ``import`` statements load.

    Stops at the first statement that is not an import (or docstring), and at any line that
    is not Python (``!pip install`` may install what the next line imports). Leaves out
    relative imports and modules that live in ``folder``: the user's own code, which may
    change between one trial and the next.
    """
    modules: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        module, parsed = parse_leniently(cell.source)
        if parsed != cell.source:
            break
        for statement in module.body:
            names = _imported(statement)
            if names is None:
                return _without_local(modules, folder)
            modules.extend(name for name in names if name not in modules)
    return _without_local(modules, folder)


def _imported(statement: ast.stmt) -> list[str] | None:
    """Modules a statement imports; None if it is not an import."""
    if isinstance(statement, ast.Import):
        return [alias.name for alias in statement.names]
    if isinstance(statement, ast.ImportFrom):
        if statement.level or not statement.module or statement.module == "__future__":
            return []
        # `from a import b` may name a submodule: try it too (a miss is skipped).
        submodules = [f"{statement.module}.{a.name}" for a in statement.names if a.name != "*"]
        return [statement.module, *submodules]
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return []
    return None


def _without_local(modules: list[str], folder: Path) -> tuple[str, ...]:
    return tuple(name for name in modules if not _is_users_own(name, folder))


def _is_users_own(name: str, folder: Path) -> bool:
    """Whether the kernel (its cwd first on ``sys.path``) would import ``name`` from
    ``folder``: a module or a package with ``__init__.py`` there. A folder without one is
    only a namespace portion, which Python passes over for a real module found later on
    the path: wandb's own ``wandb/`` run folder beside a notebook is not the user's wandb."""
    top = name.split(".")[0]
    spec = PathFinder.find_spec(top, [str(folder)])
    if spec is None:
        return False
    if spec.loader is not None and spec.origin is not None:
        return True
    elsewhere = [entry for entry in sys.path if entry and Path(entry) != folder]
    found = PathFinder.find_spec(top, elsewhere)
    return found is None or found.origin is None
