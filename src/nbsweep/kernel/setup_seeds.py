"""Random state across the fork: each trial sees the state a fresh kernel running the whole
notebook would see.

While the setup runs, the seeding calls are wrapped to learn which global generators the
setup seeded: Python's ``random`` (``seed``, ``setstate``), numpy's legacy global generator
(``numpy.random.seed``, ``set_state``) and torch's default one (``manual_seed``,
``set_rng_state``, in ``torch`` and ``torch.random``), in modules loaded before or during
the setup. A seeded generator is put back in each trial exactly as the setup left it; one
never seeded is reseeded from entropy in each trial, as every fresh process is. Generators
made in the setup without a seed (``random.Random()``, ``numpy.random.default_rng()``) are
reseeded too. Made with a seed, they are copied by the fork as a fresh kernel would have
made them.

Two things a fork cannot give back are reported instead: data the setup drew from an
unseeded generator is the same in every trial (fresh kernels would each draw their own),
and the string hash seed is the template's in every trial.

Loaded by the template from this file (see ``kernel/setup_shell.py``): standard library only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import random
import sys
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_NUMPY_RNG = "numpy.random.default_rng()"
_Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


class SeedTracker:
    """``install`` before the setup, ``uninstall`` after it; ``in_child`` in each trial,
    just before its first cell."""

    def __init__(self) -> None:
        self.seeded: dict[str, str] = {}
        """Generator ("random", "numpy", "torch") -> the call that seeded it."""
        self.unseeded_objects: list[tuple[Callable[[], object], str]] = []
        self.before: dict[str, object] = {}
        self.after: dict[str, object] = {}
        self.random_state: object = None
        self._undo: list[tuple[object, str, object]] = []
        self._hook: _AfterImport | None = None

    def install(self) -> None:
        self._patch_random()
        if "numpy.random" in sys.modules:
            self._patch_numpy()
        if "torch" in sys.modules:
            self._patch_torch()
        self.before.update(_states())
        self._hook = _AfterImport({"numpy.random": self._patch_numpy, "torch": self._patch_torch})
        sys.meta_path.insert(0, self._hook)

    def uninstall(self) -> None:
        if self._hook in sys.meta_path:
            sys.meta_path.remove(self._hook)
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()
        self.after = _states()
        self.random_state = random.getstate()

    def drawn_unseeded(self) -> list[str]:
        """Global generators the setup drew from without seeding them."""
        return [
            name
            for name, state in self.after.items()
            if name not in self.seeded and name in self.before and self.before[name] != state
        ]

    def in_child(self) -> None:
        """Python's ``random`` reseeds itself in every fork child, and the kernel's own start
        draws from it: a seeded state is put back here. Every other generator the setup did
        not seed is reseeded from entropy."""
        if "random" in self.seeded:
            random.setstate(self.random_state)  # type: ignore[arg-type]
        numpy = sys.modules.get("numpy")
        if numpy is not None and "numpy" not in self.seeded:
            numpy.random.seed()
        torch = sys.modules.get("torch")
        if torch is not None and "torch" not in self.seeded:
            torch.seed()  # CUDA's generators too, lazily: it does not initialise CUDA
        for reference, how in self.unseeded_objects:
            generator = reference()
            if isinstance(generator, random.Random):
                generator.seed()
            elif generator is not None and how == _NUMPY_RNG:
                bits = generator.bit_generator  # type: ignore[attr-defined]
                bits.state = type(bits)().state

    def _wrap(self, owner: object, name: str, wrapper: _Wrapper) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, wrapper(original))

    def _seeder(self, generator: str, seed_at: int = 0) -> _Wrapper:
        def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
            def seeding(*args: Any, **kwargs: Any) -> Any:
                given = args[seed_at] if len(args) > seed_at else next(iter(kwargs.values()), None)
                if given is None:  # seed(None): from entropy, as if never seeded
                    self.seeded.pop(generator, None)
                else:
                    self.seeded[generator] = getattr(original, "__qualname__", generator)
                return original(*args, **kwargs)

            return seeding

        return wrap

    def _patch_random(self) -> None:
        self._wrap(random, "seed", self._seeder("random"))
        self._wrap(random, "setstate", self._seeder("random"))
        tracker = self

        def wrap_init(original: Callable[..., None]) -> Callable[..., None]:
            def __init__(generator: random.Random, x: object = None) -> None:
                original(generator, x)
                if x is None and type(generator) is not random.SystemRandom:
                    tracker._track(generator, "random.Random()")

            return __init__

        self._wrap(random.Random, "__init__", wrap_init)

    def _patch_numpy(self) -> None:
        numpy_random = sys.modules["numpy.random"]
        if any(owner is numpy_random for owner, _, _ in self._undo):
            return
        # numpy's own __init__ may still be running: read the state through numpy.random.
        self.before.setdefault("numpy", _numpy_state(numpy_random))
        self._wrap(numpy_random, "seed", self._seeder("numpy"))
        self._wrap(numpy_random, "set_state", self._seeder("numpy"))
        tracker = self

        def wrap_rng(original: Callable[..., Any]) -> Callable[..., Any]:
            def default_rng(seed: object = None) -> Any:
                generator = original(seed)
                if seed is None:
                    tracker._track(generator, _NUMPY_RNG)
                return generator

            return default_rng

        self._wrap(numpy_random, "default_rng", wrap_rng)

    def _patch_torch(self) -> None:
        torch = sys.modules["torch"]
        if any(owner is torch for owner, _, _ in self._undo):
            return
        self.before.setdefault("torch", _torch_state(torch))
        for module in (torch, torch.random):
            self._wrap(module, "manual_seed", self._seeder("torch"))
            self._wrap(module, "set_rng_state", self._seeder("torch"))

    def _track(self, generator: object, how: str) -> None:
        try:
            self.unseeded_objects.append((weakref.ref(generator), how))
        except TypeError:
            self.unseeded_objects.append(((lambda: generator), how))


def _states() -> dict[str, object]:
    states: dict[str, object] = {"random": random.getstate()}
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None and hasattr(numpy_random, "get_state"):
        states["numpy"] = _numpy_state(numpy_random)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        states["torch"] = _torch_state(torch)
    return states


def _numpy_state(numpy_random: ModuleType) -> object:
    state = numpy_random.get_state()
    return (state[1].tobytes(), state[2])


def _torch_state(torch: ModuleType) -> object:
    return bytes(torch.get_rng_state().numpy().tobytes())


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls a function once a module has been executed: patches the generators of modules
    the setup itself imports."""

    def __init__(self, callbacks: dict[str, Callable[[], None]]) -> None:
        self.callbacks = callbacks

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def execute_then_patch(module: ModuleType) -> None:
            execute(module)
            callback()

        loader.exec_module = execute_then_patch  # type: ignore[method-assign]
        return spec
