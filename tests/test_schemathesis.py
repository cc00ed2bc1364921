"""schemathesis against the served OpenAPI document, signed in with a test key: every
operation fuzzed from its schema answers without a server error, and what it answers
conforms to the document (status codes and bodies). No worker runs here, so /predict
(504 by design) and /readyz (503 without a worker) are left out."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from shared import accounts, db
from shared.settings import get_settings

KEY: dict[str, str] = {}


@pytest.fixture
def api_schema(use_database, sqlite_url, redis_db, tmp_path):
    use_database(sqlite_url, DIGITS_REDIS_URL=redis_db, DIGITS_STATE_DIR=str(tmp_path / "s"))
    with db.session() as s:
        key, _ = accounts.create_key(s, accounts.server_secret(get_settings()), "fuzz")
    KEY["Authorization"] = f"Bearer {key}"
    app = create_app({"TESTING": True, "DIGITS_AUTH": "required"})
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app).exclude(
        path_regex=r"^/(api/v1/predict|readyz)$")


def test_the_api_keeps_to_its_document(api_schema):
    """Each operation in turn (schemathesis's own pytest plugin and this pytest disagree,
    so the operations are walked here), 40 generated cases each."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    failures: list[str] = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(headers=KEY, checks=[
                not_a_server_error, status_code_conformance, response_schema_conformance])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every operation's findings
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
