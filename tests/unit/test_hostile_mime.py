"""The store's MIME path (header summary, S/MIME detection and unwrapping) on messages made
to exhaust a parser: none raises, each is flagged or passed, in bounded time and memory.

The bounds are guards against a blow-up (a parser that goes quadratic or recursive on
hostile input takes minutes or gigabytes), set far above what the path needs on a slow
machine: they do not measure speed.
"""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime

import pytest

from mailintake_shared.mime import summarize
from mailintake_shared.smime import is_smime, unwrap
from tests.harness.corpus import hostile

HOSTILE = hostile()
SECONDS_BOUND = 20.0
MEMORY_BOUND = 64 * 1024 * 1024


def store_path(raw: bytes) -> list[str]:
    """What the store does with a message: its problems, as the store would note them."""
    _headers, problems = summarize(raw)
    if is_smime(raw):
        info = unwrap(raw, [], datetime.now(UTC)).info
        if info.problem:
            problems.append(f"S/MIME: {info.problem}")
    return problems


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_message_costs_bounded_time_and_memory(name: str) -> None:
    raw = HOSTILE[name]
    tracemalloc.start()
    started = time.process_time()
    try:
        problems = store_path(raw)
        seconds = time.process_time() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < SECONDS_BOUND, f"{name}: {seconds:.1f} s of CPU"
    assert peak < MEMORY_BOUND + 8 * len(raw), f"{name}: {peak / 1e6:.0f} MB at peak"
    assert all(isinstance(p, str) for p in problems)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pkcs7 length bomb", "S/MIME: corrupt S/MIME body"),
        ("pkcs7 deep nesting", "S/MIME: corrupt S/MIME body"),
        ("pkcs7 compressed data", "S/MIME: unsupported S/MIME content type"),
        ("signed with thousands of parts", "S/MIME: "),
    ],
)
def test_hostile_smime_is_flagged_with_its_reason(name: str, expected: str) -> None:
    problems = store_path(HOSTILE[name])
    assert any(p.startswith(expected) for p in problems), problems
