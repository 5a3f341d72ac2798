"""KernelSupply without kernels: the notebook read once per change of the file, and a supply
with warm kernels off hands out none."""

import asyncio
from pathlib import Path

import nbformat

from nbsweep.kernel.preload import Preload
from nbsweep.kernel.supply import FORKED_WARM_UP_AFTER, WARM_UP_AFTER, KernelSupply
from nbsweep.options import TrialSettings


def _write(path: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbformat.write(nb, path)
    return path


def _supply(warm: bool = False) -> KernelSupply:
    said: list[str] = []
    return KernelSupply(
        TrialSettings(),
        Preload(),
        warm=warm,
        kernel_start="exec",
        warn=said.append,
        warn_once=said.append,
    )


def test_the_notebook_is_read_again_only_when_it_changes(tmp_path):
    notebook = _write(tmp_path / "nb.ipynb", "x = 1")
    supply = _supply()
    nb, recipe = supply.read(notebook)
    assert supply.read(notebook)[0] is nb
    assert recipe.cwd == tmp_path.resolve()
    _write(notebook, "x = 22  # another size")
    again, _ = supply.read(notebook)
    assert again is not nb and "x = 22" in again.cells[0].source


def test_with_warm_kernels_off_none_is_started_or_handed_out(tmp_path):
    notebook = _write(tmp_path / "nb.ipynb", "x = 1")
    supply = _supply(warm=False)
    supply.warm_up(notebook)
    assert supply.ready() is None
    assert asyncio.run(supply.take(notebook)) is None
    assert supply.warm_up_delay == WARM_UP_AFTER != FORKED_WARM_UP_AFTER
    asyncio.run(supply.wind_down())
