"""A TCP proxy between a client and a server that injects faults into the server's answers:
cut the connection after N bytes, stall it, or slow it down. Faults apply to the next
sessions, one plan per session, then every session gets the default (untouched traffic,
unless told otherwise)."""

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


class FaultProxy:
    def __init__(self, target_port: int, default: Fault | None = None) -> None:
        self.port = free_port()
        self._target = target_port
        self._default = default or Fault()
        self._plans: deque[Fault] = deque()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self.sessions = 0
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

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.sessions += 1
            fault = self._plans.popleft() if self._plans else self._default
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: Fault) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._target))
        except OSError:
            client.close()
            return
        done = threading.Event()

        def upstream() -> None:  # client → server, untouched
            with contextlib.suppress(OSError):
                while not done.is_set() and (data := client.recv(65536)):
                    server.sendall(data)
            done.set()

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
