"""Opening DICOM files so that no file can hang the scan or make a read allocate more than it holds.

Only regular files are read: the file is opened non-blocking and checked with ``fstat`` on the open
descriptor (a FIFO named like a DICOM file would otherwise block the scan forever, and a check by
name before opening could be raced). Every ``read`` is capped at the bytes left in the file, so a
header element that claims a 4 GB length in a 1 kB file fails as a short read instead of
allocating 4 GB; a deflated data set is inflated once, with a bound, before pydicom inflates it.
"""
from __future__ import annotations

import io
import os
import stat
import zlib
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_deferred_data_element
from pydicom.uid import DeflatedExplicitVRLittleEndian

MAX_FILE_BYTES = 2 * 1024**3      # larger than any single MR instance we can process


class Unreadable(ValueError):
    """The file is not something to read as DICOM (reason in the message)."""


class BoundedReader(io.BufferedReader):
    """A buffered file whose reads never ask for more than the file holds."""

    def __init__(self, raw: io.FileIO, size: int):
        super().__init__(raw, buffer_size=1 << 16)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self.size - self.tell())
        return super().read(left if n is None or n < 0 or n > left else n)


def open_regular(path: Path, limit: int = MAX_FILE_BYTES) -> BoundedReader:
    """``path`` opened for bounded reading, or :class:`Unreadable` (not a regular file, too large)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "FIFO" if stat.S_ISFIFO(st.st_mode) else "device" if stat.S_ISCHR(st.st_mode) or \
                stat.S_ISBLK(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "special file"
            raise Unreadable(f"not a regular file ({kind})")
        if st.st_size > limit:
            raise Unreadable(f"{st.st_size} bytes, above the {limit}-byte limit for one file")
        raw = io.FileIO(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    raw.name = str(path)
    return BoundedReader(raw, st.st_size)


def check_inflated_size(fp: BoundedReader, limit: int) -> None:
    """For a deflated data set, inflate it once in 1 MiB steps and refuse it past ``limit`` bytes
    (pydicom inflates it whole, without a bound: a zip bomb)."""
    start = fp.tell()
    try:
        pydicom.filereader.read_preamble(fp, False)
        meta = pydicom.filereader._read_file_meta_info(fp)
    except Exception:
        fp.seek(start)
        return                       # not a Part 10 file: pydicom reports it as such
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        for _ in range(fp.size // (1 << 20) + 2):
            chunk = fp.read(1 << 20)
            if not chunk or inflater.eof:
                break
            while chunk and not inflater.eof:    # past the stream's end a pad byte stays unconsumed
                total += len(inflater.decompress(chunk, 1 << 20))
                chunk = inflater.unconsumed_tail
                if total > limit:
                    raise Unreadable(f"deflated data set inflates past {limit} bytes")
    fp.seek(start)


HEADER_DEFER_BYTES = 64 * 1024    # larger values stay on disk until used
PIXEL_DATA = 0x7FE00010


def read_dataset(path: Path, *, headers_only: bool, limit: int = MAX_FILE_BYTES) -> pydicom.Dataset:
    """``dcmread`` of ``path`` through :func:`open_regular`, deflated data sets size-checked first.

    Values over 64 KiB are not read into memory: the scan keeps every file's header and the volume
    every slice's, so a study whose files carry large private elements must not fill memory with them.
    They stay on disk and are read, through :func:`open_regular` again, only if something uses them.
    Without ``headers_only`` the pixel data, the one large value always used, is read at once from the
    file already open."""
    with open_regular(path, limit) as fp:
        check_inflated_size(fp, limit)
        ds = pydicom.dcmread(fp, stop_before_pixels=headers_only, defer_size=HEADER_DEFER_BYTES)
        if not headers_only:
            _read_deferred(ds, PIXEL_DATA, fp)
    ds.fileobj_type = _reopen
    return ds


def _read_deferred(ds: pydicom.Dataset, tag: int, fp: BoundedReader) -> None:
    """Read ``ds``'s deferred ``tag`` now, from ``fp`` (or, for a deflated data set, from pydicom's
    inflated copy, which the deferred offsets refer to)."""
    raw = ds.get_item(tag, keep_deferred=True) if tag in ds else None
    if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
        ds[tag] = read_deferred_data_element(open, fp if ds.buffer is None else ds.buffer, None, raw)


def _reopen(name: str, mode: str = "rb") -> BoundedReader:
    """How pydicom reopens a file for a deferred value: regular files only, reads bounded."""
    return open_regular(Path(name))
