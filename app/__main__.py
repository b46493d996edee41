"""Entry point of ``python app ...`` (the MONAI Deploy app folder convention) and of the ``spine-seg`` command."""
import importlib
import os
import resource
import sys

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


def run() -> int:
    """The app, after the stack limit is raised (before Holoscan or torch is imported, so a restart is cheap).

    ``python app`` runs this file with this folder first on sys.path, so its app.py is the top-level module
    ``app`` (no sys.path edit needed, in a checkout or in the MAP image's /opt/holoscan/app); the installed
    ``spine-seg`` command imports this file as ``app.__main__`` of the package ``app``.
    """
    _raise_stack_limit()
    return importlib.import_module("app.app" if __package__ else "app").main()


if __name__ == "__main__":
    sys.exit(run())
