"""Loopback fake PACS peers that misbehave on purpose: answers that are not DICOMweb, answers that
trickle or never come, C-STORE statuses of our choosing. Every loop is bounded in count and time."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeStow:
    """A STOW-RS endpoint on 127.0.0.1 answering in ``mode``:

    ok (lists ``uids`` as stored), other (lists another instance), html (a login page), badjson,
    notype (JSON without a Content-Type), trickle (one byte every ``gap`` s), silent (never answers),
    redirect (answers ``status`` with ``Location: location``). ``received`` counts the body bytes
    read, over every request of any method.
    """

    MAX_TRICKLE_BYTES = 120

    def __init__(self, mode: str, *uids: str, gap: float = 0.5, status: int = 307, location: str = ""):
        self.mode, self.uids, self.gap = mode, uids or ("",), gap
        self.status, self.location = status, location
        self.stop = threading.Event()
        self.requests: list[dict] = []
        self.received = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                if fake.mode != "silent":
                    self._read_body()
                fake.answer(self)

            do_GET = do_PUT = do_POST

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    for _ in range(100_000):
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        fake.received += len(self.rfile.read(size + 2)) - 2
                        if size == 0:
                            return
                else:
                    fake.received += len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def __enter__(self) -> "FakeStow":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "silent":
            self.stop.wait(60)
            return
        if mode == "trickle":
            data = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n" + b"X" * 1000
            for byte in data[:self.MAX_TRICKLE_BYTES]:
                if self.stop.wait(self.gap):
                    return
                try:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                except OSError:
                    return
            return
        if mode == "redirect":
            h.send_response(self.status)
            h.send_header("Location", self.location)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        listed = self.uids if mode in ("ok", "notype") else ("1.2.3.4.5.6.7.8.9",)
        body = json.dumps({"00081199": {"vr": "SQ", "Value": [
            {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.66.4"]},
             "00081155": {"vr": "UI", "Value": [uid]}} for uid in listed]}}).encode()
        ctype = "application/dicom+json"
        if mode == "html":
            body, ctype = b"<html><body><form>Please log in</form></body></html>", "text/html"
        elif mode == "badjson":
            body = b'{"00081199": {"vr": "SQ", "Value": [{'
        h.send_response(200)
        if mode != "notype":
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


class FakeStoreSCP:
    """A pynetdicom Storage SCP on 127.0.0.1 that answers every C-STORE with ``status``
    (``None``: never answers, until stopped), accepting only the SOP classes in ``contexts``."""

    def __init__(self, status: int | None = 0x0000, contexts=None, require_calling_aet=None, max_associations=10):
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import SegmentationStorage
        self.status, self.stop, self.calls = status, threading.Event(), 0
        ae = AE(ae_title="FAKEPACS")
        for ctx in contexts or [SegmentationStorage, "1.2.840.10008.5.1.4.1.1.66.7"]:   # and Label Map Segmentation
            ae.add_supported_context(ctx)
        if require_calling_aet:
            ae.require_calling_aet = require_calling_aet
        ae.maximum_associations = max_associations      # beyond it: rejected, transient (PS3.8 7.1.1.9)
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self.server.server_address[1]

    def _on_store(self, event):
        self.calls += 1
        if self.status is None:
            self.stop.wait(60)
            return 0xA700
        return self.status

    def __enter__(self) -> "FakeStoreSCP":
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
