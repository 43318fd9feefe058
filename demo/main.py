"""scripts/demo: start the three-node cluster, show it, optionally break it, keep it until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import psutil

from demo.cluster import CHAOS_DAG, NODES, DemoCluster, DemoError, namespaces_unavailable, say, unavailable, wait_for

ROOT = Path(__file__).resolve().parent.parent
CTL = ROOT / ".venv" / "bin" / "haflowctl"


def show(c: DemoCluster, took: float) -> None:
    procs, pss = c.memory()
    say("")
    say(f"The cluster is healthy {took:.0f} s after the start: {procs} processes using {pss / 2**30:.2f} GiB "
        f"(PSS summed) of this machine's {psutil.virtual_memory().total / 2**30:.0f} GiB.")
    say("")
    say(f"Look at it (from this machine's shell; layout: {c.layout}):")
    for n in c.nodes.values():
        say(f"  {n.name}: haflowd API  {c.api_url(n.name)}/status   metrics: /metrics")
    api1 = c.api_url("n1")
    say(f"  {CTL} --api {api1} peers")
    say(f"  {CTL} --api {api1} status --cluster")
    say(f"  {CTL} --api {api1} health --cluster")
    say(f"  curl -s {api1}/metrics | grep ^haflowd_peer_up")
    say(f"  Airflow UI (n1's api-server): {c.ui_url}")
    if c.flower_url:
        say(f"  Flower (n1): {c.flower_url}")
    if c.loopback:
        say(f"  A node's own view: {CTL} --api {c.api_url('n2')} components")
        say(f"  DAG folders: {c.tmp}/n*/dags (csync2 keeps them in step)")
    else:
        say(f"  Inside a node: ip netns exec {c.nodes['n2'].ns} {CTL} --api http://127.0.0.1:8787 components")
    say(f"  Logs: {c.tmp}/n*/haflowd.log")


def run_task(c: DemoCluster) -> None:
    """Trigger the demo DAG on n1 and show which node's Celery worker ran it."""
    n1 = c.nodes["n1"]
    from demo.cluster import AIRFLOW_BIN, _run

    env = {**c.airflow_env(n1)}
    say("Triggering DAG haflowd_demo on n1 ...")
    r = _run(c.node_argv(n1, [str(AIRFLOW_BIN / "airflow"), "dags", "trigger", "haflowd_demo"]), 120,
             env=env, check=False)
    if r.returncode != 0:
        say(f"  could not trigger: {(r.stderr or r.stdout).strip()[-300:]}")
        return
    try:
        row = wait_for("the task to finish", 180, lambda: c.pg_sql(
            "SELECT state, hostname FROM task_instance WHERE dag_id = 'haflowd_demo' AND state IN "
            "('success', 'failed') ORDER BY end_date DESC LIMIT 1"), every=2)
        state, host = row[0]
        where = f"on {host} (a Celery worker under haflowd)" if host else "before a worker could run it"
        say(f"  task hello: {state} {where}")
    except DemoError as e:
        say(f"  {e}")


