"""The campaign: build the cluster, start pollers, writers and the nemesis, let them run,
settle, judge, report, tear down (also on Ctrl-C, SIGTERM or a failure)."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import BenchError, Terminated, log, signals_unwind
from bench.soak import invariants as inv
from bench.soak.cluster import CLOCK_NODE, FAKETIME_LIB, SoakCluster
from bench.soak.nemesis import ORPHAN_GRACE_S, Fault, Nemesis, plan
from bench.soak.observe import Poller, Writers, peer_verdicts, read_events
from bench.soak.picture import timeline
from haflowd.ctl import Client, Unreachable
from tests.fixtures.csync2 import NODES

SETTLE_S = 40.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=(
        "A seeded fault campaign on three real haflowd daemons in network namespaces, with csync2 and "
        "components; checks the invariants all along and writes soak.json, summary.md, timeline.png."))
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the nemesis runs (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="one seed, one plan of faults (default 1)")
    ap.add_argument("--out", default="soak-out", help="the report's directory (default ./soak-out)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the cluster's temp dir (logs, DAG folders)")
    a = ap.parse_args(argv)
    if a.minutes <= 0.5:
        ap.error("--minutes must be more than 0.5")
    return a


class Campaign:
    def __init__(self, args: argparse.Namespace, tmp: Path, out: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.out = out
        self.duration = args.minutes * 60
        self.faketime = FAKETIME_LIB.exists()
        self.cluster = SoakCluster(tmp, self.faketime)
        self.stop_faults = threading.Event()
        self.stop_writes = threading.Event()
        self.stop_polls = threading.Event()
        self.poller = Poller(self.cluster, NODES, self.stop_polls)
        self.writers = Writers(self.cluster, NODES, args.seed, self.stop_writes)
        self.faults: list[Fault] = plan(args.seed, self.duration, CLOCK_NODE if self.faketime else None)
        self.crashes: list[dict[str, Any]] = []
        self.crash_faults: list[Fault] = []
        self.orphan_checks: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.t_end = 0.0
        self.settle: dict[str, Any] = {}
        self.nemesis: Nemesis | None = None
        self.torn: dict[str, Any] = {}

    # ------------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        c = self.cluster
        t_setup = time.monotonic()
        c.create()
        deadline = time.monotonic() + 60
        while not c.all_alive():
            if time.monotonic() > deadline:
                raise BenchError("the three daemons never all saw each other alive")
            time.sleep(0.2)
        log(f"cluster up in {time.monotonic() - t_setup:.1f}s; the nemesis runs {self.duration / 60:g} min "
            f"(seed {self.args.seed}, {len(self.faults)} faults planned)")
        self.t0 = time.time()
        self.poller.start()
        self.writers.start()
        n = Nemesis(c, self.faults, self.t0, self.stop_faults, self._event, self.writers)
        n.last_components = self.poller.last_components
        self.nemesis = n
        n.start()
        while time.time() < self.t0 + self.duration:
            self._watch_crashes()
            time.sleep(0.5)
        self.stop_writes.set()
        self.writers.join()
        for _ in range(240):  # a restart may run a little past the end
            if not n.alive():
                break
            self._watch_crashes()
            time.sleep(0.5)
        self.stop_faults.set()
        n.join(30)
        c.heal_all()
        self.t_end = time.time()
        for name in NODES:  # a daemon left down (a failed restart) comes back for the final checks
            if c.pid(name) is None:
                self._crashed(name, "down at the end")
        self.settle = self._settle()
        self.orphan_checks.append({"after": "end", "orphans": self._orphans_after_grace()})
        time.sleep(1.5)  # one more poll of every /sync after the settle
        self.stop_polls.set()
        self.poller.join()
        return self.judge()

    def _event(self, kind: str, detail: dict[str, Any]) -> None:
        self.events.append({"t": time.time(), "kind": kind, **detail})

    def _watch_crashes(self) -> None:
        for name in NODES:
            with self.cluster.lock:
                d = self.cluster.daemon(name)
                exited = d.proc is not None and d.proc.poll() is not None and not self.cluster.expected_down[name]
            if exited:
                self._crashed(name, f"exit code {d.proc.returncode if d.proc else None}")

    def _crashed(self, name: str, why: str) -> None:
        d = self.cluster.daemon(name)
        f = Fault(1000 + len(self.crash_faults), "proc", "crash", time.time() - self.t0, 0.0, {"node": name}, 0.0)
        f.start = time.time()
        self.crashes.append({"node": name, "t_s": round(f.start - self.t0, 2), "why": why,
                             "log_tail": d.log_text()[-1500:]})
        log(f"haflowd on {name} is not running ({why}): a crash; starting it again")
        with self.cluster.lock:
            self.cluster.expected_down[name] = True
        try:
            f.end = self.cluster.start_daemon(name)
        except BenchError as e:
            f.end = time.time()
            self.crashes[-1]["restart_error"] = str(e)
        self.crash_faults.append(f)

    def _orphans_after_grace(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + ORPHAN_GRACE_S
        found = self.cluster.orphans()
        while found and time.monotonic() < deadline:
            time.sleep(0.5)
            found = self.cluster.orphans()
        return found

    def _settle(self) -> dict[str, Any]:
        """Everyone alive, then `POST /sync` on every node until the DAG folders agree (bounded)."""
        c = self.cluster
        t = time.monotonic()
        deadline = t + 30
        while not c.all_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        alive_s = time.monotonic() - t
        rounds = 0
        results: list[Any] = []
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            rounds += 1
            for name in NODES:
                d = c.daemon(name)
                try:
                    status, body = Client(d.api, str(d.socket), 30).post("/sync")
                    results.append({name: body.get("result") if isinstance(body, dict) else status})
                except (Unreachable, OSError) as e:
                    results.append({name: str(e)})
            if self._agree():
                break
            time.sleep(1.0)
        return {"all_alive_after_s": round(alive_s, 2), "sync_rounds": rounds, "agreed": self._agree(),
                "took_s": round(time.monotonic() - t, 2), "last_results": results[-3:]}

    def _agree(self) -> bool:
        written = self.writers.all_files()
        finals = {n: self.cluster.sync.files(n) for n in NODES}
        for rel, versions in written.items():
            got = {finals[n].get(rel) for n in NODES}
            if len(got) != 1 or None in got:
                return False
            if rel in self.writers.owner and got != {versions[-1]}:
                return False
        return len({json.dumps(f, sort_keys=True) for f in finals.values()}) == 1

    # ------------------------------------------------------------------ judging

    def fault_dicts(self) -> list[dict[str, Any]]:
        return [{"id": f.id, "lane": f.lane, "kind": f.kind, "params": f.params, "start": f.start, "end": f.end,
                 "notes": f.notes} for f in [*self.faults, *self.crash_faults]]

    def clock_steps(self) -> list[tuple[float, float]]:
        return [(f.start, float(f.notes["offset_after_s"])) for f in self.faults
                if f.kind == "clock_step" and f.start is not None and "offset_after_s" in f.notes]

    def local_health(self) -> dict[str, list[tuple[float, int]]]:
        """Each node's Lifeguard multiplier as polled from its /metrics (host times)."""
        out: dict[str, list[tuple[float, int]]] = {}
        for n in NODES:
            out[n] = [(r["t"], int(r["metrics"]["haflowd_gossip_local_health"])) for r in self.poller.samples[n]
                      if "haflowd_gossip_local_health" in r.get("metrics", {})]
        return out

    def judge(self) -> dict[str, Any]:
        c = self.cluster
        faults = self.fault_dicts()
        verdicts: list[dict[str, Any]] = []
        for name in NODES:
            steps = self.clock_steps() if name == CLOCK_NODE else []
            verdicts += peer_verdicts(read_events(c.daemon(name).log), name, steps)
        verdicts.sort(key=lambda v: v["t"])
        timing = inv.Timing()
        final = {n: c.sync.files(n) for n in NODES}
        written = self.writers.all_files()
        owners = dict(self.writers.owner)
        conflicts = {k: v for k, v in self.writers.conflicts.items() if v["versions"]}
        copies = self._copies([t for cf in conflicts.values() for t in cf["versions"].values()])
        for f in self.faults:
            if f.notes.get("orphans") is not None:
                self.orphan_checks.append({"after": f"fault {f.id} {f.kind} on {f.params.get('node')}",
                                           "orphans": f.notes["orphans"]})
        files_r = inv.files(written, owners, final)
        self._explain(files_r, final)
        results = [
            inv.false_deaths(verdicts, faults, timing),
            inv.detection(verdicts, faults, timing, NODES,
                          [(r["t"], r["load1"]) for r in self.poller.live[NODES[0]] if "load1" in r],
                          self.local_health()),
            inv.orphans(self.orphan_checks),
            files_r,
            inv.lost_edits(conflicts, final, self.poller.sync_has_conflicts_key,
                           list(self.poller.sync_conflicts.values()), copies, inv.stale_edits(files_r)),
            inv.converged(final, conflicts),
            inv.crashes(self.crashes),
            inv.liveness(self.poller.live, faults),
            inv.resources(self.poller.samples, self.t0 + min(120.0, 0.4 * self.duration), self.t_end),
        ]
        down = {n: inv.down_intervals(faults, n) for n in NODES}
        # when each new daemon was started (before any of its own verdicts)
        restarts = {n: [f["notes"].get("restarted_at", f["start"]) for f in faults
                        if f["kind"] in ("kill_daemon", "crash") and f["start"] is not None
                        and f["params"]["node"] == n] for n in NODES}
        timeline(self.out / "timeline.png", self.t0, self.t_end, NODES, verdicts, faults, down, restarts)
        self._dump(verdicts)
        ran = [f for f in faults if f["start"] is not None]
        return {
            "seed": self.args.seed, "minutes": self.args.minutes, "ok": all(r["ok"] for r in results),
            "started_at": self.t0, "ended_at": self.t_end,
            "machine": {"python": platform.python_version(), "kernel": platform.release(),
                        "faketime": str(FAKETIME_LIB) if self.faketime else None},
            "timing": {"probe_interval_s": timing.probe_interval, "probe_timeout_s": timing.probe_timeout,
                       "suspicion_timeout_s": round(timing.suspicion_lo, 3),
                       "detect_bound_s": round(timing.detect_bound, 3),
                       "isolated_bound_s": round(timing.isolated_bound, 3),
                       "excuse_after_s": round(timing.excuse_after, 3)},
            "machine_load1": self._load(),
            "faults_planned": len(self.faults), "faults_run": Counter(f["kind"] for f in ran),
            "fault_errors": self.nemesis.errors if self.nemesis else [],
            "writes": self.writers.counts, "files_written": len(written), "conflicts_written": len(conflicts),
            "settle": self.settle,
            "invariants": results,
            "faults": [f.as_json(self.t0) for f in [*self.faults, *self.crash_faults]],
            "events": [{**e, "t": round(e["t"] - self.t0, 2)} for e in self.events],
            "clock_offset_s": c.clock_offset,
        }

    def _explain(self, files_r: dict[str, Any], final: dict[str, dict[str, str]]) -> None:
        """Evidence for each lost or stale file: when its versions were written, its mtime on
        each node, and what the daemons logged about it."""
        rels = sorted({x["file"] for x in files_r["lost"] + files_r["stale"]})[:10]
        logs = {n: self.cluster.daemon(n).log.read_text(errors="replace").splitlines() for n in NODES}
        out = {}
        for rel in rels:
            mtimes = {}
            for n in NODES:
                with contextlib.suppress(OSError):
                    mtimes[n] = round((self.cluster.dags(n) / rel).stat().st_mtime - self.t0, 3)
            have = {n: (self.writers.versions[rel].index(final[n][rel])
                        if final[n].get(rel) in self.writers.versions.get(rel, []) else None) for n in NODES}
            out[rel] = {"owner": self.writers.owner.get(rel),
                        "written_s": [round(t - self.t0, 3) for t in self.writers.times.get(rel, [])],
                        "version_on": have, "mtime_s": mtimes,
                        "log": {n: [ln[:400] for ln in lines if f"/{rel}" in ln][-6:] for n, lines in logs.items()}}
        files_r["evidence"] = out

    def _load(self) -> dict[str, float]:
        xs = sorted(r["load1"] for recs in self.poller.live.values() for r in recs if "load1" in r)
        if not xs:
            return {}
        return {"median": round(xs[len(xs) // 2], 2), "max": round(xs[-1], 2), "cpus": float(os.cpu_count() or 0)}

    def _copies(self, texts: list[str]) -> dict[str, list[str]]:
        """Where each text is kept as a whole file under the run's directory (a conflict backup)."""
        want = {t.encode(): t for t in texts}
        out: dict[str, list[str]] = {}
        if not want:
            return out
        for p in self.tmp.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink() and p.stat().st_size < 65536:
                    data = p.read_bytes()
                    if data in want:
                        out.setdefault(want[data], []).append(str(p.relative_to(self.tmp)))
        # a file in place in a DAG folder is the winner, not a kept copy
        in_place = {str(self.cluster.dags(n).relative_to(self.tmp) / rel)
                    for n in NODES for rel in self.writers.conflicts}
        return {t: kept for t, paths in out.items() if (kept := [p for p in paths if p not in in_place])}

    def _dump(self, verdicts: list[dict[str, Any]]) -> None:
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        for name in NODES:
            with contextlib.suppress(OSError):
                shutil.copyfile(self.cluster.daemon(name).log, logs / f"{name}-haflowd.log")
        with gzip.open(self.out / "polls.jsonl.gz", "wt") as f:
            for name in NODES:
                for r in self.poller.live[name]:
                    f.write(json.dumps({"node": name, "kind": "liveness", **r}) + "\n")
                for r in self.poller.samples[name]:
                    f.write(json.dumps({"node": name, "kind": "sample", **r}) + "\n")
        with open(self.out / "verdicts.jsonl", "w") as f:
            for v in verdicts:
                f.write(json.dumps({**v, "t_s": round(v["t"] - self.t0, 3)}) + "\n")

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        self.stop_faults.set()
        self.stop_writes.set()
        if self.nemesis is not None:
            self.nemesis.join(20)
        self.stop_polls.set()
        made = [*self.cluster.sync.topo.made]
        mounted = [str(m) for m in self.cluster.mounted]
        left = self.cluster.destroy()
        if left:
            log(f"could not delete network namespaces {left}")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout.split()
        mounts = Path("/proc/mounts").read_text()
        self.torn = {"namespaces": made, "namespaces_left": [ns for ns in made if ns in listed],
                     "mounted": mounted, "mounts_left": [m for m in mounted if f" {m} " in mounts],
                     "marked_left": self.cluster.marked()}


def summary_md(r: dict[str, Any]) -> str:
    inv_rows = "\n".join(f"| {'PASS' if i['ok'] else '**FAIL**'} | {i['name']} | {i['summary']} |"
                         for i in r["invariants"])
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["faults_run"].items()))
    det = next(i for i in r["invariants"] if i["name"] == "every real failure detected")
    res = next(i for i in r["invariants"] if i["name"].startswith("RSS"))
    lines = [
        f"# haflowd soak: {r['minutes']:g} min, seed {r['seed']} — {'all invariants held' if r['ok'] else 'FAILED'}",
        "",
        f"Started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(r['started_at']))}; "
        f"{sum(r['faults_run'].values())} faults run ({kinds}); "
        f"{r['files_written']} DAG files written ({json.dumps(r['writes'])}), "
        f"{r['conflicts_written']} conflicting writes; folders agreed after the final sync: "
        f"{json.dumps(r['settle']['agreed'])} ({r['settle']['took_s']} s). Machine load (1-min average) "
        f"median {r['machine_load1'].get('median')}, max {r['machine_load1'].get('max')} on "
        f"{r['machine_load1'].get('cpus')} CPUs.",
        "",
        "| result | invariant | detail |",
        "| --- | --- | --- |",
        inv_rows,
        "",
        f"Detection (failure -> dead, per observer): {det['summary']}; failures shorter than "
        f"{det['detect_bound_s']} s (probe turn + probe + suspicion timeout {r['timing']['suspicion_timeout_s']} s "
        f"+ 1 s; {det['isolated_bound_s']} s for an observer cut off from the majority, whose Lifeguard "
        "multiplier stretches its probes and suspicions; for an observer whose multiplier L was up as the failure "
        "began, its own bound, (1 + L) times the probe, last-chance and suspicion times + 1 s, and those are "
        "listed in soak.json under `stretched`) need not be detected, and a dead verdict counts as false "
        "unless a fault cut the pair off "
        f"(partition, one-way partition, kill, a SIGSTOP over the suspicion timeout) within "
        f"{r['timing']['excuse_after_s']} s before it.",
        "",
        "Stand-ins: delay/jitter is a `tc tbf` rate limit on one node's link (queueing delay and drops "
        "when gossip or csync2 bursts exceed it; this kernel has no netem); packet loss is nftables "
        "`numgen random mod 100 < P drop` on eth0 (loopback untouched); the wall-clock step is libfaketime "
        f"on {CLOCK_NODE} ({'used' if r['machine']['faketime'] else 'NOT AVAILABLE: no clock steps'}), forward "
        "only (a backward step under libfaketime also moves the monotonic clock back and freezes asyncio's "
        "timers) and at most 25 s in total (gossip signatures reject clocks 30 s off by design).",
        "",
    ]
    for note in res.get("notes", []):
        lines.append(f"Note: {note}.")
    if r["fault_errors"]:
        lines += ["", "Faults that could not be applied: " + "; ".join(r["fault_errors"])]
    lines += ["", "![timeline](timeline.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="haflowd-soak-"))
    camp = Campaign(args, tmp, out)
    report: dict[str, Any] | None = None
    rc = 1
    try:
        with signals_unwind():
            try:
                report = camp.run()
            finally:
                camp.teardown()
    except BenchError as e:
        log(f"failed: {e}")
    except (KeyboardInterrupt, Terminated):
        log("interrupted; torn down")
        rc = 130
    except Exception as e:  # one line for the operator; the teardown already ran
        log(f"failed: {type(e).__name__}: {e}")
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if report is None:
        return rc
    report["teardown"] = camp.torn
    if camp.torn.get("namespaces_left") or camp.torn.get("mounts_left") or camp.torn.get("marked_left"):
        report["ok"] = False
        log(f"teardown left something behind: {camp.torn}")
    (out / "soak.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = summary_md(report)
    (out / "summary.md").write_text(md)
    print(md)
    return 0 if report["ok"] else 1
