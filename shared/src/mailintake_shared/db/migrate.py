"""Schema migrations (Alembic), run by ``mailintake-migrate`` or the deployment's Job."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from mailintake_shared.db.engine import make_engine
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head", secrets: SecretBox | None = None) -> None:
    """Migrate to ``revision``; ``secrets`` re-encrypts stored secrets where a migration
    needs to (0010 binds them to their destinations)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["secrets"] = secrets
        command.upgrade(config, revision)


def main() -> None:
    """Console entry point ``mailintake-migrate``: bring the database to the latest schema."""
    from mailintake_shared.logging import configure_logging, get_logger

    settings = Settings()
    configure_logging(settings.log_level, service="migrate")
    engine = make_engine(settings)
    upgrade(
        engine, secrets=SecretBox(settings.encryption_keys) if settings.encryption_keys else None
    )
    get_logger(__name__).info("database schema is up to date")
    engine.dispose()
