"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    """A terminal's own width; piped or redirected, the full width of what is printed (rich
    would cut tables to 80 columns)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 1_000_000)


console = _console()
errors = _console(stderr=True)


class Format:
    """``--output json`` for every command (set once, by the command line)."""

    json = False


def emit(data: Any, *, as_json: bool, columns: Sequence[str] = (), title: str = "") -> None:
    """``data`` as JSON, or as a table of ``columns`` (a page's items, or one object)."""
    if as_json or Format.json:
        print(json.dumps(data, indent=2, default=str))
        return
    if isinstance(data, dict) and "items" in data:
        table = Table(title=f"{title} ({data['total']} in all)" if title else None)
        for column in columns:
            table.add_column(column)
        for item in data["items"]:
            table.add_row(*(_cell(item.get(column)) for column in columns))
        console.print(table)
        return
    table = Table(show_header=False, title=title or None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, _cell(value))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
