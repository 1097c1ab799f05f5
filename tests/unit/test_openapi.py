"""Both APIs' OpenAPI documents are valid OpenAPI 3.1, describe their answers' bodies, and list
every refusal status their handlers can raise, with the error body every refusal has."""

from __future__ import annotations

import ast
import inspect
import sys
from types import ModuleType
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from services import payment_api, payment_search, wallet_api
from services.openapi import ERROR, Operation, document

APIS = {"Payment API": payment_api, "Wallet API": wallet_api}


def spec(title: str) -> dict[str, Any]:
    return document(title, APIS[title].OPERATIONS)


@pytest.mark.parametrize("title", APIS)
def test_the_document_is_valid_openapi_3_1(title: str) -> None:
    doc = spec(title)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_the_validator_refuses_what_the_old_document_had() -> None:
    """OpenAPI 3.0 wanted at least one name in `required`; the refund body, all optional, had none."""
    doc = spec("Payment API") | {"openapi": "3.0.3"}
    refund = doc["paths"]["/api/v1/payments/{payment_id}/refund"]["post"]
    refund["requestBody"]["content"]["application/json"]["schema"]["required"] = []
    with pytest.raises(OpenAPIValidationError):
        validate(doc)


@pytest.mark.parametrize("title", APIS)
def test_every_answer_has_a_body_schema_and_every_refusal_the_error_body(title: str) -> None:
    for path, methods in spec(title)["paths"].items():
        for method, op in methods.items():
            statuses = {int(s) for s in op["responses"]}
            assert any(s < 300 for s in statuses), (method, path)
            assert 500 in statuses, (method, path)
            for status, response in op["responses"].items():
                schema = response["content"]["application/json"]["schema"]
                assert schema["type"] == "object", (method, path, status)
                assert (schema is ERROR) == (int(status) >= 400), (method, path, status)


def operations() -> list[Any]:
    return [pytest.param(m, op, id=f"{op.method} {op.path}") for m in APIS.values() for op in m.OPERATIONS]


@pytest.mark.parametrize(("module", "op"), operations())
def test_the_shape_of_an_operation_brings_its_refusals(module: ModuleType, op: Operation) -> None:
    statuses = {int(s) for s in document("t", [op])["paths"][op.path][op.method.lower()]["responses"]}
    if not op.public:
        assert {401, 403} <= statuses
    if op.body is not None:
        assert {400, 413, 415, 422} <= statuses
    if op.idempotent:
        assert 409 in statuses
    if op.admitted:
        assert 503 in statuses


def raised_statuses(module: ModuleType, function_name: str) -> set[int]:
    """The statuses of every `ApiError(status, ...)` in the function and in the functions of its own
    module it calls, transitively; a wallet rejection's status comes from REJECTION_STATUS."""
    tree = ast.parse(inspect.getsource(module))
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    found: set[int] = set()
    seen: set[str] = set()
    todo = [function_name]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "ApiError" and isinstance(node.args[0], ast.Constant):
                    found.add(node.args[0].value)
                if node.func.id == "rejected":
                    found |= set(module.REJECTION_STATUS.values()) | {422}
                todo.append(node.func.id)
    return found


@pytest.mark.parametrize(("module", "op"), operations())
def test_every_status_a_handler_raises_is_documented(module: ModuleType, op: Operation) -> None:
    home = sys.modules[op.handler.__module__]  # the handler's own module: payment_search, provider_webhooks...
    raised = raised_statuses(home, op.handler.__name__)
    documented = {int(s) for s in document("t", [op])["paths"][op.path][op.method.lower()]["responses"]}
    assert raised <= documented, f"{op.method} {op.path} raises {sorted(raised - documented)} undocumented"


def test_the_scan_finds_what_a_handler_raises() -> None:
    assert {400, 404, 422} <= raised_statuses(payment_api, "create_payment")
    assert {404, 409} <= raised_statuses(wallet_api, "create_movement")
    assert 422 in raised_statuses(payment_search, "search_payments")


def test_the_search_is_documented_beside_the_create() -> None:
    methods = spec("Payment API")["paths"]["/api/v1/payments"]
    assert set(methods) == {"get", "post"}
    params = {p["name"]: p["schema"] for p in methods["get"]["parameters"]}
    assert params["created_from"] == {"type": "string", "format": "date-time"}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 100}
