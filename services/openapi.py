"""OpenAPI 3.1 documents built from the same `Field` specs the handlers validate with,
so what the document promises and what the service accepts cannot drift apart.

Each operation lists its answers (status and body schema) and the refusals only it makes;
the refusals every operation of its shape makes (credentials, bodies, path ids, query
parameters, Idempotency-Key) are added from that shape, with the error body every refusal
has (`services.http.error_response`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from domain.money import CURRENCIES
from services.http import MAX_AMOUNT, Field

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]


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
    admitted: bool = False  # under admission control (services/admission.py): 503 at capacity
    answers: Mapping[int, tuple[str, Schema]] = field(default_factory=dict)  # status: (description, body)
    refusals: Mapping[int, str] = field(default_factory=dict)  # status: why, beyond what its shape implies

    def route(self) -> web.RouteDef:
        return web.route(self.method, self.path, self.handler)


def schema_of(spec: Field) -> Schema:
    schema: Schema
    if spec.kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    elif spec.kind == "amount":
        schema = {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT}
    elif spec.kind == "currency":
        schema = {"type": "string", "enum": sorted(CURRENCIES)}
    elif spec.kind.startswith("enum:"):
        schema = {"type": "string", "enum": spec.kind[5:].split("|")}
    elif spec.kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
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
    return schema if spec.required else or_null(schema)


def or_null(schema: Schema) -> Schema:
    """JSON Schema 2020-12's nullable: null is one more type (and one more enum value)."""
    widened = {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        widened["enum"] = [*schema["enum"], None]
    return widened


def object_schema(fields: Mapping[str, Field], closed: bool) -> Schema:
    schema: Schema = {"type": "object", "properties": {n: schema_of(s) for n, s in fields.items()}}
    required = [n for n, s in fields.items() if s.required]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = not closed
    return schema


def answer_schema(required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None) -> Schema:
    """A response body: these properties always present, `optional` ones sometimes."""
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }


ERROR = answer_schema(
    {
        "error": answer_schema(
            {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": ["string", "null"]}}
        )
    }
)
# A command accepted whose outcome was not known in time: poll status_url.
PENDING = answer_schema(
    {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "const": "pending"},
        "status_url": {"type": "string"},
    }
)

UNAUTHENTICATED = "missing or invalid credentials (unauthenticated)"
FORBIDDEN = "the caller may not do this: not with these roles, or not for another user (forbidden)"
BAD_BODY = (
    "the body is not a JSON object in UTF-8 (malformed_json, invalid_encoding, duplicate_key, too_deep),"
    " or a field is unknown or missing (unknown_field, missing_field)"
)
BAD_VALUE = "a value is refused; `field` names it"
BAD_QUERY = "a query parameter is unknown or given twice"
BAD_KEY = "the Idempotency-Key is not 1 to 255 printable ASCII characters (invalid_header)"
KEY_TAKEN = (
    "the Idempotency-Key was used with another request (idempotency_conflict), or its request still runs"
    " (request_in_progress)"
)
TOO_LARGE = "the body is larger than 64 KiB (request_entity_too_large)"
NOT_JSON = "the body is not application/json in UTF-8 (unsupported_media_type), or it is compressed"
OVERLOADED = "at capacity: nothing was done; retry after Retry-After seconds (overloaded)"
INTERNAL = "unexpected error; see the service log (internal_error)"


def refusals_of(op: Operation) -> dict[int, list[str]]:
    """Every refusal the operation can answer, by status: its shape's, then its own."""
    found: dict[int, list[str]] = {}

    def add(status: int, why: str) -> None:
        found.setdefault(status, []).append(why)

    if not op.public:
        add(401, UNAUTHENTICATED)
        add(403, FORBIDDEN)
    if op.body is not None:
        add(400, BAD_BODY)
        add(413, TOO_LARGE)
        add(415, NOT_JSON)
        add(422, BAD_VALUE)
    if any(spec.kind == "uuid" for spec in op.path_params.values()):
        add(422, "a path id is not a UUID (invalid_id)")
    if op.query:
        add(400, BAD_QUERY)
        add(422, BAD_VALUE)
    if op.idempotent:
        add(400, BAD_KEY)
        add(409, KEY_TAKEN)
    if op.admitted:
        add(503, OVERLOADED)
    for status, why in op.refusals.items():
        add(status, why)
    add(500, INTERNAL)
    return found


def refusal(whys: list[str], status: int) -> Schema:
    response: Schema = {
        "description": "; ".join(dict.fromkeys(whys)),
        "content": {"application/json": {"schema": ERROR}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
    return response


def _operation(op: Operation) -> Schema:
    params = [{"name": n, "in": "path", "required": True, "schema": schema_of(s)} for n, s in op.path_params.items()]
    params += [
        {"name": n, "in": "query", "required": s.required, "schema": schema_of(replace(s, required=True))}
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
    responses: Schema = {
        str(status): {"description": description, "content": {"application/json": {"schema": schema}}}
        for status, (description, schema) in sorted(op.answers.items())
    }
    responses.update({str(status): refusal(whys, status) for status, whys in sorted(refusals_of(op).items())})
    doc: Schema = {
        "summary": op.summary,
        "operationId": op.handler.__name__,
        "parameters": params,
        "responses": responses,
    }
    if op.body is not None:
        body_schema = object_schema(op.body, closed=not op.raw_body)
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if op.public:
        doc["security"] = []
    return doc


def document(title: str, operations: list[Operation]) -> Schema:
    paths: dict[str, Schema] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
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
