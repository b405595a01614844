"""A TCP proxy between boards and the broker that can black-hole the link: bytes in both directions
are silently dropped while connections stay open, as on a dead Wi-Fi or cellular link where no
RST ever arrives. Only keepalives can find such a failure."""

from __future__ import annotations

import selectors
import socket
import threading


class BlackholeProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._peer: dict[socket.socket, socket.socket | None] = {}  # None: the peer closed during a hole
        self._holed = threading.Event()
        self._stop = threading.Event()
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._serve, name="blackhole-proxy", daemon=True)
        self._thread.start()

    def blackhole(self, on: bool) -> None:
        if on:
            self._holed.set()
        else:
            self._holed.clear()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ)
        self._peer[client] = server
        self._peer[server] = client

    def _close(self, s: socket.socket) -> None:
        self._peer.pop(s, None)
        self._sel.unregister(s)
        s.close()

    def _on_closed(self, s: socket.socket) -> None:
        """One side closed. Through a hole the other side never learns of it (its socket is
        orphaned until its own keepalive gives up); otherwise the close is passed on."""
        other = self._peer.get(s)
        self._close(s)
        if other is None:
            return
        if self._holed.is_set():
            self._peer[other] = None
        else:
            self._close(other)

    def _forward(self, s: socket.socket) -> None:
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._on_closed(s)
            return
        peer = self._peer[s]
        if self._holed.is_set() or peer is None:
            self.dropped_bytes += len(data)
            return
        try:
            peer.sendall(data)  # loopback: a short blocking write is fine here
        except OSError:
            self._on_closed(s)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                elif sock in self._peer:
                    self._forward(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for s in list(self._peer):
            self._close(s)
        self._sel.unregister(self._listener)
        self._listener.close()
