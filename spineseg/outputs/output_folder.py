"""Ownership of the output folder for one run: a lock, a clean start, and a report on interruption.

Two runs writing one folder would mix one run's report with the other's SEG, and a run that dies
leaves the previous run's "succeeded" report beside its own partial results. So a run (or a
re-send) first takes an exclusive ``flock`` on ``.spineseg.lock`` (a second run fails at once with
OUTPUT_BUSY and writes its report under another name), then moves the previous run's results into
``.previous-run/`` and deletes leftover ``.partial`` files, and writes a "running" report, so
that nothing stale can pass for this run's result. SIGTERM/SIGINT raise :class:`Interrupted`, so
the run still ends with a report (INTERRUPTED).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from spineseg.errors import OutputError, SpineSegError, output_error

log = logging.getLogger("spineseg")
LOCK_NAME = ".spineseg.lock"
PREVIOUS = ".previous-run"
SERIES_RESULTS = "series*_*"                # every per-series output: SEG, labels, SR, picture, ...
RESULTS = ("report.json", "report.refused-*.json", SERIES_RESULTS)


class Interrupted(SpineSegError):
    """The run was stopped by a signal before it finished (exit 4)."""


def _open_lock_file(path: Path) -> int:
    """The lock file, opened without following a link. A link planted under its name (symbolic, or a hard
    link to a file elsewhere) is removed and a file of our own made in its place: the run writes its PID
    into the lock, and must never write it through a link into someone else's file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK   # a FIFO never blocks
    for _ in range(3):                        # bounded: someone may keep planting links
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:      # ELOOP: the name is a symbolic link
                raise
        else:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                return fd
            os.close(fd)
        log.warning("%s was a link or not a regular file; replaced by a lock file of this run's own", path.name)
        path.unlink()
    raise OSError(errno.ELOOP, f"{path.name} keeps being replaced by a link", str(path))


@contextmanager
def lock_output(folder: Path):
    """Hold the folder's lock for the ``with`` block; OUTPUT_BUSY when another process holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_lock_file(folder / LOCK_NAME)
    except OSError as exc:
        raise output_error(folder, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise OutputError("OUTPUT_BUSY", f"Another spine-seg run (process {holder}) is using the output folder "
                              f"{folder}; wait for it to end or give this run its own folder.",
                              path=str(folder)) from None
        except OSError as exc:        # a file system without locks (some NFS mounts): run, but say so
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise output_error(folder, exc) from exc
            log.warning("the output folder's file system does not support locks (%s); nothing stops a second "
                        "run from using %s at the same time", exc.strerror, folder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)                  # closing releases the lock


def clear_previous(folder: Path) -> dict:
    """Move the previous run's results aside (replacing the run before it) and delete partial files;
    check that the folder takes a new file. Returns what was done, for the report."""
    folder = Path(folder)
    try:
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe.", suffix=".partial")
        probe.close()
        partial = [p for p in folder.glob(".*.partial") if p.is_file() and not p.is_symlink()]
        for p in partial:
            p.unlink()
        old = sorted({p for pattern in RESULTS for p in folder.glob(pattern) if p.is_file() or p.is_symlink()})
        if old:
            aside = folder / PREVIOUS
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside)
            elif aside.exists() or aside.is_symlink():
                aside.unlink()
            aside.mkdir()
            for p in old:
                os.replace(p, aside / p.name)
    except OSError as exc:
        raise output_error(folder, exc) from exc
    return {"previous_results_moved_to": PREVIOUS if old else None, "previous_results": [p.name for p in old],
            "partial_files_removed": len(partial)}


def write_running(folder: Path, started: str) -> None:
    """A report that says the run is in progress: if the process is killed outright, this is what
    remains, never the previous run's result."""
    from spineseg.outputs.atomic import write_json_atomic
    from spineseg.report import REPORT_NAME
    write_json_atomic(Path(folder) / REPORT_NAME, {"status": "running", "exit_code": None, "pid": os.getpid(),
                                                   "started": started, "error": None}, result=False)


