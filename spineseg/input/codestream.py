"""Frame dimensions declared inside compressed pixel data, read before any decoder runs.

A JPEG, JPEG-LS or JPEG 2000 decoder sizes its output from the codestream's own header, not from
the DICOM Rows/Columns: a few hundred bytes that declare 60000x60000 pixels make it allocate
gigabytes. So every frame's codestream header is parsed here (a few bytes, no decoding) and must
agree with Rows, Columns and SamplesPerPixel before pydicom is asked to decode.
"""
from __future__ import annotations

import struct

# JPEG start-of-frame markers (ITU T.81 B.1.1.3) and JPEG-LS SOF55 (T.87)
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
MAX_MARKERS = 1000        # segments before SOF in any sane JPEG: a handful


class BadCodestream(ValueError):
    """The codestream header cannot be read or disagrees with the DICOM header."""


def jpeg_dims(data: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from a JPEG or JPEG-LS codestream's SOF segment."""
    if data[:2] != b"\xff\xd8":
        raise BadCodestream("no JPEG start-of-image marker")
    pos = 2
    for _ in range(MAX_MARKERS):
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1                                   # fill bytes
        if pos + 4 > len(data) or data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in SOF_MARKERS:
            if pos + 10 > len(data):
                break
            rows, cols = struct.unpack(">HH", data[pos + 5:pos + 9])
            return rows, cols, data[pos + 9]
        pos += 2 + length
    raise BadCodestream("no JPEG start-of-frame segment in the frame's first fragment")


def j2k_dims(data: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from a JPEG 2000 codestream's SIZ segment (bare or in a JP2 box)."""
    start = data.find(b"\xff\x4f\xff\x51", 0, 4096)
    if start < 0:
        raise BadCodestream("no JPEG 2000 SOC/SIZ marker")
    siz = data[start + 4:start + 4 + 38]
    if len(siz) < 38:
        raise BadCodestream("truncated JPEG 2000 SIZ segment")
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", siz[4:20])
    (csiz,) = struct.unpack(">H", siz[36:38])
    if xo > xsiz or yo > ysiz:
        raise BadCodestream("JPEG 2000 image offset outside the image")
    return ysiz - yo, xsiz - xo, csiz


def frame_dims(syntax_name: str, first_fragment: bytes) -> tuple[int, int, int] | None:
    """Declared (rows, columns, components) of one frame, or None for codings sized by the DICOM
    header alone (RLE: its decoder allocates Rows x Columns)."""
    if "2000" in syntax_name:                          # JPEG 2000 and HTJ2K
        return j2k_dims(first_fragment)
    if "JPEG" in syntax_name:
        return jpeg_dims(first_fragment)
    return None


def check_frames(ds, rows: int, cols: int, frames: int) -> None:
    """Raise :class:`BadCodestream` unless every frame of ``ds``'s encapsulated pixel data declares
    ``rows`` x ``cols`` with SamplesPerPixel components, and there are no more frames than ``frames``."""
    from pydicom.encaps import generate_frames

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:       # a damaged file meta group: nothing says how the pixel data is encoded
        raise BadCodestream("the file meta information has no Transfer Syntax UID (0002,0010), so the pixel data "
                            "cannot be decoded")
    if not syntax.is_encapsulated:
        return
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    count = 0
    for count, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames), start=1):
        if count > frames:
            raise BadCodestream(f"more than {frames} frames in the pixel data")
        dims = frame_dims(syntax.name, bytes(frame[:65536]))
        if dims is not None and dims != (rows, cols, spp):
            raise BadCodestream(f"frame {count} declares {dims[0]}x{dims[1]} pixels with {dims[2]} component(s), "
                                f"the header {rows}x{cols} with {spp}")
    if count < frames:
        raise BadCodestream(f"{count} frame(s) in the pixel data, NumberOfFrames says {frames}")
