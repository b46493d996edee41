"""SHA-256 of a file, read in 1 MiB pieces: the identity of a checkpoint and of an exported IR's files.

:func:`sha256_remembered` hashes a checkpoint once rather than on every run (a full-size one: ~1 s): the
digest is kept in a ``checksums.json`` beside the OpenVINO IRs, keyed on the file's real path, device,
inode, size and modification and change times (ns). Any write or replacement of the file changes its change
time, which no program can set back, so a changed checkpoint is always hashed again and never meets a stale
IR. As git does for its index, a record is only written for a file whose change time is a few seconds old,
so that a rewrite within the file system's timestamp resolution cannot keep an old record valid.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

RECORDS = "checksums.json"
SETTLED_S = 3.0        # a change time this old cannot be shared with a later rewrite (coarse timestamps)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _records(folder: Path) -> dict:
    try:
        records = json.loads((folder / RECORDS).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def remember(path: Path, digest: str, folder: Path) -> None:
    """Record ``digest`` of ``path`` in ``folder/checksums.json`` (atomically; silently not where the
    folder is read-only, or the file changed too recently to be told apart from a rewrite)."""
    stat = os.stat(path)
    if time.time() - stat.st_ctime < SETTLED_S:
        return
    records = _records(folder)
    records[str(Path(path).resolve())] = {"identity": _identity(stat), "sha256": digest}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".checksums-", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(records, fh, indent=1)
        os.replace(partial, folder / RECORDS)
    except OSError:
        return


def sha256_remembered(path: Path, folders: list[Path]) -> str:
    """``sha256_of(path)``, taken from the first of ``folders`` whose record matches the file as it is now;
    otherwise computed and recorded in the last folder (the writable cache)."""
    key, identity = str(Path(path).resolve()), _identity(os.stat(path))
    for folder in folders:
        record = _records(folder).get(key)
        if isinstance(record, dict) and record.get("identity") == identity and isinstance(record.get("sha256"), str):
            return record["sha256"]
    digest = sha256_of(path)
    if folders:
        remember(path, digest, folders[-1])
    return digest
