"""Structured JSON logs on standard output, with secrets redacted.

Every log line is one JSON object. Values under keys that name a secret (password,
token, secret, authorization, private key, ...) are replaced by ``[REDACTED]`` before
rendering, whatever logged them; ``SecretStr`` values render masked anyway. Standard
library loggers (uvicorn, kafka-python, alembic) go through the same renderer.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "[REDACTED]"
SECRET_KEY_PATTERN = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authorization|api[_-]?key|private[_-]?key|"
    r"credential|cookie|code_verifier|encryption_keys",
    re.IGNORECASE,
)
# key=value or "key": "value" pairs inside free text (exception messages, library logs).
_INLINE_SECRET = re.compile(
    r"(?P<key>\b[\w-]*(?:password|passwd|secret|token|authorization)[\w-]*\b)"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>(?:Bearer\s+)?[^\s\"',&}]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    return _INLINE_SECRET.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}", text)


def _redact_value(key: str, value: Any) -> Any:
    if SECRET_KEY_PATTERN.search(key) and value not in (None, "", False):
        if isinstance(value, bool | int):
            return value  # counts and flags such as has_password are not secrets
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def _exception_text(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = redact_text(event_dict["exception"])
    return event_dict


def configure_logging(level: str, *, service: str, stream: Any = None) -> None:
    """Route structlog and the standard library's logging to one JSON stream."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _exception_text,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python is chatty at INFO (every connect and rebalance step).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # msal logs token requests at DEBUG with their form data: the authorization code and the
    # PKCE verifier in clear. Never below INFO, whatever MAILINTAKE_LOG_LEVEL says.
    logging.getLogger("msal").setLevel(max(logging.INFO, logging.getLevelName(level)))


def _add_service(service: str) -> Any:
    def add(_logger: WrappedLogger, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict.setdefault("service", service)
        return event_dict

    return add


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
