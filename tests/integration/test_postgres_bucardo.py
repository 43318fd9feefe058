"""The PostgreSQL check in the Bucardo topology: two real primaries kept in step by a real Bucardo."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.fixtures.postgres import BucardoPair

pytestmark = pytest.mark.integration


def pg_check(d) -> dict:
    return {c["name"]: c for c in d.get("/health")[1]["checks"]}["postgres"]  # KeyError: not yet


def wait_check(d, status: str, contains: str = "", timeout: float = 15) -> dict:
    def ok() -> dict | None:
        c = pg_check(d)
        return c if c["status"] == status and contains in c["output"] else None
    return wait_until(ok, timeout, f"postgres check {status!r} containing {contains!r}")


def test_bucardo_writable_nodes_and_sync_states(daemon, bucardo_pair: BucardoPair):
    pair = bucardo_pair
    pg1, pg2 = pair.nodes
    d = daemon(pair.postgres_body("pg1"))
    c = wait_check(d, "passing", "syncs ok: s1")
    assert c["output"].startswith("every node writable: pg1, pg2")
    body = d.get("/postgres")[1]
    assert body["topology"] == "bucardo" and body["split_brain"] is False
    assert {n["name"]: n["role"] for n in body["nodes"]} == {"pg1": "primary", "pg2": "primary"}
    assert [(s["name"], s["state"], s["status"]) for s in body["syncs"]] == [("s1", "active", "passing")]
    assert d.get("/postgres/primary")[0] == 200  # every node is a primary by design
    assert d.get("/postgres/read-only")[0] == 200
    assert d.get("/postgres/replica")[0] == 503
    assert 'haflowd_postgres_bucardo_sync_status{sync="s1"} 0.0' in d.get("/metrics")[1].decode()

    # Bucardo really replicates, both ways
    pair.app_sql(pg1, "INSERT INTO t VALUES (1, 'from pg1')")
    pair.app_sql(pg2, "INSERT INTO t VALUES (2, 'from pg2')")
    for n in (pg1, pg2):
        wait_until(lambda n=n: pair.app_sql(n, "SELECT count(*) FROM t")[0][0] == 2, 20, f"both rows on {n.name}")
    s1 = wait_until(lambda: d.get("/postgres")[1]["syncs"][0]["last_good_at"], 15, "a good run of s1")
    assert s1 > body["checked_at"] - 60

    # stale: no good run for longer than the sync's own "overdue"
    pair.bucardo("update", "sync", "s1", "overdue=1 second")
    c = wait_check(d, "warning", "sync s1 is stale")
    assert "overdue after 1s" in c["output"]
    pair.bucardo("update", "sync", "s1", "overdue=0 seconds")
    wait_check(d, "passing")

    # failing: pg2 refuses a row that pg1 accepted
    pair.app_sql(pg2, "ALTER TABLE t ADD CONSTRAINT no_bad CHECK (v <> 'bad')")
    pair.app_sql(pg1, "INSERT INTO t VALUES (3, 'bad')")
    c = wait_check(d, "critical", "sync s1 is failing")
    assert "no_bad" in c["output"] and "\n" not in c["output"]
    assert d.get("/health")[0] == 503
    assert 'haflowd_postgres_bucardo_sync_status{sync="s1"} 2.0' in d.get("/metrics")[1].decode()

    # a node down is named too; the other is still a writable primary
    pg2.stop("immediate")
    c = wait_check(d, "critical", "pg2 is down")
    assert d.get("/postgres/primary")[0] == 200
