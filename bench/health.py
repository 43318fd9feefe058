"""haflowd's health endpoints under load, and how fast its checks see PostgreSQL and RabbitMQ change.

    scripts/bench health [--seconds 30] [--rate 1000] [--promotions 3] [--stops 3] [--json] [--keep-tmp]

1. Endpoint latency. A real PostgreSQL primary (pg1) and streaming standby (pg2) on
   127.0.0.1 (tests/fixtures/postgres.py) and one haflowd with a ``[postgres]`` section
   (local_node = pg1, interval 1s, timeout 1s). A load generator in a separate process
   (this file, ``--loadgen``) sends GET requests open-loop at ``--rate`` per second for
   ``--seconds``: request i is due at start + i/rate and its latency is measured from that
   due time, not from when it was sent, so a stall is charged to every request it delays
   (no coordinated omission). Keep-alive connections; a new one is opened whenever every
   open one is busy. ``/health`` then ``/postgres/primary``, (a) with PostgreSQL healthy,
   (b) with pg1 blackholed (SIGSTOP to its postmaster's process group: TCP connects, then
   nothing answers; SIGCONT in ``finally``). Also the daemon's CPU (% of one core) over
   each load window. Target: p99 <= 5 ms in every case.
2. Split brain. A fresh pair and two daemons (local_node pg1 and pg2, interval 1s); pg2 is
   promoted (``pg_ctl promote``) while pg1 is still a primary; both daemons' ``/postgres``
   are polled every 20 ms until each says ``split_brain: true``. Target <= 2 intervals.
3. RabbitMQ. A real three-node cluster (tests/fixtures/rabbitmq.py) and one daemon with a
   ``[rabbitmq]`` section (interval 1s, timeout 1s); ``rabbitmqctl -n hf3@localhost
   stop_app``; ``/rabbitmq`` polled every 20 ms until a problem of status warning or worse
   names hf3@localhost; then ``start_app`` and wait for the cluster to be healthy again.

Every wait has a deadline; daemons, PostgreSQL, the RabbitMQ nodes and their epmd are torn
down in ``finally``; the temp dir is removed. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # scripts/bench runs this file with the venv's python

INTERVAL_S = 1.0
TARGET_P99_MS = 5.0
POLL_S = 0.02
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DETECT_TIMEOUT_S = 15.0  # far beyond any sane detection time
LOAD_LEAD_S = 2.0  # the load generator is started this long before its first request is due
REQUEST_TIMEOUT_S = 5.0
PREOPEN = 16  # keep-alive connections opened before the first request is due


# --------------------------------------------------------------- the load generator (own process)


async def _loadgen(port: int, path: str, rate: float, seconds: float, start_at: float) -> dict[str, Any]:
    from common import percentile

    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: haflowd-bench\r\n\r\n".encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    lat: list[float] = []
    send_lag: list[float] = []
    codes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    opened = 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        opened += 1
        return await asyncio.open_connection("127.0.0.1", port)

    async def exchange(due: float) -> None:
        conn = idle.pop() if idle else await connect()
        reader, writer = conn
        send_lag.append((time.monotonic() - due) * 1000)
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = None
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length is None:
            raise ValueError("no content-length")
        await reader.readexactly(length)
        lat.append((time.monotonic() - due) * 1000)
        codes[status] += 1
        if b"connection: close" in head.lower():
            writer.close()
        else:
            idle.append(conn)

    async def one(due: float) -> None:
        try:
            await asyncio.wait_for(exchange(due), REQUEST_TIMEOUT_S)
        except TimeoutError:
            errors["timeout"] += 1
            lat.append(REQUEST_TIMEOUT_S * 1000)  # charged, not dropped
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            errors[type(e).__name__] += 1

    for _ in range(PREOPEN):
        idle.append(await connect())
    gc.collect()
    gc.freeze()
    gc.disable()
    n = int(rate * seconds)
    period = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    late = time.monotonic() - start_at
    i = 0
    while i < n:
        now = time.monotonic()
        while i < n and start_at + i * period <= now:
            t = asyncio.create_task(one(start_at + i * period))
            pending.add(t)
            t.add_done_callback(pending.discard)
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, start_at + i * period - time.monotonic()))
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 5)
    for _, w in idle:
        w.close()

    def q(xs: list[float], p: float) -> float | None:
        return round(percentile(xs, p), 3) if xs else None

    return {"path": path, "rate": rate, "seconds": seconds, "sent": n, "answered": len(lat) - errors["timeout"],
            "codes": {str(k): v for k, v in sorted(codes.items())}, "errors": dict(errors),
            "p50_ms": q(lat, 50), "p90_ms": q(lat, 90), "p99_ms": q(lat, 99), "p999_ms": q(lat, 99.9),
            "max_ms": round(max(lat), 3) if lat else None, "send_lag_p99_ms": q(send_lag, 99),
            "connections": opened, "started_late_s": round(late, 3) if late > 0 else 0.0}


def loadgen_main(argv: list[str]) -> int:
    port, path, rate, seconds, start_at = int(argv[0]), argv[1], float(argv[2]), float(argv[3]), float(argv[4])
    print(json.dumps(asyncio.run(_loadgen(port, path, rate, seconds, start_at))), flush=True)
    return 0


# ------------------------------------------------------------------------------- the bench proper

if __name__ == "__main__" and sys.argv[1:2] == ["--loadgen"]:
    sys.exit(loadgen_main(sys.argv[2:]))

import psutil  # noqa: E402
from common import BenchError, free_port, http_get, log, percentile, run_main, table, toml_str, wait_until  # noqa: E402

sys.path.insert(0, str(ROOT))  # the real-service fixtures of the test suite
from tests.fixtures import postgres as pgfx  # noqa: E402
from tests.fixtures import rabbitmq as rmqfx  # noqa: E402


def get_json(port: int, path: str) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        body: dict[str, Any] = json.loads(http_get(port, path)[1])
        return body
    return None


class Haflowd:
    """One haflowd in its own session and directory, with the given config sections."""

    def __init__(self, workdir: Path, name: str, body: str) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.config = self.dir / "haflowd.toml"
        head = "\n".join([
            "[node]",
            f"name = {toml_str(name)}",
            f"data_dir = {toml_str(str(self.dir / 'data'))}",
            "[api]",
            f'listen = "127.0.0.1:{self.port}"',
            f"control_socket = {toml_str(str(self.dir / 'ctl.sock'))}",
        ])
        self.config.write_text(head + "\n" + body + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Haflowd:
        with open(self.dir / "stdout.log", "wb") as out, open(self.dir / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "haflowd", "--config", str(self.config), "--log-format", "json"],
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)

        def up() -> bool:
            self.check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                return http_get(self.port, "/liveness")[0] == 200
            return False

        wait_until(f"haflowd {self.dir.name} /liveness", START_TIMEOUT_S, up)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.dir / "stderr.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"haflowd {self.dir.name} exited with {self.proc.returncode}:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = set()
        with contextlib.suppress(psutil.Error):
            pids = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@contextlib.contextmanager
def daemons(tmp: Path, specs: list[tuple[str, str]]) -> Iterator[list[Haflowd]]:
    made: list[Haflowd] = []
    try:
        for dirname, body in specs:
            d = Haflowd(tmp / dirname, dirname, body)
            made.append(d)
            d.start()
        yield made
    finally:
        for d in made:
            with contextlib.suppress(Exception):
                d.stop()


@contextlib.contextmanager
def pg_pair(template: Path, bindir: Path) -> Iterator[pgfx.PgPair]:
    try:
        pair = pgfx.make_pair(template, bindir)
    except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"could not start a PostgreSQL pair: {e}") from e
    try:
        yield pair
    finally:
        pair.destroy()


# ------------------------------------------------------------------------------- 1. latency


def run_load(d: Haflowd, path: str, rate: float, seconds: float) -> dict[str, Any]:
    """The load generator against ``path`` for ``seconds``; the daemon's CPU over the same window."""
    start_at = time.monotonic() + LOAD_LEAD_S
    lg = subprocess.Popen([PYTHON, __file__, "--loadgen", str(d.port), path, str(rate), str(seconds),
                           repr(start_at)], cwd=Path(__file__).parent, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        proc = psutil.Process(d.pid)
        time.sleep(max(0.0, start_at - time.monotonic()))
        c0, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(max(0.0, start_at + seconds - time.monotonic()))
        c1, t1 = proc.cpu_times(), time.monotonic()
        out, err = lg.communicate(timeout=REQUEST_TIMEOUT_S + 30)
    finally:
        if lg.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lg.pid, signal.SIGKILL)
            lg.wait(5)
    if lg.returncode != 0:
        raise BenchError(f"load generator failed ({lg.returncode}): {err[-2000:]}")
    d.check_alive()
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    busy = (c1.user + c1.system) - (c0.user + c0.system)
    res["daemon_cpu_pct"] = round(100 * busy / (t1 - t0), 1)
    log(f"{path}: p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms, max {res['max_ms']} ms, "
        f"cpu {res['daemon_cpu_pct']}%, codes {res['codes']}, errors {res['errors']}")
    return res


