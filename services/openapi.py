"""OpenAPI 3.0 documents built from the same `Field` specs the handlers validate with,
so what the document promises and what the service accepts cannot drift apart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from domain.money import CURRENCIES
from services.http import MAX_AMOUNT, Field

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    path_params: dict[str, Field] = field(default_factory=dict)
    query: dict[str, Field] = field(default_factory=dict)
    body: Mapping[str, Field] | None = None
    idempotent: bool = False  # takes an Idempotency-Key header
    public: bool = False  # no credential (webhooks carry a signature instead)
    raw_body: bool = False  # the body is checked by the handler (a signed webhook); unknown fields ignored

    def route(self) -> web.RouteDef:
        return web.route(self.method, self.path, self.handler)


def schema_of(spec: Field) -> dict[str, Any]:
    schema: dict[str, Any]
    if spec.kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    elif spec.kind == "amount":
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT}
    elif spec.kind == "currency":
        schema = {"type": "string", "enum": sorted(CURRENCIES)}
    elif spec.kind.startswith("enum:"):
        schema = {"type": "string", "enum": spec.kind[5:].split("|")}
    elif spec.kind == "object":
        schema = object_schema(spec.fields or {}, closed=False)
    elif spec.kind in ("int", "number"):
        schema = {"type": "integer" if spec.kind == "int" else "number"}
        schema.update({k: v for k, v in (("minimum", spec.minimum), ("maximum", spec.maximum)) if v is not None})
    else:
        schema = {"type": "string", "maxLength": spec.max_length}
        schema["description"] = "text: no NUL, other control characters or lone surrogates" + (
            " (tab and line breaks allowed)" if spec.multiline else ""
        )
    if not spec.required:
        schema["nullable"] = True
    return schema


def object_schema(fields: Mapping[str, Field], closed: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: schema_of(s) for n, s in fields.items()},
        "required": [n for n, s in fields.items() if s.required],
        "additionalProperties": not closed,
    }


ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "nullable": True},
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def _operation(op: Operation) -> dict[str, Any]:
    params = [{"name": n, "in": "path", "required": True, "schema": schema_of(s)} for n, s in op.path_params.items()]
    params += [
        {"name": n, "in": "query", "required": s.required, "schema": schema_of(s) | {"nullable": False}}
        for n, s in op.query.items()
    ]
    if op.idempotent:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "yours alone; the same key with another request is 409 idempotency_conflict, "
                "a retry of the same request replays its answer; expires after the configured window",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    doc: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.handler.__name__,
        "parameters": params,
        "responses": {
            "2XX": {"description": "done, or accepted and pending", "content": {"application/json": {}}},
            "default": {"description": "refused", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if op.body is not None:
        body_schema = object_schema(op.body, closed=not op.raw_body)
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if op.public:
        doc["security"] = []
    else:
        doc["responses"]["401"] = {"description": "missing or invalid credentials"}
    return doc


def document(title: str, operations: list[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }
