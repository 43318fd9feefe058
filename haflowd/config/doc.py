"""The Config tables of docs/reference.md, written from the schema.

``python -m haflowd.config.doc`` rewrites the part between the markers (the prose and the
TOML example around it stay as written); ``--check`` exits 1 if the file differs from what
it would write. A unit test runs the same comparison.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from haflowd.config.schema import SCHEMA, SECTIONS, Key
from haflowd.config.values import human_duration, human_size

BEGIN = "<!-- BEGIN config tables: written by `python -m haflowd.config.doc` from haflowd/config/schema.py -->"
END = "<!-- END config tables -->"
REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def _bound(k: Key, value: float | None) -> str:
    if value is None:
        return "—" if k.type == "integer" and k.lo is not None else ""
    if k.type == "duration":
        return human_duration(value)
    if k.type == "size":
        return human_size(int(value))
    return str(int(value))


def _default(k: Key) -> str:
    if k.shown is not None:
        return k.shown
    if k.default is None:
        return "—"
    if k.type == "duration":
        return human_duration(k.default)
    if k.type == "size":
        return human_size(k.default)
    if isinstance(k.default, bool):
        return "`true`" if k.default else "`false`"
    if isinstance(k.default, dict):
        return "`{}`"
    return f"`{json.dumps(k.default)}`"


def _row(k: Key) -> str:
    cells = (f"`{k.path}`", _bound(k, k.lo), _bound(k, k.hi), _default(k), k.type.replace("|", "\\|"), k.doc)
    return "| " + " | ".join(cells) + " |"


def tables() -> str:
    """The generated part, markers included."""
    out = [BEGIN]
    for section, title in SECTIONS.items():
        rows = [k for k in SCHEMA if k.path.rpartition(".")[0] == section]
        out += ["", f"{title}", "", "| key | minimum | maximum | default | type | what |",
                "| --- | --- | --- | --- | --- | --- |", *map(_row, rows)]
    return "\n".join([*out, "", END])


def render(text: str) -> str:
    """``text`` (the reference) with its generated part written afresh."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the reference has no {BEGIN!r} ... {END!r} markers")
    return text[:start] + tables() + text[end + len(END):]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    path = Path(paths[0]) if paths else REFERENCE
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if check:
        if new != text:
            print(f"{path}: the config tables differ from the schema; run python -m haflowd.config.doc",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
