"""Atomic file output: a consumer watching the output folder never sees a partial file.

Each file is written to a hidden temporary name in the same folder, flushed to disk, then renamed
over the final name (``os.replace`` is atomic on POSIX within one file system). A failed write
(unwritable folder, full disk) removes the temporary file and raises a coded
:class:`~spineseg.errors.OutputError` (OUTPUT_NOT_WRITABLE, DISK_FULL).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from spineseg.errors import output_error


def write_atomic(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then move ``tmp_path`` to ``path`` atomically."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        writer(tmp_path)
        os.chmod(tmp_path, 0o666 & ~umask)   # mkstemp makes 0600; results are meant to be shared
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:                   # unwritable folder, full disk: a coded error, not a traceback
        raise output_error(path, exc) from exc
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return write_atomic(path, lambda p: p.write_bytes(data))


def write_json_atomic(path: Path, obj) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_dicom_atomic(ds, path: Path) -> Path:
    """A pydicom dataset as a DICOM file (PS3.10 preamble and file meta), written atomically."""
    return write_atomic(path, lambda p: ds.save_as(p, enforce_file_format=True))
