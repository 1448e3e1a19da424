"""Every operation of the served OpenAPI document, fuzzed with schemathesis: generated requests
never get a 5xx, and every answer fits the document (status, content type, body schema).

Requests go with the admin token (so they pass authentication and reach the handlers); the
Server-Sent Events stream is left out (it never ends). Failures of every operation are collected
and reported together, each with a curl command that reproduces it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.component.gateway.conftest import ApiClient

#: Per operation: 15 keeps the run near a minute on a quiet two-core machine; more for a deeper
#: hunt. The run grows with the API's operations, so it has its own timeout, not the suite's.
EXAMPLES = int(os.environ.get("CLOUDCORE_FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(base: str, token: str) -> dict[str, str]:
    """The failures found, by operation (runs blocking: in a thread beside the server)."""
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(base + "/openapi.json", timeout=10)
    origin = base.removesuffix("/api/v1")
    failures: dict[str, str] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if _streams(operation.definition.raw):
                continue  # an endless Server-Sent Events stream: no response to check

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=origin, session=session, headers=headers)
                assert response.status_code < 500, _describe(case, response)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                check()
            except (AssertionError, BaseExceptionGroup) as exc:
                failures[operation.label] = str(exc)[:2000]
    return failures


def _streams(operation: dict[str, Any]) -> bool:
    replies = operation.get("responses", {}).values()
    return any("text/event-stream" in reply.get("content", {}) for reply in replies)


def _describe(case: schemathesis.Case, response: Any) -> str:
    return f"{case.as_curl_command()}\n-> {response.status_code} {response.content[:500]!r}"


@pytest.mark.timeout(300)  # 15 examples of each of ~100 operations, growing with the API
async def test_generated_requests_never_get_a_5xx_and_fit_the_document(api: ApiClient) -> None:
    failures = await asyncio.to_thread(fuzz, api.base, api.tokens["admin"])
    assert not failures, "\n\n".join(f"{op}:\n{text}" for op, text in failures.items())
