"""Every setting has its row in the README's settings table (regenerate: make settings-table)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from scripts.settings_table import README, readme_table, table

from mailintake_shared.settings import Settings


def test_readme_settings_table_matches_the_settings_class() -> None:
    assert readme_table(README.read_text()) == table()


def test_settings_read_the_prefix_and_split_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILINTAKE_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("MAILINTAKE_API_TOKENS", "viewer:" + "a" * 64)
    settings = Settings()
    assert settings.topic_prefix == "acme."
    assert settings.bootstrap_servers == ["a:1", "b:2"]
    assert settings.api_tokens == ["viewer:" + "a" * 64]


def test_malformed_token_entry_is_refused() -> None:
    with pytest.raises(ValidationError, match="role admin, reader or viewer"):
        Settings(api_tokens="root:abc")
    assert Settings(api_tokens="reader:" + "b" * 64).api_tokens == ["reader:" + "b" * 64]
