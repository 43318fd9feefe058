"""The csync2 runner's pure parts: commands and csync2's words. Its bounds (timeout, probe,
shutdown) run real processes: tests/integration/test_sync_runner_bounds.py."""

from __future__ import annotations

import pytest

from haflowd.sync.runner import (
    Csync2Command,
    RunOutput,
    forced_rows,
    parse_peer_mtime,
    parse_pending,
)
from haflowd.sync.schedule import Outcome

# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("base", "check", "update", "pending"),
    [
        (["csync2", "-x"], ["csync2", "-cr", "/"], ["csync2", "-u", "-v", "-P", "nodeb"], ["csync2", "-M"]),
        (["csync2", "-xv"], ["csync2", "-cr", "/"], ["csync2", "-u", "-v", "-P", "nodeb"], ["csync2", "-M"]),
        (["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-x"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-cr", "/"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-u", "-v", "-P", "nodeb"],
         ["/usr/sbin/csync2", "-N", "nodea", "-D", "/db", "-M"]),
        (["csync2", "-xrB", "-Nnodea", "-C", "dags", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-cr", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-ur", "-v", "-P", "nodeb", "/opt/airflow/dags"],
         ["csync2", "-B", "-Nnodea", "-C", "dags", "-M"]),
        (["csync2", "-xN", "nodea"], ["csync2", "-N", "nodea", "-cr", "/"],
         ["csync2", "-N", "nodea", "-u", "-v", "-P", "nodeb"], ["csync2", "-N", "nodea", "-M"]),
        (["sudo", "-u", "sync", "csync2", "-x"], ["sudo", "-u", "sync", "csync2", "-cr", "/"],
         ["sudo", "-u", "sync", "csync2", "-u", "-v", "-P", "nodeb"], ["sudo", "-u", "sync", "csync2", "-M"]),
        (["/usr/local/bin/dag-sync"], None, ["/usr/local/bin/dag-sync", "-P", "nodeb"], None),
    ],
)
def test_commands_made_from_the_base(base: list[str], check: list[str] | None, update: list[str],
                                     pending: list[str] | None) -> None:
    cmd = Csync2Command(tuple(base))
    assert cmd.check_argv() == check
    assert cmd.update_argv("nodeb") == update
    assert cmd.pending_argv() == pending
    mark = cmd.mark_all_argv()
    assert mark is None if check is None else mark == [*check[:-2], "-mr", check[-1]]


def test_options_of_the_base() -> None:
    assert Csync2Command(("csync2", "-N", "nodea", "-D", "/db", "-x")).option("-N") == "nodea"
    assert Csync2Command(("csync2", "-xNnodea", "-Cdags")).option("-C") == "dags"
    assert Csync2Command(("csync2", "-x")).option("-N") is None


# --------------------------------------------------------------------------- csync2's words (as it prints them)

OK_RUN = """\
Marking file as dirty: %dags%/f2.py
Connecting to host nodec (PLAIN) ...
Bound to 198.18.0.11:0 as nodea.
Connect to 198.18.0.13:30865 (nodec).
Updating %dags%/f2.py on nodec ...
Connection closed.
Finished with 0 errors.
"""

REFUSED_RUN = """\
Marking file as dirty: %dags%/f3.py
Connecting to host nodeb (PLAIN) ...
Bound to 198.18.0.11:0 as nodea.
Can't create socket: Connection refused
ERROR: Connection to remote host `nodeb' failed.
Host stays in dirty state. Try again later...
Finished with 1 errors.
"""

LOST_YOUNGER = """\
Marking file as dirty: %dags%/c.py
Connecting to host nodeb (PLAIN) ...
Connect to 198.18.0.12:30865 (nodeb).
Updating %dags%/c.py on nodeb ...
Do not auto-resolve conflict: Lost 'younger/older' test.
File stays in dirty state. Try again later...
Connection closed.
Finished with 1 errors.
"""

WON_YOUNGER = """\
Connecting to host nodea (PLAIN) ...
Bound to 198.18.0.12:0 as nodeb.
Connect to 198.18.0.11:30865 (nodea).
Updating %dags%/f.py on nodea ...
Auto-resolving conflict: Won 'younger/older' test.
Updating %dags%/f.py on nodea ...
Connection closed.
Finished with 0 errors.
"""

DIRTY_BOTH = """\
While syncing file /etc/hosts:
ERROR from peer apollo:
    File is also marked dirty here!
Finished with 1 errors.
"""

PEER_ERROR = """\
Updating %dags%/x.py on nodeb ...
ERROR from peer nodeb:
    Permission denied!
Finished with 1 errors.
"""


@pytest.mark.parametrize(
    ("text", "code", "outcome", "detail", "conflicts"),
    [
        (OK_RUN, 0, Outcome.SYNCED, None, ()),
        (REFUSED_RUN, 1, Outcome.ERROR,
         "csync2 exited with 1: Can't create socket: Connection refused; "
         "ERROR: Connection to remote host `nodeb' failed.", ()),
        (LOST_YOUNGER, 1, Outcome.CONFLICT, "1 file(s) in conflict: %dags%/c.py", ("%dags%/c.py",)),
        (DIRTY_BOTH, 1, Outcome.CONFLICT, "1 file(s) in conflict: /etc/hosts", ("/etc/hosts",)),
        (PEER_ERROR, 1, Outcome.ERROR, "csync2 exited with 1: ERROR from peer nodeb: Permission denied!", ()),
        ("This host (vm) is not a member of any configured group.\n", 1, Outcome.ERROR,
         "csync2 exited with 1: This host (vm) is not a member of any configured group.", ()),
        ("", 3, Outcome.ERROR, "csync2 exited with 3: no output", ()),
    ],
)
def test_run_output(text: str, code: int, outcome: Outcome, detail: str | None, conflicts: tuple[str, ...]) -> None:
    out = RunOutput()
    for line in text.splitlines():
        out.feed(line)
    r = out.verdict(code)
    assert (r.outcome, r.detail, r.conflicts) == (outcome, detail, conflicts)
    assert r.detail is None or "\n" not in r.detail


