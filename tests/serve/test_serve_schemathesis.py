"""Property-based run of schemathesis against the OpenAPI schema, on a dataset service and on a library
service: no 5xx, and every answer matches the schema (status codes, content types, bodies). Bounded: a few
examples per operation (well under a minute each)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.serve.app import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(engine):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(engine.settings, engine))


@pytest.fixture
def library_api_schema(library_engine):
    return schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(library_engine.settings, library_engine)
    )


schema = schemathesis.pytest.from_fixture("api_schema")
library_schema = schemathesis.pytest.from_fixture("library_api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case) -> None:
    case.call_and_validate(checks=CHECKS)


@library_schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_a_library_api_conforms_to_its_schema(case) -> None:
    case.call_and_validate(checks=CHECKS)
