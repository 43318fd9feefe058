"""haflowctl's exit codes: usage errors are 64 (not argparse's 2, which reads as critical),
every command's --help lists its codes, and docs/reference.md's haflowctl table agrees."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest

from haflowd import ctl

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["restart"], ["stop", "a", "b"], ["peers", "--now"], ["drain", "--bogus"],
    ["undrain", "x"], ["--timeout", "soon", "peers"],
])
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(argv) == ctl.EXIT_USAGE == 64
    assert "usage: haflowctl" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--help"]) == 0
    assert ctl.main(["--version"]) == 0


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in ctl.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_has_exit_codes_and_its_help_lists_them() -> None:
    subs = _subparsers()
    assert set(subs) == set(ctl.EXIT_CODES) == set(ctl.COMMANDS)
    for name, parser in subs.items():
        text = parser.format_help()
        assert "exit codes:" in text, name
        for code, what in ctl.EXIT_CODES[name]:
            assert re.search(rf"^  {code}\s+{re.escape(what)}$", text, re.M), (name, code)
        assert re.search(r"^  64\s+usage error$", text, re.M), name
        assert re.search(r"^  130\s+interrupted", text, re.M), name
        assert (re.search(r"^  3\s+haflowd cannot be reached$", text, re.M) is None) == (name == "doctor")


def _reference_rows() -> dict[str, str]:
    """The haflowctl table of docs/reference.md: command word → exit code cell."""
    text = REFERENCE.read_text()
    section = text[text.index("\n## haflowctl\n"):]
    section = section[: section.index("\n## ", 5)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        m = re.match(r"^\| `haflowctl ([a-z-]+)[^`]*` \|.*\| ([^|]+) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_reference_table_matches_the_exit_code_table() -> None:
    rows = _reference_rows()
    assert set(rows) == set(ctl.EXIT_CODES)
    for name in ctl.EXIT_CODES:
        assert rows[name] == ctl.exit_summary(name), name
    text = REFERENCE.read_text()
    assert "64 on a usage error" in text and "130 when interrupted" in text and "exit 3" in text


def test_progress_draws_nothing_when_not_a_terminal() -> None:
    out = io.StringIO()
    with ctl.Progress("web to stop", stream=out) as p:
        p.draw()
        p.say("stopped web (1/1)")
    assert out.getvalue() == "stopped web (1/1)\n"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_and_clears_it() -> None:
    out = _Tty()
    with ctl.Progress("web to stop", stream=out) as p:
        p.say("stopped web (1/1)")
    shown = out.getvalue()
    assert "waiting for web to stop (0 s)" in shown
    assert "stopped web (1/1)\n" in shown
    assert shown.endswith("\r\x1b[K")  # the waiting line is gone at the end


def test_bash_completion_knows_every_command() -> None:
    text = (REFERENCE.parents[1] / "contrib" / "bash-completion" / "haflowctl").read_text()
    m = re.search(r'local commands="([^"]+)"', text)
    assert m is not None
    assert set(m.group(1).split()) == set(ctl.COMMANDS)
    assert "complete -F _haflowctl haflowctl" in text
