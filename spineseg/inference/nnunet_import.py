"""nnU-Net's predictor module without ``torch._dynamo``, which it imports for one ``isinstance`` test.

``nnunetv2/inference/predict_from_raw_data.py`` (nnunetv2 2.8.1, line 19) does ``from torch._dynamo import
OptimizedModule`` and uses the class only to ask whether its network was made by ``torch.compile``
(``isinstance(self.network, OptimizedModule)``: lines 140, 162, 164, 516). Importing ``torch._dynamo`` costs
about 0.8-1 s of every run's model load on this machine; the app never compiles a network.

:func:`predictor_module` imports the predictor module with :class:`OptimizedModuleTest` standing in for that
class. It answers ``isinstance`` exactly as the real class would: an ``OptimizedModule`` exists only after
``torch._dynamo`` has been imported (``torch.compile`` imports it), so with no ``torch._dynamo`` loaded the
answer is False, and once it is loaded the question goes to the real class. Nothing else of the module
changes. ``totalspineseg`` imports the same module (``totalspineseg.utils.predict_nnunet``), so
:func:`totalspineseg` imports it through here first.
"""
from __future__ import annotations

import importlib
import sys
import types

PREDICTOR = "nnunetv2.inference.predict_from_raw_data"
DYNAMO = "torch._dynamo"


class _DeferredInstanceCheck(type):
    def __instancecheck__(cls, obj) -> bool:
        dynamo = sys.modules.get(DYNAMO)
        if dynamo is None or isinstance(dynamo, _Placeholder):
            return False          # no torch._dynamo, so no torch.compile'd module can exist
        return isinstance(obj, dynamo.OptimizedModule)


class OptimizedModuleTest(metaclass=_DeferredInstanceCheck):
    """``isinstance(x, OptimizedModuleTest)`` is ``isinstance(x, torch._dynamo.OptimizedModule)``, without
    importing ``torch._dynamo``."""


class _Placeholder(types.ModuleType):
    """``torch._dynamo`` as the predictor module's import sees it, for the length of that import only."""


def predictor_module() -> types.ModuleType:
    """``nnunetv2.inference.predict_from_raw_data``, imported without ``torch._dynamo`` where that is not
    loaded already (then it is the plain import)."""
    if PREDICTOR in sys.modules or DYNAMO in sys.modules:
        return importlib.import_module(PREDICTOR)
    import torch  # noqa: F401  (the real torch first: only its _dynamo is held back)
    placeholder = _Placeholder(DYNAMO)
    placeholder.OptimizedModule = OptimizedModuleTest
    sys.modules[DYNAMO] = placeholder
    try:
        return importlib.import_module(PREDICTOR)
    finally:
        if sys.modules.get(DYNAMO) is placeholder:
            del sys.modules[DYNAMO]   # a later ``import torch._dynamo`` (torch.compile, tracing) gets the real one


def totalspineseg() -> types.ModuleType:
    """The ``totalspineseg`` package, its nnU-Net predictor import going through :func:`predictor_module`."""
    if "totalspineseg" not in sys.modules:
        predictor_module()
    return importlib.import_module("totalspineseg")
