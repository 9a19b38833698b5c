"""schemathesis against the service's own OpenAPI schema, on a real server with a tiny model: no
request it can make, valid or not, gets a server error or a response outside the schema."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance  # noqa: E402

from test_serve import start  # noqa: E402


@pytest.fixture(scope="module")
def fuzzed_service(tiny_model_dir):
    running, service = start(tiny_model_dir, "--max-new-tokens", "8", "--max-queued", "10000",
                             "--max-waiting", "10000")
    yield running, service
    running.close()


def test_no_server_error_and_every_response_in_the_schema(fuzzed_service):
    running, _ = fuzzed_service
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/contexts", "/v1/contexts/{context_id}"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, content_type_conformance])

        call()
    import httpx

    served = httpx.get(running.url + "/metrics").text  # the requests reached the service
    chats = sum(float(line.rsplit(" ", 1)[1]) for line in served.splitlines()
                if line.startswith('ilre_requests_total{route="/v1/chat/completions"'))
    assert chats >= 20
