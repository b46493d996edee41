"""Entry point of ``python app ...`` (the MONAI Deploy app folder convention) and of the ``spine-seg`` command."""
import atexit
import importlib
import os
import resource
import sys
import threading
from typing import NoReturn

# Holoscan asks for a stack of at least 32 MiB (below that it warns that its threads may crash). glibc sizes
# the stacks of new threads from RLIMIT_STACK as the process starts, so setting the limit later is not
# enough: raise the soft limit (where the hard limit allows) and start this same command once more.
HOLOSCAN_STACK = 32 * 1024 * 1024


def _raise_stack_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= HOLOSCAN_STACK:
        return
    if hard != resource.RLIM_INFINITY and hard < HOLOSCAN_STACK:
        return          # Holoscan's own warning then says how to raise it (`ulimit -s`, `--ulimit stack=`)
    resource.setrlimit(resource.RLIMIT_STACK, (HOLOSCAN_STACK, hard))
    if resource.getrlimit(resource.RLIMIT_STACK)[0] >= HOLOSCAN_STACK:   # so the new process returns above
        try:
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        except (OSError, ValueError) as exc:    # e.g. the interpreter's path is not reachable by this user
            # Go on without it, the limit put back as it was: Holoscan then warns about its stack itself.
            resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
            print(f"spineseg: could not restart with a {HOLOSCAN_STACK >> 20} MiB stack limit "
                  f"({type(exc).__name__}: {exc}); going on with {soft >> 20} MiB", file=sys.stderr)


def _leave(code: int) -> NoReturn:
    """End the process with ``code``, its work done, without the interpreter's teardown of every module.

    Tearing down what a run has loaded (torch, OpenVINO, nnU-Net, their C++ objects and some million Python
    objects) took 1.2-1.4 s of every run on 2 cores, after report.json and every result were written and
    closed (atomically, spineseg.outputs.atomic). What an ordinary exit does that matters still happens, in
    its order: a non-daemon thread still running is waited for (then it is the ordinary exit), the exit
    handlers run (logging's flush and close, multiprocessing's and temporary folders' clean-up, any
    library's), and the standard streams are flushed.
    """
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if any(t.is_alive() for t in others) or run_exit_handlers is None:
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):     # closed, or a broken pipe: as the ordinary exit
            pass
    os._exit(code)


def run() -> NoReturn:
    """The app, after the stack limit is raised (before Holoscan or torch is imported, so a restart is cheap);
    the process then ends with the app's exit status (:func:`_leave`).

    ``python app`` runs this file with this folder first on sys.path, so its app.py is the top-level module
    ``app`` (no sys.path edit needed, in a checkout or in the MAP image's /opt/holoscan/app); the installed
    ``spine-seg`` command imports this file as ``app.__main__`` of the package ``app``.
    """
    _raise_stack_limit()
    # the app's imports (pydicom, scipy, nibabel: some 100,000 lasting objects, no garbage) without the cyclic
    # collector walking them, then out of its way, as the models' load is (spineseg.collection)
    from spineseg.collection import collection_paused
    with collection_paused():
        app = importlib.import_module("app.app" if __package__ else "app")
    _leave(app.main())


if __name__ == "__main__":
    run()
