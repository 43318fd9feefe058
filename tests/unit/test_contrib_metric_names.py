"""Issue 17: the sync gauges that counted files without saying so carry the unit now.

``haflowd_sync_peer_pending`` → ``haflowd_sync_peer_pending_files`` and ``haflowd_sync_conflicts`` →
``haflowd_sync_conflicts_files``; the old names stay for one release, same values, with a HELP text
that says they are deprecated (dashboards and alerts move to the new names in the meantime). Pure.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from haflowd.api import metrics
from haflowd.api.server import ReadApi
from tests.unit.test_reference_drift import full_state

RENAMES = {"haflowd_sync_peer_pending": "haflowd_sync_peer_pending_files",
           "haflowd_sync_conflicts": "haflowd_sync_conflicts_files"}


async def test_renamed_sync_gauges_carry_the_unit_and_the_old_names_are_deprecated(tmp_path: Path) -> None:
    text = metrics.render(ReadApi(await full_state(tmp_path)).registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for old, new in RENAMES.items():
        assert new in families and families[new].type == "gauge", new
        assert "DEPRECATED" not in families[new].documentation
        assert families[old].documentation.startswith("DEPRECATED"), old
        assert new in families[old].documentation  # says where to go
        values = {tuple(sorted(s.labels.items())): s.value for s in families[new].samples}
        assert values == {tuple(sorted(s.labels.items())): s.value for s in families[old].samples}
        assert values, new
