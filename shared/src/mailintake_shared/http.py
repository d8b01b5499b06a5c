"""Health, readiness and metrics over HTTP for the services that have no API of their own.

``/healthz`` answers 200 while the service's main loop is alive (Kubernetes liveness);
``/readyz`` answers 200 when every readiness check passes, 503 otherwise, with the checks'
results as JSON; ``/metrics`` is the Prometheus exposition.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailintake_shared.metrics import SERVICE_READY

Checks = Callable[[], Mapping[str, bool]]


def evaluate(checks: Checks) -> tuple[bool, dict[str, bool]]:
    try:
        results = dict(checks())
    except Exception:
        results = {"checks": False}
    for name, ok in results.items():
        SERVICE_READY.labels(name).set(1 if ok else 0)
    return all(results.values()), results


class HealthServer:
    def __init__(self, host: str, port: int, *, liveness: Checks, readiness: Checks) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, results = evaluate(
                        server.liveness if path == "/healthz" else server.readiness
                    )
                    body = json.dumps({"status": "ok" if ok else "fail", "checks": results})
                    self._send(200 if ok else 503, body.encode(), "application/json")
                else:
                    self._send(404, b'{"detail":"not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        self.liveness = liveness
        self.readiness = readiness
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
