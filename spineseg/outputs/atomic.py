"""Atomic file output: a consumer watching the output folder never sees a partial file.

Each file is written to a hidden temporary file in the same folder, created with ``O_EXCL`` (never an
existing file or a planted link) and written through that descriptor only, flushed to disk, then
renamed over the final name (``os.replace`` is atomic on POSIX within one file system and replaces a
link planted under the final name instead of following it). A failed write (unwritable folder, full
disk) removes the temporary file and raises a coded :class:`~spineseg.errors.OutputError`
(OUTPUT_NOT_WRITABLE, DISK_FULL).

Result files (not the report) pass a gate: once a run is interrupted, :func:`close_results` shuts it,
and from then on no result file is placed, even by a graph thread that is still computing, so the
folder the interrupted run leaves holds exactly what its report lists.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO

from spineseg.errors import SpineSegError, output_error

_GATE = threading.Lock()                     # held while a result file is placed, and while the gate shuts
_closed_by: SpineSegError | None = None
# results are meant to be shared (mkstemp makes 0600); read the umask once: setting it to read it is not
# thread-safe, and the graph's threads write files
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def close_results(reason: SpineSegError) -> Iterator[None]:
    """Shut the gate for result files (``reason`` is raised to any later writer) and hold it for the
    ``with`` block, so the caller can tidy the folder while no writer can place a file."""
    global _closed_by
    with _GATE:
        _closed_by = reason
        yield


@contextmanager
def results_gate() -> Iterator[None]:
    """Hold the gate; raise the closing reason where it is shut (for anything that records a result)."""
    with _GATE:
        if _closed_by is not None:
            raise _closed_by
        yield


def reopen_results() -> None:
    """Open the gate again (a new run in the same process, as tests do)."""
    global _closed_by
    with _GATE:
        _closed_by = None


def write_atomic(path: Path, writer: Callable[[BinaryIO], None], *, result: bool = True) -> Path:
    """Call ``writer(fh)`` on a new temporary file beside ``path`` (binary, opened for writing), then move it
    to ``path`` atomically. ``result=False`` for the run's own report, which is written whatever happened."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        tmp_path = Path(tmp)
        with os.fdopen(fd, "wb") as fh:      # the descriptor mkstemp opened: nothing is reopened by name
            writer(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.fsync(fh.fileno())
        with results_gate() if result else nullcontext():
            os.replace(tmp_path, path)
    except OSError as exc:                   # unwritable folder, full disk: a coded error, not a traceback
        raise output_error(path, exc) from exc
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_json_atomic(path: Path, obj, *, result: bool = True) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")), result=result)


def write_dicom_atomic(ds, path: Path) -> Path:
    """A pydicom dataset as a DICOM file (PS3.10 preamble and file meta), written atomically."""
    return write_atomic(path, lambda fh: ds.save_as(fh, enforce_file_format=True))