def test_a_conflict_this_node_won_is_named() -> None:
    """csync2 replaced the peer's version with ours (exit 0): not silent any more."""
    out = RunOutput()
    for line in WON_YOUNGER.splitlines():
        out.feed(line)
    r = out.verdict(0)
    assert (r.outcome, r.conflicts, r.resolved) == (Outcome.SYNCED, (), ("%dags%/f.py",))


def test_run_output_is_bounded() -> None:
    out = RunOutput()
    for i in range(100_000):
        out.feed(f"Updating %dags%/f{i}.py on nodeb ...")
        out.feed("Do not auto-resolve conflict: Lost 'younger/older' test.")
        out.feed(f"ERROR: something {i} failed")
    assert len(out.conflicts) == 1000 and len(out.errors) == 5


def test_parse_pending() -> None:
    text = ("chary\tnodea\tnodeb\t%dags%/f3.py\nforce\tnodea\tnodeb\t%dags%/f4.py\n"
            "chary\tnodea\tnodec\t%dags%/f4.py\nnoise\n")
    assert parse_pending(text) == {"nodeb": 2, "nodec": 1}
    assert parse_pending("") == {}


def test_env_assignment_naming_a_csync2_directory_is_not_the_program() -> None:
    """``env CSYNC2_SYSTEM_DIR=/etc/csync2 csync2 ...``: the assignment's basename is "csync2",
    but the program is the word after it (before, the split took the assignment for csync2
    and ran ``env CSYNC2_SYSTEM_DIR=/etc/csync2 -N nodea -cr csync2``)."""
    cmd = Csync2Command(("env", "CSYNC2_SYSTEM_DIR=/etc/csync2", "csync2", "-N", "nodea", "-x"))
    assert cmd.check_argv() == ["env", "CSYNC2_SYSTEM_DIR=/etc/csync2", "csync2", "-N", "nodea", "-cr", "/"]
    assert cmd.update_argv("nodeb") == ["env", "CSYNC2_SYSTEM_DIR=/etc/csync2", "csync2", "-N", "nodea",
                                        "-u", "-v", "-P", "nodeb"]


# --------------------------------------------------------------------------- same-second ties

REMOVAL = """\
Deleting %dags%/gone.py on nodeb ...
Do not auto-resolve conflict: This is a removal.
File stays in dirty state. Try again later...
Finished with 1 errors.
"""


@pytest.mark.parametrize(
    ("text", "code", "conflicts", "lost_age"),
    [
        (LOST_YOUNGER, 1, ("%dags%/c.py",), ("%dags%/c.py",)),  # the peer is younger, or the same second
        (WON_YOUNGER, 0, (), ()),
        (DIRTY_BOTH, 1, ("/etc/hosts",), ()),  # auto none: nothing to compare
        (REMOVAL, 1, ("%dags%/gone.py",), ()),  # a deletion against a change: the change wins, not a tie
    ],
)
def test_which_lost_conflicts_may_be_a_tie(text: str, code: int, conflicts: tuple[str, ...],
                                           lost_age: tuple[str, ...]) -> None:
    out = RunOutput()
    for line in text.splitlines():
        out.feed(line)
    r = out.verdict(code)
    assert (r.conflicts, r.lost_age) == (conflicts, lost_age)
    assert r.removals == (("%dags%/gone.py",) if text is REMOVAL else ())


def test_the_peers_mtime_from_its_check_text() -> None:
    lines = [
        "Connecting to host nodeb (PLAIN) ...",
        "Fetched tuple from peer: %dags%/other.py [v1:mtime=5:mode=33188:uid=0:gid=0:type=reg:size=3]",
        "Fetched tuple from peer: %dags%/tie.py [v1:mtime=1796663837:mode=33188:uid=0:gid=0:type=reg:size=47]",
        "X\tnodea\tnodeb\t%dags%/tie.py",
    ]
    assert parse_peer_mtime(lines, "%dags%/tie.py") == 1796663837
    assert parse_peer_mtime(lines, "%dags%/missing.py") is None  # not on the peer
    assert parse_peer_mtime(["Fetched tuple from peer: %dags%/d [v1:mode=16877:type=dir]"], "%dags%/d") is None


def test_forced_rows_and_the_tie_commands() -> None:
    text = "chary\tnodea\tnodeb\t/d/x.py\nforce\tnodea\tnodec\t/d/x.py\nforce\tnodea\tnodeb\t/d/y.py\n"
    assert forced_rows(text, "/d/x.py") == ["nodec"]
    assert forced_rows(text, "/d/z.py") == []
    cmd = Csync2Command(("csync2", "-N", "nodea", "-D", "/db", "-xv"))
    assert cmd.force_argv("/d/x.py") == ["csync2", "-N", "nodea", "-D", "/db", "-f", "/d/x.py"]
    assert cmd.mark_argv("/d/x.py") == ["csync2", "-N", "nodea", "-D", "/db", "-m", "/d/x.py"]
    assert cmd.peer_check_argv("nodea", "nodeb", "/d/x.py") == \
        ["csync2", "-N", "nodea", "-D", "/db", "-vv", "-T", "nodea", "nodeb", "/d/x.py"]
    script = Csync2Command(("/usr/local/bin/dag-sync",))
    assert script.force_argv("/d/x.py") is None and script.peer_check_argv("a", "b", "/d/x.py") is None
