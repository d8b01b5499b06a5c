"""The README's settings table, made from the Settings class.

python scripts/settings_table.py            print the table
python scripts/settings_table.py --write    rewrite it in README.md (make settings-table)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from mailintake_shared.settings import ENV_PREFIX, Settings


def default_of(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return ",".join(map(str, value)) if value else "(none)"
    if field.default is PydanticUndefined:
        return "(required)"
    return str(field.default).lower() if isinstance(field.default, bool) else str(field.default)


BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = default_of(name).replace("|", "\\|")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main() -> None:
    if "--write" in sys.argv:
        text = README.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        README.write_text(f"{head}{BEGIN}\n{table()}{END}{tail}")
    else:
        print(table(), end="")


if __name__ == "__main__":
    main()
