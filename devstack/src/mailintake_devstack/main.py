"""Console entry point ``mailintake-devstack``: the whole pipeline on one machine.

    mailintake-devstack up     broker + migrations + the five services, until Ctrl-C

Everything lives in ``.devstack/`` (SQLite database, generated encryption key and admin
token, one log file per service, ``env`` with the addresses clients need). The broker keeps
its data in memory only. One run per state directory: a second one is refused, naming the
first's PID. The services run in their own process group, so that Ctrl-C reaches only this
process, which stops the services first and the broker last.

API tokens: the generated admin token, plus the entries (``role:<sha256>``, as
``make token`` prints them) of ``MAILINTAKE_API_TOKENS`` and of ``.devstack/api-tokens`` (one a
line, ``#`` starts a comment).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mailintake_devstack.broker import LocalBroker, free_port, reserve_port, stop_process
from mailintake_shared.secretbox import generate_key


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: str
    port: int


def _secrets(state: Path) -> tuple[str, str]:
    """The stack's encryption key and admin token, made on the first run and kept."""
    from mailintake_config_api.auth import hash_token, new_token

    key_file, token_file = state / "encryption-key", state / "admin-token"
    if not key_file.exists():
        key_file.write_text(generate_key() + "\n")
        key_file.chmod(0o600)
    if not token_file.exists():
        token_file.write_text(new_token() + "\n")
        token_file.chmod(0o600)
    token = token_file.read_text().strip()
    return key_file.read_text().strip(), f"admin:{hash_token(token)}"


def _api_tokens(state: Path, admin_entry: str) -> str:
    """The generated admin token's entry, then those of the environment and of the file."""
    entries = [admin_entry, *os.environ.get("MAILINTAKE_API_TOKENS", "").split(",")]
    listed = state / "api-tokens"
    if listed.exists():
        entries += [line.split("#", 1)[0] for line in listed.read_text().splitlines()]
    return ",".join(dict.fromkeys(e.strip() for e in entries if e.strip()))


def _port_or_free(port: int) -> int:
    """``port`` if a server could listen on it now, else a free one. Connections of the last
    run still in TIME_WAIT do not count: the servers listen with SO_REUSEADDR, and so does
    this probe, so the broker comes back on its port after a quick restart."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    reserve_port(port)
    return port


def _sole_run(state: Path) -> int | None:
    """Hold the state directory's lock for this process's lifetime (released when it exits,
    however it exits) and write its PID; or the PID of the run that holds it."""
    lock = os.open(state / "run.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        text = (state / "run.pid").read_text().strip() if (state / "run.pid").exists() else ""
        return int(text) if text.isdigit() else -1
    (state / "run.pid").write_text(f"{os.getpid()}\n")
    return None


_PR_SET_PDEATHSIG = 1


def _own_group_dying_with_us() -> None:
    """In the child before it runs: its own process group (Ctrl-C in the terminal reaches the
    devstack only), and SIGTERM when the devstack dies, even by SIGKILL (Linux)."""
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 (kept open)
    return subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_own_group_dying_with_us,
    )


def _wait_healthy(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def up(state: Path, api_port: int, broker_port: int) -> int:
    state.mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    running = _sole_run(state)
    if running is not None:
        print(
            f"mailintake: already running in this checkout (PID {running}, state in {state}/); "
            f"stop it first: Ctrl-C in its terminal, or kill {running}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    key, token_entry = _secrets(state)
    broker = LocalBroker(
        port=_port_or_free(broker_port),
        log_path=state / "logs" / "broker.log",
        preexec_fn=_own_group_dying_with_us,
    )
    broker.start()
    env = {
        **os.environ,
        "MAILINTAKE_DATABASE_URL": f"sqlite:///{(state / 'mailintake.db').resolve()}",
        "MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MAILINTAKE_ENCRYPTION_KEYS": key,
        "MAILINTAKE_API_TOKENS": _api_tokens(state, token_entry),
        "MAILINTAKE_HTTP_HOST": "127.0.0.1",
        "MAILINTAKE_TOPIC_PARTITIONS": os.environ.get("MAILINTAKE_TOPIC_PARTITIONS", "3"),
        # On one machine, a mail server on this machine is a fair target (the outbound guard
        # refuses loopback otherwise).
        "MAILINTAKE_OUTBOUND_ALLOW_CIDRS": os.environ.get(
            "MAILINTAKE_OUTBOUND_ALLOW_CIDRS", "127.0.0.0/8,::1/128"
        ),
    }
    bindir = Path(sys.executable).parent
    print(f"mailintake: broker on {broker.bootstrap_servers} (memory only)", flush=True)
    subprocess.run(
        [str(bindir / "mailintake-migrate")], env=env, check=True, stdout=subprocess.DEVNULL
    )
    print(f"mailintake: database {env['MAILINTAKE_DATABASE_URL']} migrated", flush=True)

    specs = [
        ServiceSpec("config-api", "mailintake-config-api", _port_or_free(api_port)),
        ServiceSpec("scheduler", "mailintake-scheduler", free_port()),
        ServiceSpec("fetcher", "mailintake-fetcher", free_port()),
        ServiceSpec("store", "mailintake-store", free_port()),
        ServiceSpec("watcher", "mailintake-watcher", free_port()),
    ]
    processes = {
        spec.name: _spawn(
            [str(bindir / spec.command)],
            {**env, "MAILINTAKE_HTTP_PORT": str(spec.port)},
            state / "logs" / f"{spec.name}.log",
        )
        for spec in specs
    }
    (state / "ports").write_text(
        "".join(f"{spec.name}={spec.port}\n" for spec in specs) + f"broker={broker.port}\n"
    )
    api_url = f"http://127.0.0.1:{specs[0].port}"
    (state / "env").write_text(
        f"MAILINTAKE_API_URL={api_url}\n"
        f"MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}\n"
    )

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for spec in specs:
            url = f"http://127.0.0.1:{spec.port}/healthz"
            ok = _wait_healthy(url, timeout_s=60)
            print(
                f"mailintake: {spec.name:<10} {'up' if ok else 'NOT answering'}  {url}", flush=True
            )
        print(
            f"\nConsole: {api_url}/console   (sign in with the token in {state / 'admin-token'})\n"
            f"API:    {api_url}/docs\n"
            f"Token:  export TOKEN=$(cat {state / 'admin-token'})\n"
            f"Kafka:  MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}"
            f"   (for consumers; all of it in {state / 'env'})\n"
            f"Logs:   {state / 'logs'}/\n"
            "Stop:   Ctrl-C\n",
            flush=True,
        )
        while not stop.wait(1):
            for name, process in processes.items():
                if process.poll() is not None:
                    print(
                        f"mailintake: {name} exited with {process.returncode}; see its log",
                        flush=True,
                    )
                    stop.set()
        return 0 if all(p.poll() is None for p in processes.values()) else 1
    finally:
        # The services first, while the broker still answers their goodbyes (leaving their
        # consumer groups); the broker last.
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            stop_process(process, timeout_s=15)
        broker.stop()
        print("mailintake: stopped", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mailintake-devstack", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="run the whole pipeline until Ctrl-C")
    start.add_argument("--state-dir", type=Path, default=Path(".devstack"))
    start.add_argument("--api-port", type=int, default=8000)
    start.add_argument("--broker-port", type=int, default=9092)
    args = parser.parse_args(argv)
    sys.exit(up(args.state_dir, args.api_port, args.broker_port))
