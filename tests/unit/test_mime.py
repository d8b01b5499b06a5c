from __future__ import annotations

import pytest

from mailintake_store.mime import clean_text, summarize
from tests.harness.corpus import MALFORMED
from tests.harness.mail import make_message


def test_clean_message_has_its_headers_and_no_problem() -> None:
    headers, problems = summarize(make_message(7))
    assert problems == []
    assert headers.subject == "Request 7"
    assert headers.from_ == "Customer 7 <customer@example.org>"
    assert headers.message_id is not None
    assert headers.message_id.startswith("<")


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_every_hostile_message_gives_a_summary_without_raising(name: str) -> None:
    headers, problems = summarize(MALFORMED[name])
    for value in headers.model_dump().values():
        assert value is None or ("\x00" not in value and len(value) <= 10_000)
        assert value is None or value.encode("utf-8")  # no lone surrogates
    flawed_header = {
        "NUL bytes",
        "no Message-ID",
        "8-bit headers",
        "header only",
        "garbage",
        "bad encoded-word",
    }
    assert bool(problems) == (name in flawed_header), problems


def test_specific_problems_are_named() -> None:
    assert summarize(b"")[1] == ["empty message"]
    assert "NUL bytes in the message" in summarize(MALFORMED["NUL bytes"])[1]
    assert "no Message-ID header" in summarize(MALFORMED["no Message-ID"])[1]
    assert any("8-bit" in p for p in summarize(MALFORMED["8-bit headers"])[1])
    assert "no blank line between header and body" in summarize(MALFORMED["header only"])[1]


def test_clean_text() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x" * 20_000) == "x" * 10_000
    assert clean_text(b"\xff".decode("utf-8", "surrogateescape")) == "\ufffd"
