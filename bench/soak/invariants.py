"""The soak's invariants, judged from what was recorded: pure functions, no I/O.

Every function takes plain data (the fault log, the daemons' verdicts, the polls, the
files) and returns ``{"name", "ok", "summary", ...evidence}``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.common import percentile
from haflowd.gossip.membership import LAST_CHANCES, MAX_LHM, suspicion_min

PARTITIONS = ("part21", "part111", "conflict")


@dataclass(frozen=True)
class Timing:
    """What the gossip settings imply (defaults: probe every 0.3 s, timeout 0.15 s, mult 4)."""

    n: int = 3
    probe_interval: float = 0.3
    probe_timeout: float = 0.15
    suspicion_mult: int = 4

    @property
    def suspicion_lo(self) -> float:
        """The suspicion timeout with three nodes (no confirmations expected, so the floor)."""
        return suspicion_min(self.suspicion_mult, self.n, self.probe_interval)

    def bound(self, lhm: int) -> float:
        """Worst case failure -> dead for an observer whose Lifeguard local health multiplier is
        ``lhm``: it stretches the probe interval and timeouts, the last chances' spacing and the
        suspicion timeout alike, (1 + lhm) times, on purpose: it may be the one at fault
        (docs/gossip.md). With ``lhm`` 0 a little more than ``detect_bound``."""
        scale = 1 + max(0, min(MAX_LHM, lhm))
        return (scale * ((self.n - 1) * self.probe_interval + self.probe_interval + LAST_CHANCES * self.probe_timeout)
                + scale * self.suspicion_lo + 1.0)

    @property
    def isolated_bound(self) -> float:
        """The same for an observer cut off from the majority: its multiplier climbs to its top."""
        return self.bound(MAX_LHM)

    @property
    def detect_bound(self) -> float:
        """Worst case failure -> dead: the victim's turn to be probed ((n-1) intervals), the
        probe's end (one interval), the suspicion timeout, and 1 s for its last chances and a
        busy machine. A failure shorter than this need not be detected."""
        return (self.n - 1) * self.probe_interval + self.probe_interval + self.suspicion_lo + 1.0

    @property
    def excuse_after(self) -> float:
        """A verdict this long after a cut healed still belongs to the cut (its suspicion began during it)."""
        return self.detect_bound + 2.0


def _groups_split(groups: list[list[str]], a: str, b: str) -> bool:
    ga = next((i for i, g in enumerate(groups) if a in g), None)
    gb = next((i for i, g in enumerate(groups) if b in g), None)
    return ga is not None and gb is not None and ga != gb


def severs(f: dict[str, Any], observer: str, peer: str, timing: Timing) -> bool:
    """Whether fault ``f`` cut ``peer`` off from ``observer`` (so a dead verdict is deserved)."""
    k, p = f["kind"], f["params"]
    if k in PARTITIONS:
        return _groups_split(p["groups"], observer, peer)
    if k == "oneway":
        return {observer, peer} == {p["src"], p["dst"]}
    if k == "sigstop":
        return bool(p["node"] == peer and f["end"] - f["start"] > timing.suspicion_lo)
    if k in ("kill_daemon", "crash"):
        return bool(p["node"] == peer)
    return False


def _ran(faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in faults if f.get("start") is not None and f.get("end") is not None]


def false_deaths(verdicts: list[dict[str, Any]], faults: list[dict[str, Any]], timing: Timing) -> dict[str, Any]:
    bad = []
    dead = [v for v in verdicts if v["new"] == "dead"]
    for v in dead:
        cause = next((f["id"] for f in _ran(faults) if f["start"] - 0.5 <= v["t"] <= f["end"] + timing.excuse_after
                      and severs(f, v["observer"], v["peer"], timing)), None)
        if cause is None:
            near = [f"{f['id']}:{f['kind']}" for f in _ran(faults)
                    if f["start"] - 10 <= v["t"] <= f["end"] + 10]
            bad.append({**v, "faults_nearby": near})
        else:
            v["cause"] = cause
    return {"name": "no false deaths", "ok": not bad, "dead_verdicts": len(dead), "false": bad,
            "summary": f"{len(bad)} false of {len(dead)} dead verdicts"}


def down_intervals(faults: list[dict[str, Any]], node: str) -> list[tuple[float, float]]:
    """When ``node``'s daemon could not act: killed (until live again), crashed, stopped."""
    return [(f["start"], f["end"]) for f in _ran(faults)
            if f["kind"] in ("kill_daemon", "crash", "sigstop") and f["params"]["node"] == node]


