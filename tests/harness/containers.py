"""The same components as containers (Apache Kafka, PostgreSQL) where a Docker engine answers.

Selected with ``MAILINTAKE_TEST_COMPONENTS=containers``; the default is local processes.
"""

from __future__ import annotations

from typing import Any

from tests.harness.postgres import create_database


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
        return create_database(self._params(), template)

    def destroy(self) -> None:
        self._container.stop()
