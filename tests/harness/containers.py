"""The same components as containers (Apache Kafka, PostgreSQL) where a Docker engine answers.

Selected with ``MAILINTAKE_TEST_COMPONENTS=containers``; the default is local processes.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2


def docker_unavailable_reason() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}); containers mode needs one"
    return None


class KafkaInContainer:
    def __init__(self) -> None:
        from testcontainers.kafka import KafkaContainer

        self._container: Any = KafkaContainer("apache/kafka:3.9.1").with_kraft()

    def start(self) -> KafkaInContainer:
        self._container.start()
        return self

    @property
    def bootstrap_servers(self) -> str:
        return str(self._container.get_bootstrap_server())

    def stop(self) -> None:
        self._container.stop()


class PostgresInContainer:
    def __init__(self) -> None:
        from testcontainers.postgres import PostgresContainer

        self._container: Any = PostgresContainer("postgres:16", driver="psycopg2")

    def start(self) -> PostgresInContainer:
        self._container.start()
        return self

    def _params(self) -> dict[str, Any]:
        c = self._container
        return {
            "host": c.get_container_host_ip(),
            "port": int(c.get_exposed_port(5432)),
            "user": c.username,
            "password": c.password,
        }

    def url(self, database: str = "postgres") -> str:
        p = self._params()
        return (
            f"postgresql+psycopg2://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{database}"
        )

    def create_database(self, template: str | None = None) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        connection = psycopg2.connect(dbname="postgres", **self._params())
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                suffix = f" TEMPLATE {template}" if template else ""
                cursor.execute(f"CREATE DATABASE {name}{suffix}")
        finally:
            connection.close()
        return name

    def destroy(self) -> None:
        self._container.stop()