def view_at(verdicts: list[dict[str, Any]], faults: list[dict[str, Any]], observer: str, peer: str,
            t: float) -> str:
    """``observer``'s view of ``peer`` at ``t``, from its verdicts since its daemon last started."""
    started = [f.get("notes", {}).get("restarted_at", f["start"]) for f in _ran(faults)
               if f["kind"] in ("kill_daemon", "crash") and f["params"]["node"] == observer]
    since = max([s for s in started if s <= t], default=float("-inf"))
    state = "unknown"
    for v in verdicts:
        if v["observer"] == observer and v["peer"] == peer and since <= v["t"] <= t:
            state = v["new"]
    return state


def observer_health(health: dict[str, list[tuple[float, int]]], verdicts: list[dict[str, Any]],
                    observer: str, peer: str, start: float, end: float) -> int:
    """``observer``'s local health multiplier as a failure began: the highest it reported from
    2 s before to 0.5 s after (sampled about once a second), or that a suspicion of ``peer``
    raised during the failure began with (its own clock, logged with the verdict)."""
    polled = [lhm for t, lhm in health.get(observer, []) if start - 2.0 <= t <= start + 0.5]
    raised = [v["lhm"] for v in verdicts if v["observer"] == observer and v["peer"] == peer
              and v["new"] == "suspect" and isinstance(v.get("lhm"), int) and start - 0.5 <= v["t"] <= end]
    return int(max([0, *polled, *raised]))