def discard_results(folder: Path, reason: SpineSegError) -> list[str]:
    """An interrupted run's results, removed: whichever moment the signal came, a series may have its SEG
    and not yet its SR, or an SR that references a SEG not yet renamed into place. With the result gate
    shut (no writer, in any thread, can place a file after this), every result file in the folder is this
    run's (the previous run's were moved aside when it started) and is removed, with any temporary file.
    Returns the names removed, for the report."""
    from spineseg.outputs.atomic import close_results
    folder = Path(folder)
    removed = []
    with close_results(reason):
        for p in sorted(set(folder.glob(SERIES_RESULTS)) | set(folder.glob(".*.partial"))):
            if p.is_file() or p.is_symlink():
                try:
                    p.unlink()
                except FileNotFoundError:     # a writer's own clean-up removed its temporary file first
                    continue
                if not p.name.endswith(".partial"):
                    removed.append(p.name)
    return removed


class SignalGuard:
    """While active, SIGTERM and SIGINT raise :class:`Interrupted` in the main thread; ``signal``
    keeps the signal number even when a framework swallowed the exception. Once the run's work is done
    (``disarm``), a signal is only noted: the finished result stands."""

    def __init__(self):
        self.signal: int | None = None
        self.armed = True
        self._old: dict = {}
        self._installed = threading.Condition()
        self._installs = 0

    def error(self) -> Interrupted:
        name = signal.Signals(self.signal).name if self.signal else "a signal"
        return Interrupted("INTERRUPTED", f"The run was stopped by {name} before it finished; its results were "
                           "removed (none was complete and delivered as one). Run it again.")

    def _handler(self, signum, frame):
        if not self.armed:
            log.warning("%s came after the run had finished; its result stands", signal.Signals(signum).name)
            return
        first = self.signal is None
        self.signal = signum
        if first:
            raise self.error()

    def install(self) -> None:
        """(Re)install the handlers; main thread only."""
        for s in (signal.SIGTERM, signal.SIGINT):
            old = signal.signal(s, self._handler)
            self._old.setdefault(s, old)
        with self._installed:
            self._installs += 1
            self._installed.notify_all()

    def disarm(self) -> None:
        """The run's work is done: from now on a signal does not turn it into a failure."""
        self.armed = False

    def wait_for_install(self, timeout: float = 60.0) -> bool:
        """Block (another thread) until the main thread has installed the handlers once more: afterwards
        they are the ones in place, whatever a framework installed before."""
        with self._installed:
            seen = self._installs
            return self._installed.wait_for(lambda: self._installs > seen, timeout)

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self.install()
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def wait(self, future, poll: float = 0.2):
        """The result of a graph run in another thread (Holoscan's ``run_async``). Holoscan's run
        installs its own SIGTERM/SIGINT handlers, which stop the scheduler but not a running compute
        and force an exit 3 s later with no report; so the main thread waits here and puts the guard's
        handlers back each ``poll`` seconds, and a signal raises :class:`Interrupted` here."""
        from concurrent.futures import TimeoutError as Pending
        while True:
            self.install()
            try:
                return future.result(timeout=poll)
            except Pending:
                continue


def signal_at_stage(spec: str, guard: SignalGuard):
    """Test hook (``SPINESEG_TEST_SIGNAL_AT=STAGE[:SIGNAME]``): a function for ``RunReport.stage_hook`` that
    sends the process the signal (SIGTERM by default) as the named stage begins, so a test interrupts the
    run at an exact stage boundary instead of racing it. In a graph thread it first waits until the main
    thread's handlers are back in place (Holoscan installs its own as its run starts), and then holds that
    thread, as a compute still running when the signal comes would be held."""
    stage, _, name = spec.partition(":")
    signum = signal.Signals[name or "SIGTERM"]

    def hook(current: str) -> None:
        if current != stage:
            return
        in_main = threading.current_thread() is threading.main_thread()
        if not in_main:
            guard.wait_for_install()
        log.warning("test hook: sending %s at the start of stage %s", signum.name, stage)
        os.kill(os.getpid(), signum)
        if not in_main:
            threading.Event().wait(120)        # the main thread writes the report and ends the process
    return hook
