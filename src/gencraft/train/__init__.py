"""gencraft.train: the training loop, configs and presets, checkpoints, evaluation, run directories.

The public call is ``gencraft.train(dataset, ...)`` (:func:`gencraft.train.loop.train`). Because this
package has the same name, ``import gencraft.train.anything`` makes ``gencraft.train`` this module;
so the module itself is callable and forwards to the function, and ``gencraft.train(...)`` works
whichever of the two the name is bound to.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from gencraft.train.loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