def detection(verdicts: list[dict[str, Any]], faults: list[dict[str, Any]], timing: Timing,
              nodes: tuple[str, ...], loads: list[tuple[float, float]] | None = None,
              health: dict[str, list[tuple[float, int]]] | None = None) -> dict[str, Any]:
    """Every failure seen as dead by every observer that could: one that lasted at least the
    observer's own bound, ``timing.bound`` of its local health multiplier then (``detect_bound``
    when healthy). Failures over ``detect_bound`` that an unhealthy observer's stretched
    timeouts outlasted are listed (``stretched``), not counted as misses: Lifeguard slows an
    observer that may be the one at fault, on purpose (docs/gossip.md)."""
    times: list[float] = []
    isolated_times: list[float] = []
    missed = []
    stretched = []
    cases = 0
    for f in _ran(faults):
        k = f["kind"]
        dur = f["end"] - f["start"]
        if dur < timing.detect_bound:
            continue
        if k in PARTITIONS:
            pairs = [(o, x) for o in nodes for x in nodes if o != x and _groups_split(f["params"]["groups"], o, x)]
        elif k in ("kill_daemon", "sigstop", "crash"):
            pairs = [(o, f["params"]["node"]) for o in nodes if o != f["params"]["node"]]
        else:
            continue
        for o, x in pairs:
            isolated = k in PARTITIONS and 2 * len(next(g for g in f["params"]["groups"] if o in g)) <= len(nodes)
            bound = timing.isolated_bound if isolated else timing.detect_bound
            if dur < bound:
                continue
            # an observer stopped, killed or restarted before its time was up could not judge
            busy = any(a < f["start"] + bound and b > f["start"] - 1 for a, b in down_intervals(faults, o))
            before = view_at(verdicts, faults, o, x, f["start"])
            if busy or before not in ("alive", "suspect"):
                continue
            hit = next((v["t"] for v in verdicts if v["observer"] == o and v["peer"] == x and v["new"] == "dead"
                        and f["start"] - 0.5 <= v["t"] <= f["end"] + timing.excuse_after), None)
            if not isolated:
                lhm = observer_health(health or {}, verdicts, o, x, f["start"], f["end"])
                own = timing.bound(lhm) if lhm else bound
                if dur < own:
                    after = None if hit is None else round(max(0.0, hit - f["start"]), 2)
                    stretched.append({"fault": f["id"], "kind": k, "observer": o, "peer": x, "lasted_s": round(dur, 2),
                                      "local_health": lhm, "bound_s": round(own, 2), "detected_after_s": after})
                    continue
            cases += 1
            if hit is None:
                load = max((v for t, v in loads or [] if f["start"] <= t <= f["end"]), default=None)
                missed.append({"fault": f["id"], "kind": k, "observer": o, "peer": x, "lasted_s": round(dur, 2),
                               "isolated": isolated, "machine_load1_max": load})
            else:
                (isolated_times if isolated else times).append(max(0.0, hit - f["start"]))
    stats = {}
    if times:
        stats = {"p50_s": round(percentile(times, 50), 3), "p99_s": round(percentile(times, 99), 3),
                 "max_s": round(max(times), 3)}
    iso = {}
    if isolated_times:
        iso = {"n": len(isolated_times), "p50_s": round(percentile(isolated_times, 50), 3),
               "max_s": round(max(isolated_times), 3)}
    detected = len(times) + len(isolated_times)
    late = sum(1 for c in stretched if c["detected_after_s"] is not None)
    return {"name": "every real failure detected", "ok": not missed, "cases": cases, "detected": detected,
            "missed": missed, "detection": stats, "detection_isolated_observers": iso, "stretched": stretched,
            "detect_bound_s": round(timing.detect_bound, 2), "isolated_bound_s": round(timing.isolated_bound, 2),
            "summary": f"{detected}/{cases} detected" + (
                f" (besides, {len(stretched)} over {timing.detect_bound:.1f} s but within an unhealthy observer's "
                f"stretched bound, {late} of them detected)" if stretched else "") + (
                f"; by observers in touch with the majority p50 {stats['p50_s']:.2f}s p99 {stats['p99_s']:.2f}s"
                if stats else "") + (f"; by isolated observers p50 {iso['p50_s']:.2f}s max {iso['max_s']:.2f}s"
                                     if iso else "")}


def liveness(polls: dict[str, list[dict[str, Any]]], faults: list[dict[str, Any]]) -> dict[str, Any]:
    bad = []
    total = 0
    excused = 0
    for n, recs in polls.items():
        windows = []
        for f in _ran(faults):
            if f["kind"] in ("kill_daemon", "crash", "sigstop") and f["params"]["node"] == n:
                windows.append((f["start"] - 1.0, f["end"] + 1.5))
        for r in recs:
            total += 1
            if r["ok"]:
                continue
            if any(a <= r["t"] <= b for a, b in windows):
                excused += 1
                continue
            bad.append({"node": n, "t": r["t"], "ms": r["ms"], "status": r.get("status"), "error": r.get("error"),
                        "machine_load1": r.get("load1")})
    return {"name": "daemon answered /liveness within 1 s", "ok": not bad, "polls": total,
            "excused": excused, "failed": bad[:50], "failed_count": len(bad),
            "summary": f"{len(bad)} failed of {total} polls ({excused} while stopped/killed)"}


def crashes(crash_list: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "daemon never crashed", "ok": not crash_list, "crashes": crash_list,
            "summary": f"{len(crash_list)} unexpected exits"}


