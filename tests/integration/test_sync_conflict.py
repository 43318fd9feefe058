"""One DAG file edited on both sides of a partition: csync2's ``auto younger`` keeps the
newer version everywhere, its ``backup-directory`` keeps the older one, and haflowd
says so (GET /sync ``conflicts``, the metric, a warning naming the file and the place).

Real csync2 servers and haflowd daemons in three network namespaces (see
tests/fixtures/csync2.py); the partition is n1's link going down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

from tests.conftest import wait_until
from tests.fixtures.csync2 import SyncCluster

ALL = ("n1", "n2", "n3")


def test_a_dag_edited_on_both_sides_of_a_partition_loses_neither_version(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons()
    base = "from airflow import DAG  # base\n"
    c.write("n1", "shared.py", base)
    c.wait_files(ALL, {"shared.py": base}, 10, "the base version everywhere")
    c.quiet(for_s=0.5)

    c.topo.link(1, up=False)  # n1 is cut off from n2 and n3
    older, newer = "from airflow import DAG  # n1's edit\n", "from airflow import DAG  # n2's edit, newer\n"
    now = time.time()
    os.utime(c.write("n1", "shared.py", older), (now - 20, now - 20))
    os.utime(c.write("n2", "shared.py", newer), (now - 10, now - 10))
    c.wait_files(("n3",), {"shared.py": newer}, 10, "n2's edit on n3 during the partition")
    wait_until(lambda: (c.peer("n1", "n2")["pending_files"] or 0) >= 1, 10,
               "n1's edit checked in and waiting for n2 (csync2 -M)")

    t0 = time.monotonic()
    c.topo.link(1, up=True)
    took = c.wait_files(ALL, {"shared.py": newer}, 15, "the newer version everywhere after the heal", t0)
    print(f"\nheal -> one version everywhere after {max(took.values()):.2f}s")

    kept = c["n1"].backup_of("shared.py")  # csync2's backup-directory on the losing node
    assert kept.read_text() == older, f"n1's version is not kept at {kept}"

    def n2_reports() -> list[dict[str, object]]:
        return [x for x in c.sync("n2")["conflicts"] if str(x.get("file", "")).endswith("/shared.py")]

    wait_until(lambda: bool(n2_reports()), 10, "the conflict in n2's GET /sync")
    [entry] = n2_reports()
    print(f"n2's GET /sync conflicts: {json.dumps(entry)}")
    assert entry["peer"] == "n1" and entry["winner"] == "n2" and entry["loser"] == "n1", entry
    assert entry["kept_on"] == "n1" and entry["kept_at"] == str(kept) and entry["resolved"] is True, entry
    assert entry["path"] == str(c["n2"].dags / "shared.py") and isinstance(entry["time"], float), entry
    # n1 may have seen its side of it (it lost when it pushed first): then it says the same
    for x in c.sync("n1")["conflicts"]:
        assert (x["winner"], x["kept_on"], x["kept_at"]) == ("n2", "n1", str(kept)), x

    _, metrics = c.daemon("n2").get("/metrics")
    m = re.search(r"^haflowd_sync_conflicts_resolved_total (\S+)$", metrics.decode(), re.M)
    assert m and float(m.group(1)) >= 1, metrics.decode()[-2000:]
    logged = [e for e in c.daemon("n2").log_events() if e.get("event") == "sync_conflict"]
    assert any(e.get("level") == "warning" and e["file"].endswith("/shared.py") and e["kept_at"] == str(kept)
               for e in logged), logged
    c.quiet(for_s=0.5)
    for n in ALL:  # settled: nothing pending, no open conflict, the check passes
        s = c.sync(n)
        assert all(p["pending_files"] == 0 and not p["conflicts"] for p in s["peers"].values()), \
            (n, json.dumps(s["peers"]))
        assert all(x["resolved"] for x in s["conflicts"]), s["conflicts"]
        _, health = c.daemon(n).get("/health")
        assert {ch["name"]: ch["status"] for ch in health["checks"]}["sync"] == "passing", health


def _write_at(path: os.PathLike[str] | str, text: str, mtime: int) -> None:
    """The whole new version with its mtime at once (a temp file csync2 excludes, renamed):
    no check can see the content without the mtime."""
    tmp = f"{os.fspath(path)}~"
    with open(tmp, "w") as f:
        f.write(text)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def test_two_edits_in_the_same_mtime_second_settle_on_the_first_host_name(csync2_cluster: SyncCluster) -> None:
    """csync2's ``auto younger`` compares whole seconds: two edits in one second both lose
    it, on both nodes, for ever (seen in scripts/soak: edits 0.3 s and 0.59 s apart). haflowd
    settles the tie: the node whose csync2 host name sorts first (n1 = nodea) forces its
    version; n2's is kept in n2's backup directory."""
    c = csync2_cluster
    c.start_daemons()
    base = "from airflow import DAG  # base\n"
    c.write("n1", "tie.py", base)
    c.wait_files(ALL, {"tie.py": base}, 10, "the base version everywhere")
    c.quiet(for_s=0.5)

    c.topo.link(1, up=False)
    first, second = "from airflow import DAG  # n1's edit\n", "from airflow import DAG  # n2's edit, same second\n"
    second_of_both = int(time.time()) - 10
    _write_at(c["n1"].dags / "tie.py", first, second_of_both)
    _write_at(c["n2"].dags / "tie.py", second, second_of_both)
    c.wait_files(("n3",), {"tie.py": second}, 10, "n2's edit on n3 during the partition")
    wait_until(lambda: (c.peer("n1", "n2")["pending_files"] or 0) >= 1, 10,
               "n1's edit checked in and waiting for n2 (csync2 -M)")

    t0 = time.monotonic()
    c.topo.link(1, up=True)
    took = c.wait_files(ALL, {"tie.py": first}, 15, "the first host name's version everywhere after the heal", t0)
    print(f"\nheal -> one version everywhere after {max(took.values()):.2f}s")

    kept = c["n2"].backup_of("tie.py")
    assert kept.read_text() == second, f"n2's version is not kept at {kept}"

    def settled() -> list[dict[str, object]]:
        return [x for x in c.sync("n1")["conflicts"]
                if str(x.get("file", "")).endswith("/tie.py") and x.get("peer") == "n2" and x.get("resolved")]

    wait_until(lambda: bool(settled()), 10, "the tie settled in n1's GET /sync")
    [entry] = settled()
    print(f"n1's GET /sync conflicts: {json.dumps(entry)}")
    assert (entry["winner"], entry["loser"], entry["kept_on"]) == ("n1", "n2", "n2"), entry
    assert entry["kept_at"] == str(kept) and entry["rule"] == "tie: first name", entry
    logged = [e for e in c.daemon("n1").log_events() if e.get("event") == "sync_conflict_tie_settled"]
    assert any(e.get("level") == "warning" and e["file"].endswith("/tie.py") and e["kept_at"] == str(kept)
               for e in logged), logged
    c.quiet(for_s=0.5)
    for n in ALL:  # settled for good: nothing pending, nothing open, every version the same
        s = c.sync(n)
        assert all(p["pending_files"] == 0 and not p["conflicts"] for p in s["peers"].values()), \
            (n, json.dumps(s["peers"]))
        assert all(x["resolved"] for x in s["conflicts"]), s["conflicts"]
        assert c.files(n)["tie.py"] == first, n


def test_a_deletion_against_a_change_keeps_the_change_and_says_so(csync2_cluster: SyncCluster) -> None:
    """One side deletes the DAG, the other edits it: csync2 never lets a deletion win a
    conflict (``This is a removal``): the edit comes back on the deleting node, whatever the
    mtimes. haflowd forces nothing here; the deleting node reports it with its rule. (n2's
    haflowd is held while n1 meets the conflict, so that n1's side of it is seen.)"""
    c = csync2_cluster
    c.start_daemons()
    base = "from airflow import DAG  # base\n"
    c.write("n1", "del.py", base)
    c.wait_files(ALL, {"del.py": base}, 10, "the base version everywhere")
    c.quiet(for_s=0.5)

    c.topo.link(1, up=False)
    edit = "from airflow import DAG  # n2's edit\n"
    (c["n1"].dags / "del.py").unlink()
    _write_at(c["n2"].dags / "del.py", edit, int(time.time()) - 10)  # older than the deletion
    c.wait_files(("n3",), {"del.py": edit}, 10, "n2's edit on n3 during the partition")
    wait_until(lambda: (c.peer("n1", "n2")["pending_files"] or 0) >= 1, 10,
               "n1's deletion checked in and waiting for n2 (csync2 -M)")

    def n1_removal() -> list[dict[str, object]]:
        return [x for x in c.sync("n1")["conflicts"] if str(x.get("file", "")).endswith("/del.py")]

    c.quiet(("n2",), for_s=0.3)
    c.daemon("n2").signal(signal.SIGSTOP)
    try:
        c.topo.link(1, up=True)
        wait_until(lambda: bool(n1_removal()), 10, "n1's deletion meeting n2's edit, in n1's GET /sync")
    finally:
        c.daemon("n2").signal(signal.SIGCONT)
    [entry] = n1_removal()
    print(f"\nn1's GET /sync conflicts: {json.dumps(entry)}")
    assert (entry["winner"], entry["loser"], entry["rule"], entry["kept_at"]) == \
        ("n2", "n1", "change beats deletion", None), entry

    c.wait_files(ALL, {"del.py": edit}, 15, "the edit everywhere, back on the deleting node")
    wait_until(lambda: all(x["resolved"] for x in n1_removal()), 10, "n1's entry resolved")
    c.quiet(for_s=0.5)
    for n in ALL:
        s = c.sync(n)
        assert all(p["pending_files"] == 0 and not p["conflicts"] for p in s["peers"].values()), \
            (n, json.dumps(s["peers"]))
        assert not [e for e in c.daemon(n).log_events() if e.get("event") == "sync_conflict_tie_settled"], n
