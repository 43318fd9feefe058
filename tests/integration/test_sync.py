"""DAG sync with real csync2 servers and real haflowd daemons in three network namespaces.

n1, n2, n3 (csync2 hosts nodea, nodeb, nodec, mapped with ``host_map``) on a bridge;
faults are real: a node's link goes down (a blackhole to csync2), a csync2 server is
SIGSTOPped (a hang) or killed (a refusal). Without [gossip] unless a test says so:
then every configured peer is a target. Needs root, ``ip netns`` and csync2.
"""

from __future__ import annotations

import itertools
import re
import signal
import sys
import time

import psutil

from tests.conftest import wait_until
from tests.fixtures.csync2 import SyncCluster

ALL = ("n1", "n2", "n3")


def dag(i: int) -> str:
    return f"from airflow import DAG  # {i}\n"


def test_a_change_reaches_both_peers_deletes_and_renames_too(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons()
    c.quiet()

    t0 = time.monotonic()
    c.write("n1", "etl.py", dag(1))
    c.write("n1", ".airflowignore", "scratch/\n")
    took = c.wait_files(("n2", "n3"), {"etl.py": dag(1), ".airflowignore": "scratch/\n"}, 10, "a new DAG", t0)
    print(f"\nwrite on n1 -> on n2, n3: {took}")
    assert max(took.values()) < 3.0

    (c["n2"].dags / "etl.py").unlink()  # a delete on another node
    c.wait_files(ALL, {"etl.py": None, ".airflowignore": "scratch/\n"}, 10, "the delete everywhere")

    c.write("n3", "sub/old_name.py", dag(2))
    c.wait_files(ALL, {"sub/old_name.py": dag(2)}, 10, "a file in a new folder")
    (c["n3"].dags / "sub/old_name.py").rename(c["n3"].dags / "sub/new_name.py")
    c.wait_files(ALL, {"sub/old_name.py": None, "sub/new_name.py": dag(2)}, 10, "the rename everywhere")

    c.quiet()
    for n in ALL:
        s = c.sync(n)
        assert all(p["state"] == "ok" and p["pending_files"] == 0 for p in s["peers"].values()), s
        assert s["last_result"] == "ok" and s["last_success"] is not None
    r = c.ctl("n1", "sync")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^n2\s+ok\s", r.stdout, re.M) and re.search(r"^n3\s+ok\s", r.stdout, re.M), r.stdout
    status, health = c.daemon("n1").get("/health")
    assert status == 200 and {ch["name"]: ch["status"] for ch in health["checks"]}["sync"] == "passing"
    _, metrics = c.daemon("n1").get("/metrics")
    text = metrics.decode()
    assert 'haflowd_sync_runs_total{result="ok"}' in text
    assert "haflowd_sync_duration_seconds_bucket" in text
    assert re.search(r'haflowd_sync_peer_last_success_timestamp_seconds\{peer="n2"\} 1\.\d+e\+09', text)
    assert 'haflowd_sync_peer_pending{peer="n3"} 0.0' in text


def test_without_watch_the_schedule_syncs(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons(watch=[], interval="2s")
    c.quiet(for_s=0.5)
    t0 = time.monotonic()
    c.write("n2", "scheduled.py", dag(3))
    took = c.wait_files(("n1", "n3"), {"scheduled.py": dag(3)}, 10, "the file, on the schedule", t0)
    print(f"\nwrite on n2, no watch, interval 2s -> {took}")
    assert min(took.values()) > 0.05  # nothing watched it: it waited for the schedule
    assert c.sync("n2")["file_events"] == 0


def test_one_write_and_a_burst_cause_a_bounded_number_of_runs(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons()
    before = c.quiet()

    c.write("n1", "one.py", dag(0))
    c.wait_files(("n2", "n3"), {"one.py": dag(0)}, 10, "one file")
    after_one = c.quiet()
    one = {n: after_one[n] - before[n] for n in ALL}
    print(f"\nruns caused by one write on n1: {one}")
    assert one["n1"] <= 2 and one["n2"] <= 2 and one["n3"] <= 2, one  # the write, and a no-op for what arrived

    t0 = time.monotonic()
    files = {f"burst/f{i:03}.py": dag(i) for i in range(500)}
    for rel, text in files.items():
        c.write("n1", rel, text)
    took = c.wait_files(("n2", "n3"), files, 60, "500 files", t0)
    after_burst = c.quiet()
    burst = {n: after_burst[n] - after_one[n] for n in ALL}
    print(f"500 files on n1 -> on n2, n3: {took}; runs: {burst}")
    assert all(v <= 5 for v in burst.values()), burst  # not 500: the tail of an incoming burst may add a no-op or two
    for n in ALL:
        s = c.sync(n)
        assert all(p["state"] == "ok" for p in s["peers"].values()), s


def test_a_cut_link_leaves_the_peer_pending_backing_off_and_it_catches_up(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons(retry_max="8s")
    c.quiet()

    c.topo.link(3, up=False)  # n3 is a blackhole now
    written: dict[str, str | None] = {}
    for i in range(5):
        t0 = time.monotonic()
        rel = f"while_down_{i}.py"
        written[rel] = dag(i)
        c.write("n1", rel, dag(i))
        took = c.wait_files(("n2",), {rel: dag(i)}, 10, f"{rel} on n2 while n3 is cut off", t0)
        assert took["n2"] < 3.0, took
        time.sleep(0.3)

    # n3 is pending on n1, and its retries back off: attempts grow, and so do the gaps
    seen: list[tuple[int, float]] = []

    def three_retries() -> bool:
        p = c.peer("n1", "n3")
        assert p["state"] == "pending", p
        if not seen or seen[-1][0] != p["attempts"]:
            seen.append((p["attempts"], p["last_attempt"]))
        return len(seen) >= 4

    wait_until(three_retries, 20, "three more retries of n3", interval=0.05)
    attempts = [a for a, _ in seen]
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(seen)]
    print(f"\nn3 cut off: attempts {attempts}, gaps between retries {[round(g, 2) for g in gaps]}")
    assert attempts == sorted(attempts) and attempts[-1] >= 4
    assert gaps[-1] > gaps[0], gaps
    p = c.peer("n1", "n3")
    assert p["pending_files"] >= 5 and "no answer" in p["last_error"], p
    assert c.peer("n1", "n2")["state"] == "ok"
    assert c.ctl("n1", "sync").returncode == 0  # pending is not failing

    # a restart mid-outage keeps what n1 knew about n3
    before = c.peer("n1", "n3")
    c.restart_daemon("n1")
    after = c.peer("n1", "n3")
    assert after["state"] == "pending" and after["attempts"] >= before["attempts"], (before, after)
    assert after["last_success"] == before["last_success"] and after["last_error"]

    # without its state file, what is pending is rebuilt from csync2's database
    d1 = c.daemon("n1")
    d1.signal(signal.SIGTERM)
    assert d1.wait_exit(20) == 0
    (d1.dir / "data" / "sync-state.json").unlink()
    d1.start()
    wait_until(lambda: (c.peer("n1", "n3")["pending_files"] or 0) >= len(written), 10,
               "n3's pending files counted again from csync2's database")
    assert c.peer("n1", "n3")["state"] == "pending"

    t0 = time.monotonic()
    c.topo.link(3, up=True)
    took = c.wait_files(("n3",), written, 15, "n3 caught up after its link came back", t0)
    print(f"link back -> n3 has all {len(written)} files after {took['n3']:.2f}s")
    wait_until(lambda: c.peer("n1", "n3")["state"] == "ok", 10, "n3 ok on n1")
    assert c.peer("n1", "n3")["pending_files"] == 0


def test_a_hung_csync2_server_is_killed_at_timeout_and_the_other_peer_still_syncs(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons(timeout="2s")
    c.quiet()

    c.stop_server("n2")  # SIGSTOP: n2's port still accepts, csync2 never answers
    t0 = time.monotonic()
    c.write("n1", "hang.py", dag(7))
    d1 = c.daemon("n1")
    slowest = 0.0
    while time.monotonic() - t0 < 2.5:  # the API answers while csync2 hangs against n2
        q = time.monotonic()
        assert d1.get("/liveness")[0] == 200 and d1.get("/sync")[0] == 200
        slowest = max(slowest, time.monotonic() - q)
        time.sleep(0.05)
    assert slowest < 0.5, f"the API took {slowest:.2f}s while csync2 hung"
    took = c.wait_files(("n3",), {"hang.py": dag(7)}, 10, "hang.py on n3 despite the hang on n2", t0)
    print(f"\nn2 SIGSTOPped: n3 got the file after {took['n3']:.2f}s (timeout 2s)")

    wait_until(lambda: c.peer("n1", "n2")["state"] == "failing", 10, "n2 failing on n1")
    p = c.peer("n1", "n2")
    assert "killed after 2s" in p["last_error"], p
    assert c.sync("n1")["runs"]["timeout"] >= 1
    survivors = []  # a retry may be hanging right now, but none for longer than its timeout
    for pr in psutil.process_iter(["cmdline", "create_time"]):
        cmd = pr.info["cmdline"] or []
        if cmd and cmd[0] == "csync2" and "-P" in cmd and "nodeb" in cmd and time.time() - pr.info["create_time"] > 3.5:
            survivors.append(cmd)
    assert not survivors, f"csync2 runs outlived their 2s timeout: {survivors}"
    assert c.ctl("n1", "sync").returncode == 1  # a failing peer

    c.continue_server("n2")
    c.wait_files(("n2",), {"hang.py": dag(7)}, 15, "n2 caught up after SIGCONT")
    wait_until(lambda: c.peer("n1", "n2")["state"] == "ok", 15, "n2 ok again on n1")


def test_a_refusing_peer_is_failing_then_caught_up(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons()
    c.quiet()

    c.kill_server("n3")  # refused
    t0 = time.monotonic()
    c.write("n1", "refused.py", dag(8))
    c.wait_files(("n2",), {"refused.py": dag(8)}, 10, "refused.py on n2", t0)
    wait_until(lambda: c.peer("n1", "n3")["state"] == "failing", 10, "n3 failing on n1")
    assert "refused" in c.peer("n1", "n3")["last_error"]

    code, body = c.sync_now("n1")  # answers when the run is done, with what each peer got
    assert code == 200 and body["finished_at"] >= body["started_at"], body
    assert body["peers"]["n2"]["outcome"] == "synced" and body["peers"]["n3"]["outcome"] == "refused", body
    assert body["peers"]["n3"]["state"] == "failing" and not body["ok"]
    r = c.ctl("n1", "sync", "--now")
    assert r.returncode == 1 and re.search(r"^n3\s+failing\s", r.stdout, re.M), r.stdout + r.stderr

    c.start_server("n3")
    t0 = time.monotonic()
    took = c.wait_files(("n3",), {"refused.py": dag(8)}, 15, "n3 caught up after its server came back", t0)
    print(f"\nn3's csync2 back -> caught up after {took['n3']:.2f}s (retry_max 4s)")
    wait_until(lambda: c.peer("n1", "n3")["state"] == "ok", 10, "n3 ok on n1")
    assert c.ctl("n1", "sync").returncode == 0


def test_with_gossip_a_dead_peer_is_not_tried_and_alive_again_catches_it_up(csync2_cluster: SyncCluster) -> None:
    c = csync2_cluster
    c.start_daemons(gossip=True, retry_max="60s", retry_initial="30s")
    c.quiet()
    wait_until(lambda: all(p["member"] == "alive" for p in c.sync("n1")["peers"].values()), 15,
               "gossip: every peer alive on n1")

    c.topo.link(3, up=False)
    wait_until(lambda: c.peer("n1", "n3")["member"] == "dead", 20, "n3 dead on n1 (gossip)")
    p = c.peer("n1", "n3")
    assert p["state"] == "pending" and p["next_retry"] is None, p  # not tried while dead
    attempts = p["attempts"]
    c.write("n1", "gossip.py", dag(9))
    c.wait_files(("n2",), {"gossip.py": dag(9)}, 10, "gossip.py on n2")
    time.sleep(1)
    assert c.peer("n1", "n3")["attempts"] == attempts

    t0 = time.monotonic()
    c.topo.link(3, up=True)
    took = c.wait_files(("n3",), {"gossip.py": dag(9)}, 20, "n3 caught up once gossip saw it alive", t0)
    print(f"\nlink back -> n3 caught up after {took['n3']:.2f}s (retry_initial 30s: gossip did it)")
    assert took["n3"] < 15


LOSSY_CSYNC2 = """#!{python}
# csync2, except that while {flag} exists a check ends the way a check killed at the worst
# moment does (csync2 commits every 1000 statements: a file's new checksum committed, its
# dirty marks not), and then still runs, as a long check would when haflowd stops.
import glob, os, sqlite3, subprocess, sys, time
args = sys.argv[1:]
if "-cr" in args and os.path.exists({flag!r}):
    subprocess.run(["csync2", *args], check=False)
    for db in glob.glob(os.path.join(args[args.index("-D") + 1], "*.db3")):
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM dirty")
    open({done!r}, "w").close()
    time.sleep(600)  # the daemon kills it
os.execvp("csync2", ["csync2", *args])
"""


def test_a_check_interrupted_by_a_shutdown_loses_nothing(csync2_cluster: SyncCluster) -> None:
    """haflowd stops while csync2 -cr runs: after the restart, the file written just
    before still reaches the peers (the check is re-made good with csync2 -mr /)."""
    c = csync2_cluster
    flag, done = c.tmp / "lose-marks", c.tmp / "check-ran"
    lossy = c.tmp / "bin" / "csync2-lossy"  # "csync2...": haflowd splits it like csync2 itself
    lossy.parent.mkdir()
    lossy.write_text(LOSSY_CSYNC2.format(python=sys.executable, flag=str(flag), done=str(done)))
    lossy.chmod(0o755)
    c.start_daemons(("n2", "n3"))
    n1 = c["n1"]
    c.start_daemons(("n1",), command=[str(lossy), "-N", n1.host, "-D", str(n1.db), "-x"])
    c.quiet()

    flag.touch()
    c.write("n1", "written_before_stop.py", dag(11))
    wait_until(done.exists, 10, "n1's check to have run (and to hang)")
    d1 = c.daemon("n1")
    t0 = time.monotonic()
    d1.signal(signal.SIGTERM)
    assert d1.wait_exit(20) == 0, d1.log_text()[-3000:]
    print(f"\nSIGTERM during a hung check: haflowd stopped in {time.monotonic() - t0:.2f}s")
    assert not (c["n2"].dags / "written_before_stop.py").exists()
    flag.unlink()

    d1.start()
    c.wait_files(("n2", "n3"), {"written_before_stop.py": dag(11)}, 15, "the file after n1's restart")
    assert any(e.get("event") == "sync_check_interrupted" for e in d1.log_events())
    assert not (d1.dir / "data" / "sync-check.running").exists()


def test_a_server_stopped_in_the_middle_of_a_transfer_loses_no_file(csync2_cluster: SyncCluster) -> None:
    """n2's csync2 server SIGSTOPped after it took part of a burst: the update is killed at
    its timeout, the files it had not sent stay dirty, and all arrive after SIGCONT."""
    c = csync2_cluster
    # a short timeout to kill the update; receivers wait for a transfer to end before their
    # own check (debounce_max), so that a check fighting an incoming transfer over csync2's
    # database never makes a healthy peer's update outlast the timeout
    c.start_daemons(timeout="3s", debounce_max="15s")
    c.quiet()
    files = {f"mid/f{i:03}.py": dag(i) + "#" * 2_000 + "\n" for i in range(80)}
    for rel, text in files.items():
        c.write("n1", rel, text)
    mid = c["n2"].dags / "mid"
    wait_until(lambda: mid.is_dir() and len(list(mid.iterdir())) >= 10, 15, "part of the burst on n2", interval=0.005)
    c.stop_server("n2")
    got = len([p for p in mid.iterdir() if not p.name.startswith(".")])
    print(f"\nn2's server stopped with {got} of {len(files)} files")
    try:
        c.wait_files(("n3",), files, 30, "the burst on n3 despite n2")
        wait_until(lambda: c.sync("n1")["runs"]["timeout"] >= 1, 15, "n1's update to n2 killed at its timeout")
        p = c.peer("n1", "n2")
        assert p["state"] != "ok" and (p["pending_files"] or 0) > 0, p
    finally:
        c.continue_server("n2")
    took = c.wait_files(("n2",), files, 30, "every file on n2 after SIGCONT")
    print(f"after SIGCONT n2 has all {len(files)} files within {took['n2']:.2f}s")
    wait_until(lambda: c.peer("n1", "n2")["state"] == "ok" and c.peer("n1", "n2")["pending_files"] == 0, 15,
               "n2 ok with nothing pending on n1")
