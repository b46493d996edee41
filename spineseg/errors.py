"""Failures with stable codes, mapped to the app's exit status.

Exit status contract (README, "Troubleshooting by error code"):
    0  succeeded
    2  usage error (bad command-line arguments)
    3  bad input: the study cannot be processed as given (code tells why)
    4  internal failure: a bug or an environment problem (models missing, out of memory, ...)
    5  delivery failure: results were produced and kept, but could not be sent
"""
from __future__ import annotations

EXIT_OK, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_DELIVERY = 0, 2, 3, 4, 5


class SpineSegError(Exception):
    """Base class: ``code`` is stable and machine-readable, the message says what to do."""

    exit_code = EXIT_INTERNAL

    def __init__(self, code: str, message: str, *, path: str | None = None, series_uid: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        self.series_uid = series_uid

    def as_dict(self) -> dict:
        d = {"code": self.code, "message": self.message, "category": type(self).__name__}
        if self.path:
            d["path"] = self.path
        if self.series_uid:
            d["series_instance_uid"] = self.series_uid
        return d


class InputError(SpineSegError):
    """The input cannot be processed as given (exit 3)."""

    exit_code = EXIT_BAD_INPUT


class ModelError(SpineSegError):
    """Model folder missing or malformed (exit 4: the deployment, not the study, is wrong)."""

    exit_code = EXIT_INTERNAL


class DeliveryError(SpineSegError):
    """Results are on disk but a destination did not accept them (exit 5)."""

    exit_code = EXIT_DELIVERY


class OutputError(SpineSegError):
    """The output folder cannot take the results, or another run holds it (exit 4: the deployment,
    not the study, is wrong)."""

    exit_code = EXIT_INTERNAL


def output_error(path, exc: OSError) -> OutputError:
    """A coded error for a failed write: DISK_FULL when space or quota ran out, else OUTPUT_NOT_WRITABLE."""
    import errno
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    code = "DISK_FULL" if full else "OUTPUT_NOT_WRITABLE"
    advice = "free space on its file system" if full else "mount it writable for the app's user"
    return OutputError(code, f"Cannot write {path} ({exc.strerror or type(exc).__name__}); {advice} and run again.",
                       path=str(path))
