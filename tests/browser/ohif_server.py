"""A static OHIF v3 build and a DICOMweb server behind one origin, on 127.0.0.1.

The browser sees a single origin: ``/dicom-web/...`` is forwarded to the PACS (Orthanc) with its
credentials added here, so the page needs neither CORS nor a password; every other path is a file of
OHIF's ``dist/`` folder, ``/app-config.js`` is ours (one DICOMweb data source, PS3.18), and unknown
paths (OHIF's client-side routes such as ``/viewer``) get ``index.html``.
"""
from __future__ import annotations

import base64
import http.client
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

APP_CONFIG = """window.config = {
  routerBasename: '/', extensions: [], modes: [], customizationService: {}, showStudyList: true,
  maxNumberOfWebWorkers: 2, showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false,
  showLoadingIndicator: false, strictZSpacingForVolumeViewport: true, showErrorDetails: 'always',
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'pacs',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'pacs',
    configuration: {
      friendlyName: 'spine-seg test PACS', name: 'pacs',
      wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
      dicomUploadEnabled: false, singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


class _Handler(BaseHTTPRequestHandler):
    server: "OhifServer._Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):       # quiet: the test reports what matters
        pass

    def do_GET(self):                         # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path.startswith("/dicom-web/"):
            return self._proxy()
        if path == "/app-config.js":
            return self._send(200, APP_CONFIG.encode(), "application/javascript")
        dist = self.server.dist
        target = (dist / path.lstrip("/")).resolve()
        if not target.is_relative_to(dist) or not target.is_file():
            target = dist / "index.html"      # a client-side route
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            ctype = "application/wasm"
        return self._send(200, target.read_bytes(), ctype)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self):
        host, port, auth = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            headers = {"Authorization": auth, "Accept": self.headers.get("Accept", "*/*")}
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            keep = {k: v for k, v in resp.getheaders() if k.lower() in ("content-type",)}
            self.server.requests.append((self.path, resp.status, len(body)))
            self._send(resp.status, body, keep.pop("Content-Type", "application/octet-stream"))
        except OSError as exc:
            self._send(502, f"upstream error {type(exc).__name__}".encode(), "text/plain")
        finally:
            conn.close()


class OhifServer:
    """``OhifServer(dist, "http://127.0.0.1:PORT", user, password).start()``; ``.url``; ``.stop()``."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True

    def __init__(self, dist: Path, orthanc_http: str, user: str, password: str):
        parts = urlsplit(orthanc_http)
        self.httpd = self._Server(("127.0.0.1", 0), _Handler)
        self.httpd.dist = Path(dist).resolve()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.httpd.upstream = (parts.hostname, parts.port, f"Basic {token}")
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "OhifServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
