"""A TCP proxy in front of PostgreSQL that can stall: while stalled it forwards nothing and
accepts nothing, so bytes are taken by the kernel and never answered — the database looks like
a network that drops packets, not one that refuses them. `resume()` carries on with the
connections that survived."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class StallProxy:
    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._stalled = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-proxy", daemon=True)
        self.connections = 0

    def __enter__(self) -> StallProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self._stalled.is_set():
                time.sleep(0.02)
                continue
            for key, _mask in self._selector.select(timeout=0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.connections += 1
        for sock, peer in ((client, upstream), (upstream, client)):
            sock.setblocking(True)
            self._selector.register(sock, selectors.EVENT_READ, peer)

    def _forward(self, source: socket.socket, peer: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        for sock in (source, peer):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
