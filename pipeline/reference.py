"""The README's reference tables, made from the code: every config key (pipeline/config.py) and every drop
reason (pipeline/reasons.py).

    python -m pipeline.reference            # rewrite the tables in README.md between their markers
    python -m pipeline.reference --check    # exit 1 if README.md is out of date (tests/test_reference.py)

A key's meaning is the comment block above its field in pipeline/config.py (a comment describing several
consecutive fields is shown on the first); its allowed values come from the field's type and Range.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Annotated, Literal

from pipeline.config import Config, Range
from pipeline.reasons import REASONS

README = Path(__file__).resolve().parents[1] / "README.md"
MARKERS = {"config": ("<!-- config-reference -->", "<!-- /config-reference -->"),
           "reasons": ("<!-- reasons-reference -->", "<!-- /reasons-reference -->")}


def field_comments(section_type: type) -> dict[str, str]:
    """field name -> the comment lines directly above it in its dataclass's source."""
    comments, pending = {}, []
    for line in inspect.getsource(section_type).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("# ").rstrip())
        elif ":" in text and not text.startswith(("def ", "@", '"""')) and line.startswith("    ") and not line.startswith("     "):
            name = text.split(":")[0].strip()
            comments[name] = " ".join(pending)
            pending = []
        elif not text:
            pending = []
    return comments


def allowed(hint) -> str:
    """The values a field accepts, from its type: a range, a set of choices, or nothing to add."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        ranges = [str(rule) for rule in typing.get_args(hint)[1:] if isinstance(rule, Range)]
        return " ".join(ranges) or allowed(typing.get_args(hint)[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(choice) for choice in typing.get_args(hint))
    if origin is list:
        inner = allowed(typing.get_args(hint)[0])
        return f"list of {inner}" if inner else ""
    return ""


def _value(value) -> str:
    text = json.dumps(value, default=str)
    return f"`{text if len(text) <= 60 else text[:57] + '...'}`"


def _table(name: str, section_type: type) -> list[str]:
    """A section's table, then the tables of the sections nested in it ([crawl.archive])."""
    comments = field_comments(section_type)
    hints = typing.get_type_hints(section_type, include_extras=True)
    rows, nested = [f"**[{name}]**\n", "| key | default | allowed | meaning |", "|---|---|---|---|"], []
    for f in dataclasses.fields(section_type):
        default = getattr(section_type(), f.name)
        if dataclasses.is_dataclass(default):
            nested += _table(f"{name}.{f.name}", type(default))
            continue
        rows.append(f"| `{f.name}` | {_value(default)} | {allowed(hints[f.name])} | "
                    f"{comments.get(f.name, '').replace('|', chr(92) + '|')} |")
    return ["\n".join(rows), *nested]


def config_tables() -> str:
    return "\n\n".join(table for section in dataclasses.fields(Config) for table in _table(section.name, section.default_factory))


def reasons_table() -> str:
    rows = ["| reason | counted by | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {stages} | {meaning.replace('|', chr(92) + '|')} |"
             for name, (stages, meaning) in REASONS.items()]
    return "\n".join(rows)


def render(text: str) -> str:
    """`text` (the README) with each marked table replaced by its current rendering."""
    for name, body in (("config", config_tables()), ("reasons", reasons_table())):
        start, end = MARKERS[name]
        if start not in text or end not in text:
            raise ValueError(f"README.md lacks the markers {start} ... {end}")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md's reference tables are out of date: run `python -m pipeline.reference`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
