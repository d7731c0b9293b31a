"""``WebServer``: the standard library's threading HTTP server around :class:`Routes`.

``http.server.ThreadingHTTPServer`` is enough for an operator's endpoint (a
dashboard, a health check, a metrics scrape): no dependency, a thread per
request, and nothing of the worker's hot path. It binds to the loopback
unless told otherwise; with a token set every request must carry
``Authorization: Bearer <token>`` (compared in constant time) or gets 401.
Request lines are logged at DEBUG, without headers (a token never reaches a
log).

Thread ownership: :meth:`start` and :meth:`stop` by the worker's thread; the
requests on the server's threads.
"""

from __future__ import annotations

import hmac
import logging
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from statestream.errors import ConfigurationError
from statestream.web.routes import Reply, Routes

__all__ = ["WebServer"]

log = logging.getLogger("statestream.web")


class WebServer:
    """Serves :class:`Routes` on ``host:port`` (port 0: any free one) until stopped."""

    def __init__(self, routes: Routes, host: str, port: int, *, token: str | None = None) -> None:
        self.routes = routes
        self._token = None if token is None else token.encode()
        handler = _handler(self)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigurationError(
                f"the HTTP endpoint cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "pick another --web-port, or 0 for any free port"
            ) from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound address."""
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="statestream-web", daemon=True
        )
        self._thread.start()
        log.info("HTTP endpoint on %s (queries, /health, /metrics)", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket (requests in flight finish on their threads)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value passes (always, without a token)."""
        if self._token is None:
            return True
        if header is None or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), self._token)


def _handler(web: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "statestream"
        sys_version = ""

        def do_GET(self) -> None:
            if not web.authorized(self.headers.get("Authorization")):
                self._send(
                    Reply(
                        401,
                        b'{"error":"unauthorized","message":"send Authorization: Bearer <token>"}',
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                )
                return
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
            try:
                reply = web.routes.get(parsed.path, query, dict(self.headers))
            except Exception as exc:  # a bug in a route answers 500, never kills the thread
                log.exception("HTTP %s failed", parsed.path)
                reply = Reply(
                    500, b'{"error":"internal","message":"%s"}' % type(exc).__name__.encode()
                )
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("HTTP %s", format % args)

    return Handler
