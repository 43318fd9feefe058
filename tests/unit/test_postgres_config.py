"""[postgres] bucardo_dsn: a secret, inline or from a file, only with topology = "bucardo"."""

from __future__ import annotations

from pathlib import Path

import pytest

from haflowd import config
from haflowd.config import ConfigError, Secret

NODES = '[[postgres.node]]\nname = "pg1"\ndsn = "host=a"\n[[postgres.node]]\nname = "pg2"\ndsn = "host=b"\n'


def load(tmp_path: Path, postgres: str) -> config.Config:
    p = tmp_path / "h.toml"
    p.write_text("[node]\n[api]\n[postgres]\n" + postgres + NODES)
    return config.load(p, check_system=False)


def errors(tmp_path: Path, postgres: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, postgres)
    return [line.split(": ", 1)[1] for line in e.value.lines]


def test_bucardo_dsn_inline_and_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'topology = "bucardo"\nbucardo_dsn = "dbname=bucardo password=s3cret"\n')
    assert cfg.postgres is not None and cfg.postgres.bucardo_dsn == Secret("dbname=bucardo password=s3cret")
    assert "s3cret" not in repr(cfg.postgres)
    (tmp_path / "b.dsn").write_text("dbname=bucardo password=s3cret\n")
    cfg = load(tmp_path, 'topology = "bucardo"\nbucardo_dsn_file = "b.dsn"\n')
    assert cfg.postgres is not None and cfg.postgres.bucardo_dsn == Secret("dbname=bucardo password=s3cret")


def test_bucardo_dsn_is_optional(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'topology = "bucardo"\n')
    assert cfg.postgres is not None and cfg.postgres.bucardo_dsn is None
    cfg = load(tmp_path, "")
    assert cfg.postgres is not None and cfg.postgres.bucardo_dsn is None


@pytest.mark.parametrize(
    ("postgres", "expected"),
    [
        ('bucardo_dsn = "dbname=bucardo password=s3cret"\n',
         'postgres.bucardo_dsn: expected only with topology = "bucardo"; got topology "streaming"'),
        ('topology = "bucardo"\nbucardo_dsn = "password=s3cret"\nbucardo_dsn_file = "x"\n',
         "postgres.bucardo_dsn: expected one of bucardo_dsn, bucardo_dsn_file; got both"),
        ('topology = "bucardo"\nbucardo_dsn = ""\n',
         "postgres.bucardo_dsn: expected a non-empty string; got an empty string"),
        ('topology = "bucardo"\nbucardo_dsn_file = "missing.dsn"\n', "postgres.bucardo_dsn_file: cannot read"),
        ('topology = "bucardo"\nbucardo_dns = "password=s3cret"\n', 'postgres.bucardo_dns: unknown key'),
    ],
)
def test_bucardo_dsn_errors(tmp_path: Path, postgres: str, expected: str) -> None:
    lines = errors(tmp_path, postgres)
    assert any(line.startswith(expected) for line in lines), lines
    assert not any("s3cret" in line for line in lines)
