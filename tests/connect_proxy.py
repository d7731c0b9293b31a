"""An HTTP CONNECT proxy for tests that need a broker outage they control.

Kafka clients given ``proxy_url=http://127.0.0.1:PORT`` reach every broker
through it (bootstrap and advertised addresses alike), so :meth:`ConnectProxy.down`
makes the whole cluster unreachable for them (open tunnels are cut, new
connections are refused) while the shared test broker keeps running for
everyone else; :meth:`ConnectProxy.up` brings it back on the same port.

Threads: one accept thread while up, two copy threads per tunnel; every
method may be called from any thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["ConnectProxy"]


class ConnectProxy:
    """A CONNECT proxy on 127.0.0.1 that can be taken down and brought back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again, on the same port once it had one) and accept tunnels."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut every open tunnel."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    close = down

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._listener is None:
                return False
            self._sockets.add(sock)
            return True

    def _tunnel(self, client: socket.socket) -> None:
        if not self._track(client):
            client.close()
            return
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    raise OSError("client went away")
                request += chunk
            head, _, rest = request.partition(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if method != b"CONNECT":
                raise OSError("not a CONNECT request")
            host, _, port = target.decode().rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            upstream.settimeout(None)
        except (OSError, ValueError):
            client.close()
            return
        if not self._track(upstream):
            upstream.close()
            client.close()
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        _copy(client, upstream)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
