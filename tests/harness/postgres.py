"""A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) on 127.0.0.1 and a free port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from mailintake_devstack.broker import free_port


def postgres_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: run `make test` (installs the Debian package "
        "`postgresql` with apt-get when root) or install them yourself"
    )


class PostgresCluster:
    """A throwaway cluster. ``durable``: PostgreSQL's default durability (fsync, synchronous
    commit, full-page writes); else all three off, as tests need no crash safety of the
    machine."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bindir = postgres_bindir()
        self.port = free_port()
        # Unix socket paths are limited to 108 bytes: keep the directory short.
        self.root = Path(tempfile.mkdtemp(prefix="mipg", dir="/tmp"))
        self.data = self.root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as `postgres`
            pwd.getpwnam("postgres")
            shutil.chown(self.root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True)

    def start(self) -> PostgresCluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the server on this cluster's data and port (again, after ``stop``)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
        options += "-c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "pg.log"),
            "-w",
            "-o",
            options,
            "start",
        )

    @property
    def pid(self) -> int:
        """The postmaster's process id (its workers are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def set_durable(self, durable: bool) -> None:
        """Switch fsync and synchronous commit on or off without a restart (both are reloaded
        settings)."""
        value = "on" if durable else "off"
        connection = psycopg2.connect(
            dbname="postgres", host="127.0.0.1", port=self.port, user="postgres"
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER SYSTEM SET fsync = {value}")
                cursor.execute(f"ALTER SYSTEM SET synchronous_commit = {value}")
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            connection.close()

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            subprocess.run(
                [
                    *self._as_user,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "stop",
                ],
                capture_output=True,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        params = {"host": "127.0.0.1", "port": self.port, "user": "postgres"}
        return create_database(params, template)


def create_database(params: dict[str, Any], template: str | None = None) -> str:
    """A new database with a unique name (a copy of ``template`` if given); its name."""
    name = "t_" + uuid.uuid4().hex[:12]
    connection = psycopg2.connect(dbname="postgres", **params)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            suffix = f" TEMPLATE {template}" if template else ""
            cursor.execute(f"CREATE DATABASE {name}{suffix}")
    finally:
        connection.close()
    return name
