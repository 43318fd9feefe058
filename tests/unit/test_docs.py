"""The README stays a README, and no link in it or in docs/ leads nowhere or out of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250

# [text](target) or [text](target "title"); images too. Not reference-style links.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every relative link outside code blocks and code spans."""
    found: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if target.startswith("#") or EXTERNAL.match(target):
                continue
            found.append((number, target))
    return found


def test_relative_links_finds_links_and_skips_code_and_urls() -> None:
    text = (
        "see [a](docs/a.md#x) and [b](<b c.md>) and [c](https://example.org/) [d](#here)\n"
        "`[e](e.md)`\n"
        "```\n[f](f.md)\n```\n"
        '![g](img/g.png "title")\n'
    )
    assert relative_links(text) == [(1, "docs/a.md#x"), (6, "img/g.png")]


def test_readme_is_at_most_250_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_relative_link_points_to_a_file_in_the_repository() -> None:
    broken: list[str] = []
    for doc in documents():
        for number, target in relative_links(doc.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            if not path:
                continue
            resolved = (doc.parent / path).resolve()
            where = f"{doc.relative_to(ROOT)}:{number}: {target}"
            if not resolved.is_relative_to(ROOT):
                broken.append(f"{where} (outside the repository)")
            elif not resolved.exists():
                broken.append(f"{where} (no such file)")
    assert broken == [], "\n".join(broken)
    assert len(documents()) > 1
