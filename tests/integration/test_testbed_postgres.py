"""The testbed's PostgreSQL (shared by the tests and scripts/demo): a server that will not
start says why, from its own log, instead of pg_ctl's "Examine the log output"."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.postgres import make_pair


def test_a_server_that_does_not_start_shows_the_end_of_its_log(pg_template: tuple[Path, Path]) -> None:
    with pytest.raises(RuntimeError) as failed:
        make_pair(*pg_template, conf_extra="shared_buffers = 'plenty'\n")
    text = str(failed.value)
    assert "pg1.log ends:" in text, text
    assert 'invalid value for parameter "shared_buffers"' in text, text
