"""The four services as real processes (so a test can ``kill -9`` one), on shared settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import create_engine, text

from mailintake_devstack.broker import free_port, stop_process
from mailintake_shared.settings import ENV_PREFIX, Settings

BIN = Path(sys.executable).parent
SERVICES = ("scheduler", "fetcher", "store", "config-api")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a service read exactly ``settings``."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value: Any = getattr(settings, name)
        if value is None:
            continue  # unset: the default
        if isinstance(value, list):
            value = ",".join(v.get_secret_value() if isinstance(v, SecretStr) else v for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[ENV_PREFIX + name.upper()] = str(value)
    return env


class Pipeline:
    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.ports: dict[str, int] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, *services: str) -> Pipeline:
        """Start services by name; ``fetcher:2`` is a second fetcher process."""
        for service in services or SERVICES:
            port = self.ports.setdefault(service, free_port())
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
                **settings_env(self.settings),
                "MAILINTAKE_HTTP_PORT": str(port),
            }
            log_file = self.log_dir / f"{service.replace(':', '-')}.log"
            log = open(log_file, "ab")  # noqa: SIM115 (kept open)
            self.processes[service] = subprocess.Popen(
                [str(BIN / f"mailintake-{service.split(':')[0]}")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self, service: str) -> None:
        """SIGKILL: no clean-up, no last commit, as a crash."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def pause(self, service: str) -> None:
        """SIGSTOP: the process freezes (a long GC pause, a VM stall), its sockets stay open."""
        self.processes[service].send_signal(signal.SIGSTOP)

    def resume(self, service: str) -> None:
        self.processes[service].send_signal(signal.SIGCONT)

    def stop(self, service: str) -> int:
        """SIGTERM, SIGKILL after 30 s; the exit code (0: it stopped by itself, in time).
        Its metrics are kept beside its log first (searched for planted secrets)."""
        self._keep_metrics(service)
        process = self.processes.pop(service)
        stop_process(process, timeout_s=30)
        return process.returncode

    def _keep_metrics(self, service: str) -> None:
        url = f"http://127.0.0.1:{self.ports[service]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                metrics = response.read()
        except (OSError, urllib.error.URLError):
            return  # not answering (stopped, paused): nothing to keep
        path = self.log_dir / f"{service.replace(':', '-')}.metrics"
        with path.open("ab") as kept:
            kept.write(metrics)

    def http_get(self, service: str, path: str) -> int:
        """The status code of a service's own HTTP endpoint (``/healthz``, ``/readyz``)."""
        url = f"http://127.0.0.1:{self.ports[service]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def stop_all(self) -> None:
        """``stop`` for every service at once: SIGTERM to all, then each is waited for (30 s
        in all, then SIGKILL), so that a pipeline stops in the time of its slowest service."""
        for service in self.processes:
            self._keep_metrics(service)
        stopping, self.processes = self.processes, {}
        for process in stopping.values():
            process.terminate()
        deadline = time.monotonic() + 30
        for process in stopping.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def assigned(self) -> set[int]:
        """The partitions of its consumer's latest assignment, from its log (one service)."""
        latest: set[int] = set()
        for line in self.logs().splitlines():
            if '"partitions assigned"' in line:
                latest = set(json.loads(line)["partitions"])
        return latest

    def assert_running(self) -> None:
        for service, process in self.processes.items():
            assert process.poll() is None, f"{service} exited:\n{self.logs()[-5000:]}"


def wait_until(
    probe: Callable[[], Any], *, timeout_s: float, message: str = "", interval_s: float = 0.25
) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s: {message} (last: {last!r})")


class Database:
    """Read-only views of what the pipeline stored, in plain SQL."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(sql), params).scalar()

    def execute(self, sql: str, **params: Any) -> None:
        """A write, committed."""
        with self.engine.begin() as connection:
            connection.execute(text(sql), params)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(text(sql), params).all())

    def message_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM messages"))

    def distinct_messages(self) -> int:
        return int(self.scalar("SELECT count(DISTINCT message_id_header) FROM messages"))

    def close(self) -> None:
        self.engine.dispose()
