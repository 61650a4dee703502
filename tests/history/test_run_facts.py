"""The micro-batch a scan ran with and its unit (what one IR is) are kept by ``--record``
(revision 0005) and read back where the history shows a scan's settings; older rows say unknown."""
from __future__ import annotations

import dataclasses
import json

from click.testing import CliRunner

from redaudit.cli.history import history_command
from redaudit.history import load_scan, model_history, record_scan
from redaudit.history.db import make_engine
from redaudit.history.schema import downgrade, head_revision, upgrade
from redaudit.service.history_io import result_of_stored
from tests.history.conftest import make_result


def _recorded(db_url: str, micro_batch: int, unit: str) -> int:
    result = dataclasses.replace(make_result(), micro_batch=micro_batch, unit=unit)
    return record_scan(db_url, result, "net")


def test_micro_batch_and_unit_round_trip(db_url):
    scan_id = _recorded(db_url, 18, "residual block")
    stored = load_scan(db_url, scan_id)
    assert (stored.settings["micro_batch"], stored.settings["unit"]) == (18, "residual block")
    assert (stored.summary.micro_batch, stored.summary.unit) == (18, "residual block")
    again = result_of_stored(stored)  # the service's gates read a stored scan as a result
    assert (again.micro_batch, again.unit) == (18, "residual block")
    shown = CliRunner().invoke(history_command, ["net", "--db", db_url, "--json"])
    assert shown.exit_code == 0, shown.output
    scan = json.loads(shown.output)["versions"][0]["scans"][0]
    assert (scan["micro_batch"], scan["unit"]) == (18, "residual block")


def test_rows_from_before_0005_read_as_unknown_after_the_upgrade(db_url):
    """Down to 0004 drops both columns and keeps the scan; up again, the scan has NULL (unknown),
    never a made-up 0 or "", and a new scan records both."""
    old = _recorded(db_url, 18, "decoder layer")
    engine = make_engine(db_url)
    try:
        assert downgrade(engine, "0004") == (head_revision(), "0004")
        assert upgrade(engine) == ("0004", head_revision())
    finally:
        engine.dispose()
    stored = load_scan(db_url, old)
    assert stored.settings["micro_batch"] is None and stored.settings["unit"] is None
    assert stored.summary.layer_count == 6  # the row itself survived both steps
    new = _recorded(db_url, 7, "decoder layer")
    scans = [scan for _, scan in model_history(db_url, "net").scans()]
    assert [(scan.scan_id, scan.micro_batch, scan.unit) for scan in scans] == [(old, None, None),
                                                                               (new, 7, "decoder layer")]