def pg_node(d: Haflowd, name: str) -> dict[str, Any] | None:
    body = get_json(d.port, "/postgres")
    if not body or not body.get("checked_at"):
        return None
    for n in body.get("nodes", []):
        if n.get("name") == name:
            node: dict[str, Any] = n
            return node
    return None


def blackhole(node: pgfx.PgNode, sig: int) -> None:
    """``sig`` to the postmaster's process group (its own: pg_ctl starts it in a new session)."""
    pid = node.postmaster_pid()
    if pid is None:
        raise BenchError(f"{node.name}: no postmaster pid")
    pgid = os.getpgid(pid)
    if pgid != os.getpgid(0):
        os.killpg(pgid, sig)
        return
    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def bench_latency(tmp: Path, template: Path, bindir: Path, rate: float, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with pg_pair(template, bindir) as pair, \
            daemons(tmp, [("lat", pair.postgres_body("pg1", interval="1s", timeout="1s"))]) as (d,):
        wait_until("pg1 up in /postgres", START_TIMEOUT_S, lambda: (pg_node(d, "pg1") or {}).get("up"))
        log("latency, PostgreSQL healthy")
        out["healthy"] = {p: run_load(d, p, rate, seconds) for p in ("/health", "/postgres/primary")}
        log("latency, pg1 blackholed (SIGSTOP)")
        blackhole(pair.primary, signal.SIGSTOP)
        try:
            wait_until("pg1 down in /postgres", DETECT_TIMEOUT_S,
                       lambda: (pg_node(d, "pg1") or {"up": True}).get("up") is False, every=0.1)
            out["blackholed"] = {p: run_load(d, p, rate, seconds) for p in ("/health", "/postgres/primary")}
            still_down = pg_node(d, "pg1")
            out["blackholed"]["pg1_error_at_end"] = still_down.get("error") if still_down else None
        finally:
            with contextlib.suppress(Exception):
                blackhole(pair.primary, signal.SIGCONT)
    worst = max(r["p99_ms"] or float("inf") for case in ("healthy", "blackholed")
                for p, r in out[case].items() if p.startswith("/"))
    out["worst_p99_ms"] = worst
    out["pass"] = worst <= TARGET_P99_MS
    return out


# ------------------------------------------------------------------------------- 2. split brain


def bench_split_brain(tmp: Path, template: Path, bindir: Path, runs: int) -> dict[str, Any]:
    results = []
    for run in range(1, runs + 1):
        with pg_pair(template, bindir) as pair, daemons(tmp / f"split{run}", [
                ("on-pg1", pair.postgres_body("pg1", interval="1s", timeout="1s")),
                ("on-pg2", pair.postgres_body("pg2", interval="1s", timeout="1s"))]) as ds:
            def settled() -> bool:
                bodies = [get_json(d.port, "/postgres") for d in ds]
                return all(b and b.get("checked_at") and b.get("split_brain") is False
                           and all(n.get("up") for n in b.get("nodes", [])) for b in bodies)

            wait_until("both daemons to see pg1 and pg2 up, no split brain", START_TIMEOUT_S, settled)
            # land the promotion at a random phase of the daemons' 1 s rounds
            time.sleep((run * 0.37) % 1.0)
            t_issue = time.monotonic()
            try:
                pair.standby.promote()
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                raise BenchError(f"pg_ctl promote failed: {e}") from e
            t_done = time.monotonic()
            seen: dict[str, float] = {}
            deadline = t_done + DETECT_TIMEOUT_S
            while len(seen) < len(ds):
                if time.monotonic() > deadline:
                    raise BenchError(f"split_brain not reported by every daemon within {DETECT_TIMEOUT_S:g}s "
                                     f"(seen: {sorted(seen)})")
                for d in ds:
                    if d.dir.name not in seen:
                        b = get_json(d.port, "/postgres")
                        if b and b.get("split_brain") is True:
                            seen[d.dir.name] = time.monotonic()
                time.sleep(POLL_S)
            r = {"promote_s": round(t_done - t_issue, 3),
                 **{f"{k}_from_issue_s": round(v - t_issue, 3) for k, v in seen.items()},
                 **{f"{k}_from_done_s": round(v - t_done, 3) for k, v in seen.items()}}
            r["both_from_issue_s"] = round(max(seen.values()) - t_issue, 3)
            log(f"split brain run {run}: {r}")
            results.append(r)
    both = [r["both_from_issue_s"] for r in results]
    return {"runs": results, "interval_s": INTERVAL_S, "target_s": 2 * INTERVAL_S,
            "worst_both_from_issue_s": max(both), "median_both_from_issue_s": round(percentile(both, 50), 3),
            "pass": max(both) <= 2 * INTERVAL_S}


# ------------------------------------------------------------------------------- 3. RabbitMQ


def rabbit_problem(d: Haflowd, node: str) -> str | None:
    body = get_json(d.port, "/rabbitmq")
    if not body:
        return None
    for p in body.get("problems", []):
        if p.get("status") in ("warning", "critical") and node in p.get("text", ""):
            return f"{p['status']}: {p['text']}"
    return None


def bench_rabbitmq(tmp: Path, runs: int) -> dict[str, Any]:
    why = rmqfx.rabbitmq_unavailable()
    if why:
        return {"skipped": why}
    rmqfx.sweep_stale()
    root = tmp / "rmq"
    root.mkdir()
    log("starting a three-node RabbitMQ cluster")
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            cluster = rmqfx.start_cluster(root)
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        raise BenchError(f"could not start the RabbitMQ cluster: {e}") from e
    log(f"RabbitMQ cluster up in {time.monotonic() - t0:.1f}s")
    results = []
    try:
        with daemons(tmp, [("rmq-daemon", cluster.toml(interval="1s", timeout="1s"))]) as (d,):
            def passing() -> bool:
                b = get_json(d.port, "/rabbitmq")
                return bool(b and b.get("status") == "passing")

            victim = cluster.node(3)
            for run in range(1, runs + 1):
                wait_until("/rabbitmq passing", START_TIMEOUT_S * 2, passing, every=0.1)
                time.sleep((run * 0.37) % 1.0)
                t_issue = time.monotonic()
                try:
                    victim.ctl("stop_app")
                except AssertionError as e:
                    raise BenchError(str(e)) from e
                t_done = time.monotonic()
                found = wait_until(f"a problem naming {victim.name}", DETECT_TIMEOUT_S,
                                   lambda: rabbit_problem(d, victim.name), every=POLL_S)
                t_seen = time.monotonic()
                r = {"stop_app_s": round(t_done - t_issue, 3), "from_issue_s": round(t_seen - t_issue, 3),
                     "from_done_s": round(t_seen - t_done, 3), "problem": found}
                log(f"rabbitmq run {run}: {r}")
                results.append(r)
                try:
                    victim.ctl("start_app")
                    cluster.wait_healthy(START_TIMEOUT_S * 2)
                except AssertionError as e:
                    raise BenchError(f"{victim.name} did not come back: {e}") from e
    finally:
        cluster.destroy()
    issue = [r["from_issue_s"] for r in results]
    done = [r["from_done_s"] for r in results]
    return {"runs": results, "node": "hf3@localhost", "interval_s": INTERVAL_S,
            "median_from_issue_s": round(percentile(issue, 50), 3), "worst_from_issue_s": max(issue),
            "median_from_done_s": round(percentile(done, 50), 3), "worst_from_done_s": max(done)}


# ------------------------------------------------------------------------------- main


def run(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    why = pgfx.pg_unavailable()
    if why:
        raise BenchError(why)
    bindir = pgfx.pg_bin()
    assert bindir is not None
    template = pgfx._init_template(bindir)
    report: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "cpus": os.cpu_count(),
                              "target_p99_ms": TARGET_P99_MS}
    try:
        report["latency"] = bench_latency(tmp, template, bindir, args.rate, args.seconds)
        report["split_brain"] = bench_split_brain(tmp, template, bindir, args.promotions)
    finally:
        import shutil

        shutil.rmtree(template, ignore_errors=True)
    report["rabbitmq"] = bench_rabbitmq(tmp, args.stops)
    return report


def fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def render(r: dict[str, Any]) -> str:
    out = []
    lat = r["latency"]
    rows = []
    for p in ("/health", "/postgres/primary"):
        h, b = lat["healthy"][p], lat["blackholed"][p]
        for key, label in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"),
                           ("max_ms", "max ms"), ("daemon_cpu_pct", "daemon CPU % of a core")):
            rows.append((f"{p} {label}", fmt(h[key]), fmt(b[key])))
        rows.append((f"{p} answered / sent", f"{h['answered']}/{h['sent']}", f"{b['answered']}/{b['sent']}"))
        rows.append((f"{p} status codes", " ".join(f"{k}:{v}" for k, v in h["codes"].items()),
                     " ".join(f"{k}:{v}" for k, v in b["codes"].items())))
        rows.append((f"{p} load gen send lag p99 ms", fmt(h["send_lag_p99_ms"]), fmt(b["send_lag_p99_ms"])))
        rows.append((f"{p} connections opened", str(h["connections"]), str(b["connections"])))
    out.append(table(f"1. latency at {r['rate']:g} req/s open loop, {r['seconds']:g} s per endpoint and case "
                     f"({r['cpus']} CPUs)", ("", "pg healthy", "pg1 SIGSTOPped"), rows))
    out.append(f"  target p99 <= {r['target_p99_ms']:g} ms: worst {lat['worst_p99_ms']:.2f} ms -> "
               f"{'PASS' if lat['pass'] else 'FAIL'}")
    sb = r["split_brain"]
    rows = []
    for i, run_ in enumerate(sb["runs"], 1):
        rows.append((f"run {i}: on-pg1 / on-pg2 from promote issued (s)", fmt(run_["on-pg1_from_issue_s"]),
                     fmt(run_["on-pg2_from_issue_s"])))
        rows.append((f"run {i}: from promote returned (took {run_['promote_s']:.2f}s)",
                     fmt(run_["on-pg1_from_done_s"]), fmt(run_["on-pg2_from_done_s"])))
    out.append("")
    out.append(table("2. pg_ctl promote of the standby -> split_brain: true on both daemons (interval 1s)",
                     ("", "daemon pg1", "daemon pg2"), rows))
    out.append(f"  target <= {sb['target_s']:g} s (2 intervals), both daemons, from promote issued: worst "
               f"{sb['worst_both_from_issue_s']:.2f} s, median {sb['median_both_from_issue_s']:.2f} s -> "
               f"{'PASS' if sb['pass'] else 'FAIL'}")
    rq = r["rabbitmq"]
    out.append("")
    if "skipped" in rq:
        out.append(f"3. RabbitMQ: skipped ({rq['skipped']})")
    else:
        rows = [(f"run {i} (stop_app took {x['stop_app_s']:.2f}s)", fmt(x["from_issue_s"]), fmt(x["from_done_s"]))
                for i, x in enumerate(rq["runs"], 1)]
        rows.append(("median", fmt(rq["median_from_issue_s"]), fmt(rq["median_from_done_s"])))
        rows.append(("worst", fmt(rq["worst_from_issue_s"]), fmt(rq["worst_from_done_s"])))
        out.append(table(f"3. rabbitmqctl -n {rq['node']} stop_app -> warning or worse naming it in /rabbitmq "
                         "(interval 1s, timeout 1s), seconds", ("", "from issued", "from returned"), rows))
        out.append(f"  first problem seen: {rq['runs'][0]['problem']}")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/bench health", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="load duration per endpoint and case (default 30)")
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second, open loop (default 1000)")
    p.add_argument("--promotions", type=int, default=3, help="split-brain runs, a fresh pair each (default 3)")
    p.add_argument("--stops", type=int, default=3, help="RabbitMQ stop_app runs (default 3)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for inspection")
    args = p.parse_args()
    if not (0 < args.seconds <= 3600 and 0 < args.rate <= 100000 and 1 <= args.promotions <= 50
            and 1 <= args.stops <= 50):
        p.error("out of range: 0 < --seconds <= 3600, 0 < --rate <= 100000, 1 <= --promotions/--stops <= 50")
    return run_main("haflowd-bench-health-", args.keep_tmp, args.json, lambda tmp: run(tmp, args), render)


if __name__ == "__main__":
    sys.exit(main())
