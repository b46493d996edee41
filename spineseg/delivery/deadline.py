"""Hard deadlines for network attempts.

Socket timeouts bound each read, not an exchange: a peer that sends one byte every few seconds, or
that accepts and never answers, keeps requests and pynetdicom busy far past any timeout. So each
attempt runs in a worker thread that the caller waits for only until the deadline; then the
attempt's sockets are shut down (or its association aborted), which ends the worker's blocked call
at once, and the caller moves on whether or not the worker has finished.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class DeadlinePassed(Exception):
    """The attempt did not finish before its deadline."""


class Attempt:
    """One attempt's deadline and the things to cut when it passes."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self._lock = threading.Lock()
        self._cancels: list[Callable[[], None]] = []
        self.cancelled = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def on_cancel(self, fn: Callable[[], None]) -> None:
        """Register ``fn`` to run at the deadline (at once when it has already passed)."""
        with self._lock:
            if not self.cancelled:
                self._cancels.append(fn)
                return
        _quietly(fn)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, fns = True, list(self._cancels)
        for fn in fns:
            _quietly(fn)


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:   # cutting a socket that is already closed is fine
        pass


def shutdown_socket(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def run_before(attempt: Attempt, fn: Callable[[], object], grace: float = 0.5):
    """``fn()``'s result, or :class:`DeadlinePassed` once ``attempt.deadline`` is reached."""
    box: dict = {}

    def work():
        try:
            box["result"] = fn()
        except BaseException as exc:   # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="spineseg-delivery", daemon=True)
    worker.start()
    worker.join(attempt.remaining())
    if worker.is_alive():
        attempt.cancel()
        worker.join(grace)
        raise DeadlinePassed()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def deadline_adapter(attempt: Attempt):
    """A requests adapter whose connections register their sockets with ``attempt``, so that the
    deadline can cut a response that is still trickling in."""
    from requests.adapters import HTTPAdapter
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def pool(base):
        class Connection(base.ConnectionCls):
            def connect(self):
                super().connect()
                attempt.on_cancel(lambda sock=self.sock: shutdown_socket(sock))
        return type(base.__name__, (base,), {"ConnectionCls": Connection})

    pools = {"http": pool(HTTPConnectionPool), "https": pool(HTTPSConnectionPool)}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    return Adapter(max_retries=0)
