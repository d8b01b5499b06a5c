"""A TCP proxy between a client and a server that injects faults into the server's answers:
cut the connection after N bytes, stall it, or slow it down; or cut it when the client sends
a given command (``IDLE``: a link that drops long-lived sessions only). Faults apply to the
next sessions, one plan per session, then every session gets the default (untouched
traffic, unless told otherwise; ``default`` can be changed while the proxy runs)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass

from mailintake_devstack.broker import free_port


@dataclass(frozen=True)
class Fault:
    cut_after: int | None = None  # bytes from the server, then both sides closed
    stall_after: int | None = None  # bytes from the server, then nothing for stall_s
    stall_s: float = 0.0
    delay_per_read_s: float = 0.0  # a slow link
    cut_when_client_sends: bytes | None = None  # both sides closed when the client sends it


class FaultProxy:
    def __init__(self, target_port: int, default: Fault | None = None) -> None:
        self.port = free_port()
        self._target = target_port
        self.default = default or Fault()
        self._plans: deque[Fault] = deque()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self.sessions = 0
        self.most_live = 0  # the most sessions open at once
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def plan(self, *faults: Fault) -> None:
        """The next sessions get these faults, in order."""
        self._plans.extend(faults)

    @property
    def live(self) -> int:
        """Sessions open now."""
        with self._lock:
            return len(self._live)

    def cut_all(self) -> None:
        """Cut every open session, as a link that drops (the server lives on)."""
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.sessions += 1
            fault = self._plans.popleft() if self._plans else self.default
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: Fault) -> None:
        with self._lock:
            self._live.add(client)
            self.most_live = max(self.most_live, len(self._live))
        try:
            self._relay(client, fault)
        finally:
            self._ended(client)

    def _ended(self, client: socket.socket) -> None:
        """The session is over (counted as soon as either side ends it)."""
        with self._lock:
            self._live.discard(client)

    def _relay(self, client: socket.socket, fault: Fault) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._target))
        except OSError:
            client.close()
            return
        done = threading.Event()

        def upstream() -> None:  # client → server, untouched unless it is the cue
            cue, tail = fault.cut_when_client_sends, b""
            with contextlib.suppress(OSError):
                while not done.is_set() and (data := client.recv(65536)):
                    if cue is not None:
                        if cue in tail + data:
                            break
                        tail = (tail + data)[-len(cue) :]
                    server.sendall(data)
            done.set()
            self._ended(client)
            for side in (client, server):
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=upstream, daemon=True).start()
        sent, stalled = 0, False
        with contextlib.suppress(OSError):
            while not done.is_set() and (data := server.recv(16384)):
                if fault.cut_after is not None and sent + len(data) > fault.cut_after:
                    client.sendall(data[: fault.cut_after - sent])
                    break
                if fault.stall_after is not None and not stalled and sent >= fault.stall_after:
                    stalled = True
                    time.sleep(fault.stall_s)
                if fault.delay_per_read_s:
                    time.sleep(fault.delay_per_read_s)
                client.sendall(data)
                sent += len(data)
        done.set()
        for side in (client, server):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
            side.close()
