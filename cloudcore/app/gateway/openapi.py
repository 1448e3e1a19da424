"""The OpenAPI 3.1 document, generated from the same declarations that route and validate.

msgspec writes JSON Schema 2020-12, which is what OpenAPI 3.1 uses, so the schemas of bodies,
query parameters and replies are the very types the gateway decodes and encodes with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from cloudcore import __version__
from cloudcore.app.gateway.api import Route
from cloudcore.app.gateway.errors import ErrorBody
from cloudcore.app.gateway.idempotency import HEADER, MAX_KEY

__all__ = ["build_openapi"]

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

_ERROR_TEXT = {
    400: "The body is not JSON, or the request is malformed",
    401: "No API token, or an unknown, revoked or expired one",
    403: "The caller's role does not allow this",
    404: "No such resource (or one of another tenant)",
    409: "The request conflicts with the resource's state (illegal transition, quota, ...)",
    413: "The body is larger than the limit",
    422: "The body or a query parameter fails validation; the message names the field",
    429: "Too many requests with this token; see Retry-After",
    503: "A backend is unavailable; see Retry-After",
}


def build_openapi(routes: Iterable[Route], prefix: str) -> dict[str, Any]:
    routes = list(routes)
    types: list[Any] = [ErrorBody]
    for route in routes:
        types.extend(t for t in (route.body, route.query, route.reply) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = {id(t): s for t, s in zip(types, schemas, strict=True)}
    for route in routes:
        if route.refine is not None and route.body is not None:
            name = schema_of[id(route.body)]["$ref"].rpartition("/")[2]
            route.refine(components[name], components)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = _operation(route, schema_of, components)
        path = _PATH_PARAM.sub(r"{\1}", prefix + route.path)
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cloudcore",
            "version": __version__,
            "description": "The cloudcore IaaS orchestrator: datacenters, hosts, VMs, tasks, "
            "events. Long operations answer 202 with the task's location.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(
    route: Route, schema_of: dict[int, Any], components: dict[str, Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
    }
    if route.handler.__doc__:
        operation["description"] = route.handler.__doc__.strip()
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    if route.query is not None:
        parameters.extend(_query_parameters(route.query, components))
    if _idempotent(route):
        parameters.append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "The same key from the same user gets the first answer again; "
                "a different request under it is a 409.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            # A body whose fields all have defaults may be left out (the server reads it as {}).
            "required": any(f.required for f in msgspec.structs.fields(route.body)),
            "content": {"application/json": {"schema": schema_of[id(route.body)]}},
        }
    operation["responses"] = _responses(route, schema_of)
    if route.public:
        operation["security"] = []
    return operation


def _idempotent(route: Route) -> bool:
    return route.method == "POST" and not route.public


def _query_parameters(kind: type, components: dict[str, Any]) -> list[dict[str, Any]]:
    component = components[kind.__name__]
    required = set(component.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in component.get("properties", {}).items()
    ]


def _responses(route: Route, schema_of: dict[int, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if route.reply is None:
        responses[str(route.status)] = {"description": route.summary}
    elif route.content_type != "application/json":
        responses[str(route.status)] = {
            "description": route.summary,
            "content": {route.content_type: {"schema": {"type": "string"}}},
        }
    else:
        responses[str(route.status)] = {
            "description": route.summary,
            "content": {"application/json": {"schema": schema_of[id(route.reply)]}},
        }
    errors = set(route.errors)
    if not route.public:
        errors |= {401, 429, 503}
    if route.body is not None:
        errors |= {400, 413, 422}
    if route.query is not None:
        errors.add(422)
    if _idempotent(route):
        errors |= {409, 422}
    error_schema = {"$ref": _REF.format(name="ErrorBody")}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": error_schema}},
        }
    return responses
