"""Log lines that cannot be forged: a file name (or any text) holding a newline or a terminal
escape would otherwise print what looks like a log line of its own.

:class:`SafeFormatter` escapes control characters in every message and prefixes each further line
of a traceback with ``  | ``, so every line that starts like a record is one.
"""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


def escape(text) -> str:
    """``text`` with control characters (newline, carriage return, escape, ...) written as escapes."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        head, *rest = super().format(record).split("\n")
        return "\n".join([head] + [f"  | {line}" for line in rest])


def configure(level: int = logging.INFO) -> None:
    """The app's logging: one escaped line per record on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT, datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
