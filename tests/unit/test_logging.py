from __future__ import annotations

import io
import json
import logging

from pydantic import SecretStr

from mailintake_shared.logging import configure_logging, get_logger, redact_text


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secret_keys_are_redacted_at_any_depth_and_flags_kept() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", service="unit", stream=stream)
    get_logger("t").info(
        "login",
        password="p1",
        body={"client_secret": "p2", "nested": [{"refresh_token": "p3"}], "count": 2},
        has_password=True,
        secret=SecretStr("p4"),
    )
    text = stream.getvalue()
    for planted in ("p1", "p2", "p3", "p4"):
        assert f'"{planted}"' not in text
    (line,) = _lines(stream)
    assert line["has_password"] is True
    assert line["body"] == {
        "client_secret": "[REDACTED]",
        "nested": [{"refresh_token": "[REDACTED]"}],
        "count": 2,
    }
    assert line["service"] == "unit"
    assert line["level"] == "info"


def test_secrets_inside_free_text_and_exceptions_and_stdlib_logs() -> None:
    stream = io.StringIO()
    configure_logging("INFO", service="unit", stream=stream)
    logging.getLogger("some.library").warning("sending Authorization: Bearer abc.def.ghi")
    try:
        raise RuntimeError("login failed for password=hunter2&user=x")
    except RuntimeError:
        get_logger("t").exception("failed")
    text = stream.getvalue()
    assert "abc.def.ghi" not in text
    assert "hunter2" not in text
    assert all(isinstance(line, dict) for line in _lines(stream))


def test_redact_text_keeps_ordinary_words() -> None:
    assert redact_text("token count is fine") == "token count is fine"
    assert redact_text('{"password": "x1"}') == '{"password": "[REDACTED]"}'


def test_msal_token_requests_never_reach_the_log_even_at_debug() -> None:
    import io
    import logging

    from mailintake_shared.logging import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", service="test", stream=stream)
    try:
        logging.getLogger("msal.oauth2cli.oauth2").debug('{"code": "the-code"}')
        logging.getLogger("mailintake.anything").debug("still logged")
    finally:
        configure_logging("INFO", service="test")
    assert "the-code" not in stream.getvalue()
    assert "still logged" in stream.getvalue()
