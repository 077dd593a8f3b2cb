"""Import paths of the flat layout before 0.2, kept for one release with a DeprecationWarning.

``import restlit.train`` (or ``from restlit.module import RestModule``) still works and gives the
module at its new place (:data:`MOVED`); the old names go in the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

# old module -> its new place
MOVED = {
    "restlit.train": "restlit.training.run",
    "restlit.module": "restlit.training.module",
    "restlit.data": "restlit.training.data",
    "restlit.curriculum": "restlit.training.curriculum",
    "restlit.sft": "restlit.training.sft",
    "restlit.optim": "restlit.training.optim",
    "restlit.distributed": "restlit.training.distributed",
    "restlit.checkpointing": "restlit.training.checkpointing",
    "restlit.loggers": "restlit.training.loggers",
    "restlit.attention": "restlit.kernels.attention",
    "restlit.kvcache": "restlit.kernels.kvcache",
    "restlit.packed": "restlit.kernels.packed",
    "restlit.decoding": "restlit.kernels.decoding",
    "restlit.memory": "restlit.kernels.memory",
    "restlit.ablation": "restlit.experiments.ablation",
    "restlit.variance": "restlit.experiments.variance",
    "restlit.demo": "restlit.experiments.demo",
    "restlit.stats": "restlit.stats",
    "restlit.outputs": "restlit.runtime.outputs",
    "restlit.quiet": "restlit.runtime.quiet",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old name of :data:`MOVED` and loads it as the module at its new place."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old import goes in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new place is already imported."""


def install() -> None:
    """Add the alias finder to ``sys.meta_path`` once (after the regular finders)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
