from __future__ import annotations

import random
import re
from email import policy
from email.parser import BytesParser

import pytest

from mailintake_shared import mime
from mailintake_shared.mime import clean_text, summarize
from mailintake_shared.rfc5322 import header_end
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


def _random_message(rng: random.Random) -> bytes:
    """A header block of the kinds mail carries, some of them malformed, then a body."""
    names = [
        "From",
        "to",
        "CC",
        "Subject",
        "subject",
        "Date",
        "Message-ID",
        "message-id",
        "In-Reply-To",
        "References",
        "Received",
        "X-Mailer",
        "Content-Type",
    ]
    values = [
        "Plain words",
        "  leading blanks",
        "trailing blanks \t",
        "=?utf-8?q?caf=C3=A9?=",
        "=?iso-8859-1?b?Y2Fm6Q==?= and text",
        "=?utf-8?q?a?= =?utf-8?q?b?=",
        "=?bogus?x?zz?=",
        "=?utf-8?b?not base64!?=",
        "=?",
        "a=?b",
        "<id@example.org>",
        "",
        "\x0bvt\x0cff",
        "Tue, 24 Nov 2026 10:00:00 +0000",
        "x" * 300,
    ]
    breaks = ["\r\n", "\n", "\r"]
    lines: list[str] = []
    for _ in range(rng.randint(0, 9)):
        kind = rng.random()
        if kind < 0.03:
            lines.append(
                rng.choice(["no colon here", ":empty name", "From someone", "Bad Name: x"])
            )
        elif kind < 0.05 or (kind < 0.25 and lines):
            lines.append(rng.choice([" ", "\t"]) + rng.choice(values))
        else:
            lines.append(
                f"{rng.choice(names)}:{rng.choice(['', ' ', '  ', chr(9)])}{rng.choice(values)}"
            )
    newline = rng.choice(breaks)
    head = "".join(line + (rng.choice(breaks) if rng.random() < 0.1 else newline) for line in lines)
    raw = head.encode("ascii") + newline.encode("ascii") + b"body\r\n"
    if rng.random() < 0.05:
        raw = raw.replace(b"a", b"\xe9", 1)
    return raw


def test_the_fast_header_reading_agrees_with_the_email_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261124)
    messages = [_random_message(rng) for _ in range(4000)] + list(MALFORMED.values())
    read = mime._simple_fields
    read_fast: list[bool] = []

    def counted(head: bytes) -> dict[str, str] | None:
        fields = read(head)
        read_fast.append(fields is not None)
        return fields

    monkeypatch.setattr(mime, "_simple_fields", counted)
    fast = [summarize(raw) for raw in messages]
    monkeypatch.setattr(mime, "_simple_fields", lambda head: None)
    slow = [summarize(raw) for raw in messages]
    for raw, one, other in zip(messages, fast, slow, strict=True):
        assert one == other, raw
    # Both ways were taken often: the fast one, and the email package for the rest.
    assert 1000 < sum(read_fast) < len(messages) - 1000, sum(read_fast)


