"""Property-based API test against the served OpenAPI spec (schemathesis): no request, however
odd, gets a 5xx, and every response matches the schema the spec documents for it.

Bounded: a few examples per operation, derandomized, so it runs in seconds and the same way
every time.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from redaudit.service.app import create_app
from redaudit.service.state import ServiceState
from redaudit.service.settings import ServiceSettings
from redaudit.service.auth import create_token
import tempfile
from pathlib import Path

_FOLDER = Path(tempfile.mkdtemp(prefix="redaudit-schemathesis-"))
_STATE = ServiceState.open(ServiceSettings(db=f"sqlite:///{_FOLDER / 'h.db'}", data_dir=_FOLDER / "data",
                                           max_upload_bytes=1_000_000))
# admin: every operation is exercised past its auth check, the admin ones (tokens) included; the
# API refuses to revoke the token making the request, so the run cannot lock itself out.
_TOKEN = create_token(_STATE.engine, "schemathesis", "admin")[1]
_APP = create_app(_STATE, start_workers=False)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _APP)


#: schemathesis gives each in-process request 10 s by default: an upload took longer on a 2-core
#: machine at load ~9 and failed the run (a verdict on the machine's load, not on the API). This is
#: only a hang guard.
HANG_GUARD_S = 600


@schema.parametrize()
@settings(max_examples=8, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_has_no_server_errors_and_keeps_its_schema(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"}, timeout=HANG_GUARD_S,
                           checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
