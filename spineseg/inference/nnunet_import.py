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

Two libraries the predictor module's imports pull in are never used on the app's path (in-memory arrays, no
remote or segmentation-map resampling): ``pandas`` (nnU-Net's resampling, for ``pd.unique`` of a segmentation
resampled with separate z) and ``httpx`` (blosc2's remote tables, through acvl_utils' bounding boxes), with
``rich`` and ``pygments``, about 0.35 s of every run. :func:`predictor_module` imports them *deferred*
(:class:`Deferred`): the module object is in ``sys.modules`` and bound where it is imported, and runs its code
the first time any attribute other than its import-system ones (``__file__``, ``__spec__``, ...) is read, so
any use finds the real module, the same object, as an ordinary import would have made it.

:func:`utilities` gives the app the few totalspineseg functions it runs (``UTILITIES``) without the package's
``__init__``, which imports every one of its commands: its ``augment`` alone pulls in ``gryds`` (and with it
``cupy``), ``scipy.stats`` and ``torchio``'s datasets, about 0.6 s of every run that no step uses.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import threading
import types
from functools import cache

PREDICTOR = "nnunetv2.inference.predict_from_raw_data"
DYNAMO = "torch._dynamo"
DEFERRED = ("pandas", "httpx")       # imported by the predictor module's imports, unused on the app's path


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


class Deferred(types.ModuleType):
    """A module imported, but whose code runs the first time one of its attributes is read (as
    ``importlib.util.LazyLoader``'s, which however runs it for any attribute at all: ``inspect.getmodule``,
    which torch calls as it registers operators, reads ``__file__`` of every module in ``sys.modules``). The
    attributes the import system sets are read without running it; the first other read runs it, once, into
    this same object, which is then an ordinary module."""

    _IMPORT_SYSTEM = frozenset({"__name__", "__file__", "__spec__", "__loader__", "__path__", "__package__",
                                "__cached__", "__dict__", "__class__", "__doc__"})
    _lock = threading.RLock()

    def __getattribute__(self, attr):
        if attr not in Deferred._IMPORT_SYSTEM:
            with Deferred._lock:
                namespace = object.__getattribute__(self, "__dict__")
                loader = namespace.pop("_deferred_loader", None)
                if loader is not None:
                    try:
                        loader.exec_module(self)
                    except BaseException:
                        namespace["_deferred_loader"] = loader       # its error again at the next use
                        raise
                    object.__setattr__(self, "__class__", types.ModuleType)
        return object.__getattribute__(self, attr)


def defer_import(name: str) -> None:
    """Put ``name`` in ``sys.modules`` as a :class:`Deferred` module, where it is not imported yet and exists."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return                          # not installed: its import fails where it is made, as ever
    module = importlib.util.module_from_spec(spec)
    module.__dict__["_deferred_loader"] = spec.loader
    module.__class__ = Deferred
    sys.modules[name] = module


def predictor_module() -> types.ModuleType:
    """``nnunetv2.inference.predict_from_raw_data``, imported without ``torch._dynamo`` where that is not
    loaded already (then it is the plain import)."""
    if PREDICTOR in sys.modules or DYNAMO in sys.modules:
        return importlib.import_module(PREDICTOR)
    import torch  # noqa: F401  (the real torch first: only its _dynamo is held back)
    for name in DEFERRED:
        defer_import(name)
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


# what nnU-Net 2.8.1's nnUNetPredictor.__init__ prints to stdout for any device but CUDA, whatever
# perform_everything_on_device says (predict_from_raw_data.py, line 63)
CPU_NOTICE = "perform_everything_on_device=True is only supported for cuda devices! Setting this to False"


def new_predictor(**kwargs):
    """``nnUNetPredictor(**kwargs)``, without the line CPU_NOTICE (in a hospital's log it reads like an error, and
    the app asks for perform_everything_on_device=False on a CPU anyway); anything else it prints is passed on."""
    cls = predictor_module().nnUNetPredictor
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        predictor = cls(**kwargs)
    rest = [line for line in printed.getvalue().splitlines(keepends=True) if line.rstrip("\n") != CPU_NOTICE]
    if rest:
        sys.stdout.write("".join(rest))
    return predictor


PACKAGE = "totalspineseg"
# the modules of totalspineseg.utils whose same-named functions the app's pipeline runs
UTILITIES = ("crop_image2seg", "extract_alternate", "fill_canal", "iterative_label", "largest_component", "resample",
             "transform_seg2image")


def utility_module(name: str) -> types.ModuleType:
    """``totalspineseg.utils.<name>``, imported without running ``totalspineseg/__init__.py`` where the package
    is not imported yet (its modules import nothing of the package; their code and names are the package's
    own, so a later ``import totalspineseg`` takes these very modules)."""
    full = f"{PACKAGE}.utils.{name}"
    if full in sys.modules or PACKAGE in sys.modules:
        return importlib.import_module(full)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {PACKAGE!r}", name=PACKAGE)
    package = importlib.util.module_from_spec(spec)     # its __path__, without its __init__ run
    sys.modules[PACKAGE] = package
    try:
        return importlib.import_module(full)
    finally:
        # the real package, imported later, runs its __init__ (and makes its own totalspineseg.utils)
        if sys.modules.get(PACKAGE) is package:
            del sys.modules[PACKAGE]
        sys.modules.pop(f"{PACKAGE}.utils", None)


@cache
def utilities() -> types.SimpleNamespace:
    """The totalspineseg functions the pipeline runs (``UTILITIES``: ``utilities().resample`` is
    ``totalspineseg.resample``), without importing the rest of the package (module doc)."""
    return types.SimpleNamespace(**{name: getattr(utility_module(name), name) for name in UTILITIES})