def chaos(c: DemoCluster) -> None:
    say("")
    if c.loopback:
        say("== chaos: n3 loses power (every process of n3 dies: its haflowd, csync2 server, Airflow)")
    else:
        say("== chaos: n3 loses power (its link is cut and every process on it dies)")
    t0 = time.monotonic()
    c.kill_node("n3")

    def seen_dead() -> bool:
        for name in ("n1", "n2"):
            _, peers = c.get(name, "/peers")
            if not any(p["name"] == "n3" and p["status"] == "dead" for p in peers):
                return False
        return True

    wait_for("n1 and n2 to see n3 dead", 60, seen_dead, every=0.2)
    say(f"  n1 and n2 see n3 dead after {time.monotonic() - t0:.1f} s (haflowctl peers on n1:)")
    import subprocess

    out = subprocess.run([str(CTL), "--api", c.api_url("n1"), "peers"], capture_output=True,
                         text=True, timeout=30)
    for line in out.stdout.splitlines():
        say("    " + line)

    say("== a DAG is written on n1 while n3 is down")
    t1 = time.monotonic()
    (c.nodes["n1"].dir / "dags" / "haflowd_chaos.py").write_text(CHAOS_DAG)
    wait_for("the DAG on n2", 60, lambda: (c.nodes["n2"].dir / "dags" / "haflowd_chaos.py").exists(), every=0.1)
    say(f"  on n2 after {time.monotonic() - t1:.1f} s (csync2, driven by haflowd; n3 is retried with backoff)")
    wait_for("the DAG to be parsed", 180,
             lambda: c.pg_sql("SELECT dag_id FROM dag WHERE dag_id = 'haflowd_chaos'"), every=1)
    say(f"  parsed into the metadata database after {time.monotonic() - t1:.1f} s")
    _, sync = c.get("n1", "/sync")
    say(f"  n1's sync state for n3: {sync['peers']['n3']['state']} "
        f"(attempts {sync['peers']['n3']['attempts']}, last error: {sync['peers']['n3']['last_error']})")

    say("== n3 comes back")
    t2 = time.monotonic()
    c.revive_node("n3")
    wait_for("n3 to have the DAG written while it was away", 120,
             lambda: (c.nodes["n3"].dir / "dags" / "haflowd_chaos.py").exists(), every=0.1)
    say(f"  n3 caught up (has haflowd_chaos.py) {time.monotonic() - t2:.1f} s after it came back")

    def all_alive() -> bool:
        return all(set(NODES) - {n} <= set(c.node_view(n)["alive"]) for n in NODES)

    wait_for("every node alive everywhere", 120, all_alive, every=0.5)
    say(f"  every node sees every other alive again after {time.monotonic() - t2:.1f} s")
    wait_for("n3's components healthy", 600, lambda: c.healthy(), every=2)
    say(f"  n3's Airflow components are healthy again after {time.monotonic() - t2:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    p.add_argument("--chaos", action="store_true", help="once healthy: kill a node, write a DAG, bring it back")
    p.add_argument("--once", action="store_true", help="stop everything when done instead of waiting for Ctrl-C")
    p.add_argument("--small", action="store_true", help="fewer components per node (scheduler, dag-processor; "
                   "api-server on n1)")
    p.add_argument("--loopback", action="store_true", help="nodes on loopback addresses 127.0.1.11-13 instead of "
                   "network namespaces (the fallback where namespaces cannot be made)")
    args = p.parse_args(argv)
    why = unavailable()
    if why:
        say(f"scripts/demo: {why}")
        return 2
    loopback = args.loopback
    if not loopback and (why := namespaces_unavailable(f"hfdemo{os.getpid()}")):
        say(f"network namespaces are not possible here ({why}): using loopback addresses instead")
        loopback = True

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    c = DemoCluster(profile="small" if args.small else "full", loopback=loopback)
    rc = 0
    try:
        took = c.up()
        show(c, took)
        if not args.small:
            run_task(c)
        if args.chaos:
            chaos(c)
        if not args.once:
            say("")
            say("Running. Ctrl-C stops everything and leaves nothing behind.")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        say("")
    except DemoError as e:
        say(f"scripts/demo: {e}")
        rc = 1
    finally:
        def hurry(_signum: int, _frame: FrameType | None) -> None:
            say("Ctrl-C again: not waiting for the warm stop; killing and cleaning up")
            c.hurry.set()

        signal.signal(signal.SIGINT, hurry)  # cleanup always runs to the end
        signal.signal(signal.SIGTERM, hurry)
        say("stopping: each haflowd stops its Airflow components warmly (Ctrl-C again to hurry) ...")
        t = time.monotonic()
        c.down()
        say(f"stopped; everything removed ({time.monotonic() - t:.0f} s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