# Header values as mail clients show them: (field, value as sent, what the summary shows,
# what the email package's policy.default shows where it differs, else None). The cases are
# those of issues 15 and 17 and the examples of RFC 2047 §8.
DEFAULT_AGREES = None
HEADER_CASES = [
    # Folded encoded words: unfold first (RFC 5322 §2.2.3), then decode (RFC 2047 §6.2).
    (
        "Subject",
        b"=?UTF-8?Q?=E2=80=A6the_example.?=\r\n =?US-ASCII?Q?.._so,_cool!?=",
        "…the example... so, cool!",
        DEFAULT_AGREES,
    ),
    (
        "Subject",
        b"Nodemailer is unicode friendly =?UTF-8?Q?=E2=9C=94?=\r\n (1476358788189)",
        "Nodemailer is unicode friendly ✔ (1476358788189)",
        DEFAULT_AGREES,
    ),
    (
        "Subject",
        b"=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
        b"    =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
        "If you can read this you understand the example.",
        DEFAULT_AGREES,
    ),
    ("Subject", b"(=?ISO-8859-1?Q?a?=)", "(a)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a?= b)", "(a b)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", "(ab)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", "(ab)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a_b?=)", "(a b)", DEFAULT_AGREES),
    ("Subject", b"(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)", DEFAULT_AGREES),
    # A character's bytes split over two words; base64 without its padding.
    ("Subject", b"=?UTF-8?Q?=E2=9C?= =?UTF-8?Q?=94?=", "✔", DEFAULT_AGREES),
    ("Subject", b"=?utf-8?b?w6k?=", "é", DEFAULT_AGREES),
    # RFC 2231 §5: a language after the charset.
    (
        "From",
        b"=?US-ASCII*EN?Q?Keith_Moore?= <moore@cs.utk.edu>",
        "Keith Moore <moore@cs.utk.edu>",
        DEFAULT_AGREES,
    ),
    ("Subject", b"=?UTF-8*de?Q?Gr=C3=BC=C3=9Fe?=", "Grüße", DEFAULT_AGREES),
    # Undeclared 8-bit bytes: UTF-8 when valid, else Windows-1252 (policy.default: U+FFFD).
    ("Subject", "Grüße aus Köln".encode(), "Grüße aus Köln", DEFAULT_AGREES),
    ("Subject", "Grüße aus Köln".encode("latin-1"), "Grüße aus Köln", "Gr��e aus K�ln"),
    (
        "From",
        "Jörg Müller <j@example.org>".encode("latin-1"),
        "Jörg Müller <j@example.org>",
        "J�rg M�ller <j@example.org>",
    ),
    ("Subject", "„Grüße“ 5 €".encode("cp1252"), "„Grüße“ 5 €", "�Gr��e� 5 �"),
    (
        "To",
        "Jörg <j@example.org>, =?ISO-8859-1?Q?Andr=E9?= <a@example.org>".encode("latin-1"),
        "Jörg <j@example.org>, André <a@example.org>",
        "J�rg <j@example.org>, André <a@example.org>",
    ),
    # Mail labelled ISO-8859-1 carries Windows-1252 (policy.default: C1 control characters).
    ("Subject", b"=?iso-8859-1?q?=93quoted=94_=80?=", "“quoted” €", "\x93quoted\x94 \x80"),
    # A word that cannot be read stays as written, flagged (policy.default guesses).
    ("Subject", b"=?x-unknown?Q?abc?=", "=?x-unknown?Q?abc?=", "abc"),
    ("Subject", b"=?utf-8?B?!!!notbase64?=", "=?utf-8?B?!!!notbase64?=", "!!!notbase64"),
]
UNREADABLE = {b"=?x-unknown?Q?abc?=", b"=?utf-8?B?!!!notbase64?="}


def _with(field: str, value: bytes) -> bytes:
    return b"Message-ID: <case@x>\r\n" + field.encode() + b": " + value + b"\r\n\r\nbody\r\n"


def _shown(field: str, raw: bytes) -> str | None:
    summary = summarize(raw)[0].model_dump()
    return summary["from_" if field == "From" else field.lower()]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("field", "value", "shown", "default_shows"), HEADER_CASES)
def test_headers_are_decoded_as_mail_clients_show_them(
    field: str, value: bytes, shown: str, default_shows: str | None
) -> None:
    raw = _with(field, value)
    assert _shown(field, raw) == shown
    problems = summarize(raw)[1]
    assert (mime.EIGHT_BIT_PROBLEM in problems) == (not value.isascii())
    assert (f"unreadable {field} header" in problems) == (value in UNREADABLE)
    # What policy.default makes of it: the same, or the error noted in the case.
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert str(parsed[field]) == (default_shows or shown)


def test_the_header_end_is_where_the_pattern_finds_it() -> None:
    pattern = re.compile(rb"\r?\n\r?\n")
    rng = random.Random(20261130)
    samples = [bytes(rng.choice(b"\r\na") for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    for raw in samples:
        for limit in (len(raw), max(len(raw) - 2, 0), 5):
            found = pattern.search(raw, 0, limit)
            assert header_end(raw, limit) == (found.span() if found else None), (raw, limit)