def orphans(checks: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [c for c in checks if c["orphans"]]
    return {"name": "no orphans", "ok": not bad, "checks": len(checks), "with_orphans": bad,
            "summary": f"{len(bad)} of {len(checks)} checks found orphans"}


def _median(recs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(xs) if xs else None


def _floor(recs: list[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in recs if r.get(key) is not None]
    return min(xs) if xs else None


STARTUP_S = 20.0  # a (re)started daemon's first seconds are its start, not its steady state


def resources(samples: dict[str, list[dict[str, Any]]], warm: float, end: float,
              window: float = 15.0, limit: float = 0.10) -> dict[str, Any]:
    """RSS, fds, threads (from /proc) and asyncio tasks (if /metrics has them) of each daemon
    that ran as one process from the warm-up to the end (the nemesis never kills the witness,
    n1): the first quarter of that time (at least ``window`` s) against the last (RSS:
    medians; counts: the lowest); at most ``limit`` growth."""
    per: dict[str, Any] = {}
    ok = True
    task_metric = None
    for n, recs in samples.items():
        born: dict[int, float] = {}
        for r in recs:
            if r.get("pid") is not None:
                born.setdefault(r["pid"], r["t"])
        rows = []
        for r in recs:
            if not (warm <= r["t"] <= end) or not r.get("proc") or r["t"] < born[r["pid"]] + STARTUP_S:
                continue
            row = {"t": r["t"], "pid": r["pid"], **r["proc"]}
            m = r.get("metrics") or {}
            for k, v in m.items():
                if "task" in k:
                    task_metric = k
                    row["tasks"] = v
            rows.append(row)
        if not rows:
            per[n] = {"judged": False, "why": "no samples after the warm-up"}
            continue
        pids = sorted({r["pid"] for r in rows}, key=lambda p: born[p])
        if len(pids) > 1:  # "from minute 2 to the end" is one process's life: this node's was cut
            per[n] = {"judged": False, "why": f"its daemon was started again after the warm-up ({len(pids)} pids)"}
            continue
        seg = rows
        span = seg[-1]["t"] - seg[0]["t"]
        if span < 2 * window:
            per[n] = {"judged": False, "why": f"only {span:.0f}s after the warm-up"}
            continue
        w = max(window, span / 4)  # long windows: fds and threads swing with the work in flight
        first = [r for r in seg if r["t"] <= seg[0]["t"] + w]
        last = [r for r in seg if r["t"] >= seg[-1]["t"] - w]
        res: dict[str, Any] = {"judged": True, "pid": seg[0]["pid"], "span_s": round(span, 1)}
        for key in ("rss", "fds", "threads", "tasks"):
            # RSS: the median; counts: the floor (a leak raises it, requests in flight only the peaks)
            pick = _median if key == "rss" else _floor
            a, b = pick(first, key), pick(last, key)
            if a is None or b is None or a == 0:
                continue
            g = b / a - 1
            res[key] = {"start": a, "end": b, "growth": round(g, 4)}
            if g > limit:
                ok = False
                res[key]["over"] = True
        per[n] = res
    notes = []
    if task_metric is None:
        notes.append("asyncio task count is not exported by /metrics; proposed: a gauge "
                     "haflowd_asyncio_tasks = len(asyncio.all_tasks()) set at each scrape")
    judged = [n for n, r in per.items() if r.get("judged")]
    if not judged:
        notes.append("no daemon ran as one process from the warm-up to the end")
    return {"name": "RSS, fds, threads, tasks flat (<=10% growth)", "ok": ok and bool(judged), "nodes": per,
            "task_metric": task_metric, "notes": notes,
            "summary": "; ".join(
                f"{n}: " + (", ".join(f"{k} {v['growth']:+.1%}" for k, v in r.items() if isinstance(v, dict))
                            if r.get("judged") else f"not judged ({r['why']})") for n, r in per.items())}


def files(written: dict[str, list[str]], owners: dict[str, str], final: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Every file written is on every node with one of its versions; single-writer files with the last."""
    lost, stale = [], []
    for rel, versions in sorted(written.items()):
        for n, have in final.items():
            got = have.get(rel)
            if got is None or got not in versions:
                lost.append({"file": rel, "node": n, "missing": got is None})
            elif rel in owners and got != versions[-1]:
                stale.append({"file": rel, "node": n, "has_version": versions.index(got),
                              "last_version": len(versions) - 1})
    return {"name": "no lost DAG files", "ok": not lost, "files": len(written), "lost": lost[:50],
            "lost_count": len(lost), "stale": stale[:50], "stale_count": len(stale),
            "summary": f"{len(lost)} lost of {len(written)} files x {len(final)} nodes"}


def converged(final: dict[str, dict[str, str]], conflicts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    names = list(final)
    diff = []
    if names:
        ref = final[names[0]]
        for n in names[1:]:
            for rel in sorted(set(ref) | set(final[n])):
                if ref.get(rel) != final[n].get(rel):
                    d: dict[str, Any] = {"file": rel, names[0]: ref.get(rel) is not None,
                                         n: final[n].get(rel) is not None}
                    times = (conflicts or {}).get(rel, {}).get("times", {})
                    if times:  # a conflict's two edits: their mtimes, this far apart
                        d["conflict_mtimes_s_apart"] = round(max(times.values()) - min(times.values()), 2)
                    diff.append(d)
    return {"name": "DAG folders identical at the end", "ok": not diff, "differences": diff[:50],
            "summary": f"{len(diff)} differing files"}


def stale_edits(files_result: dict[str, Any]) -> list[dict[str, Any]]:
    return list(files_result["stale"])


def lost_edits(conflicts: dict[str, dict[str, Any]], final: dict[str, dict[str, str]], has_key: bool,
               reported: list[dict[str, Any]], copies: dict[str, list[str]],
               stale: list[dict[str, Any]]) -> dict[str, Any]:
    """Conflicting writes: each version in place on some node or kept aside, and the conflict
    reported in /sync; single-writer edits: the last one is what every node has.

    A conflict still open at the end (nodes disagree) loses nothing as long as each version is
    somewhere and it is reported; that it never settled is the convergence invariant's failure."""
    cases = []
    ok = not stale
    if conflicts and not has_key:
        return {"name": "no silently lost edits", "ok": False, "summary": "conflict reporting not available "
                "(/sync has no `conflicts`)", "conflicts": list(conflicts), "stale_edits": stale}
    for rel, c in sorted(conflicts.items()):
        vs = list(c["versions"].values())
        finals = {n: have.get(rel) for n, have in final.items()}
        winner = next(iter(set(finals.values()))) if len(set(finals.values())) == 1 else None
        case: dict[str, Any] = {"file": rel, "writers": list(c["versions"]), "winner_present": winner in vs}
        mentioned = [r for r in reported if rel in str(r["entry"])]
        case["reported_in_sync"] = bool(mentioned)
        case["reports"] = [r["entry"] for r in mentioned][:4]
        losers = [v for v in vs if v != winner]
        in_place = set(finals.values())
        case["open_at_end"] = winner is None
        times = c.get("times", {})
        # the file's mtime on two nodes in the same whole second: csync2 may find no younger side
        case["mtimes_s_apart"] = round(max(times.values()) - min(times.values()), 2) if times else None
        case["same_second"] = len({int(t) for t in times.values()}) == 1
        case["losers_kept"] = [bool(copies.get(v)) or v in in_place for v in losers]
        case["kept_at"] = [copies.get(v, [])[:3] + (["in place on a node"] if v in in_place else []) for v in losers]
        case["ok"] = bool(any(v in in_place for v in vs) and (not losers or (mentioned and all(case["losers_kept"]))))
        if not case["ok"]:
            ok = False
        cases.append(case)
    bad = [c for c in cases if not c["ok"]]
    return {"name": "no silently lost edits", "ok": ok, "conflicts": cases, "stale_edits": stale[:50],
            "summary": f"{len(bad)} of {len(cases)} conflicting writes lost a version silently; "
                       f"{len(stale)} single-writer files not at their last edit"}
