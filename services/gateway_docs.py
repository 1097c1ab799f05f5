"""The APIs' OpenAPI documents through the gateway, and a page a person can read.

`/api/v1/openapi/payments.json` and `/api/v1/openapi/wallets.json` are the payment and wallet
APIs' own `/openapi.json`, fetched without a credential (a document describes, it grants
nothing) and kept a few seconds, so that callers cannot turn the gateway into a fan-out onto
the services. `/api/docs` renders both as one HTML page: every operation with its method,
path, summary, parameters, request fields, answers and errors. The page is self-contained
(inline CSS, no script): nothing is fetched from elsewhere.
"""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from connectors.config import GatewayConfig
from services.http import error_response

Document = dict[str, Any]
# name in the URL -> (title on the page, the upstream that serves it)
DOCUMENTS: dict[str, tuple[str, Callable[[GatewayConfig], str]]] = {
    "payments": ("Payment API", lambda s: s.payment_upstream),
    "wallets": ("Wallet API", lambda s: s.wallet_upstream),
}
KEEP_S = 5.0
FETCH_TIMEOUT_S = 2.0
METHODS = ("get", "put", "post", "patch", "delete")
MAX_ENUM_SHOWN = 8  # the currencies are ~150 codes: a few say what is meant


class DocumentUnavailable(Exception):
    pass


@dataclass
class DocumentCache:
    """Each upstream's document as last fetched, for KEEP_S seconds."""

    settings: GatewayConfig
    session: aiohttp.ClientSession
    kept: dict[str, tuple[float, Document]] = field(default_factory=dict)

    async def get(self, name: str) -> Document:
        now = time.monotonic()
        kept = self.kept.get(name)
        if kept is not None and now - kept[0] < KEEP_S:
            return kept[1]
        url = DOCUMENTS[name][1](self.settings) + "/openapi.json"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as response:
                if response.status != 200:
                    raise DocumentUnavailable(f"{url} answered {response.status}")
                document: Document = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DocumentUnavailable(f"{url}: {exc!r}") from exc
        self.kept[name] = (now, document)
        return document


DOCS = web.AppKey("docs", DocumentCache)


def docs_context(settings: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cache and its own small client session, apart from the proxied traffic's pools."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
            app[DOCS] = DocumentCache(settings, session)
            yield

    return context


def _unavailable(exc: DocumentUnavailable) -> web.Response:
    return error_response(502, "upstream_unavailable", f"the API's document could not be fetched ({exc})")


async def serve_document(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in DOCUMENTS:
        return error_response(404, "not_found", f"no document {name!r}; there are {', '.join(DOCUMENTS)}", "name")
    try:
        return web.json_response(await request.app[DOCS].get(name))
    except DocumentUnavailable as exc:
        return _unavailable(exc)


async def serve_page(request: web.Request) -> web.Response:
    try:
        documents = [(title, await request.app[DOCS].get(name), name) for name, (title, _) in DOCUMENTS.items()]
    except DocumentUnavailable as exc:
        return _unavailable(exc)
    return web.Response(text=render_page(documents), content_type="text/html", charset="utf-8")


def docs_routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/openapi/{name}.json", serve_document), web.get("/api/docs", serve_page)]


# ------------------------------------------------------------------ the page, from the documents

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
section.op { border: 1px solid #ddd; border-radius: 6px; margin: 1em 0; padding: 0.6em 1em; }
.method { display: inline-block; min-width: 4.5em; font-weight: bold; font-family: monospace; }
.path { font-family: monospace; font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; }
caption { text-align: left; font-weight: bold; padding: 0.2em 0; }
td, th { border: 1px solid #e3e3e3; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
.error { color: #a00; } .ok { color: #070; }
"""


def render_page(documents: list[tuple[str, Document, str]]) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>API reference</title>",
        f"<style>{STYLE}</style></head><body><h1>API reference</h1>",
        "<p>Every <code>/api/</code> call needs <code>Authorization: Bearer TOKEN</code> (or an "
        "<code>X-Api-Key</code>) unless marked public. Every answer has an <code>X-Request-Id</code>; "
        'every error body is <code>{"error": {"code", "message", "field", "request_id"}}</code>.</p><ul>',
    ]
    parts += [
        f"<li><a href='/api/v1/openapi/{name}.json'>{_e(title)} (OpenAPI 3.1)</a></li>" for title, _, name in documents
    ]
    parts.append("</ul>")
    for title, document, _ in documents:
        parts.append(f"<h2>{_e(title)}</h2>")
        for path, methods in document.get("paths", {}).items():
            for method in METHODS:
                if method in methods:
                    parts.append(render_operation(method, path, methods[method]))
    parts.append("</body></html>")
    return "".join(parts)


def render_operation(method: str, path: str, op: Document) -> str:
    public = " (public)" if op.get("security") == [] else ""
    parts = [
        "<section class='op'>",
        f"<div><span class='method'>{method.upper()}</span> <span class='path'>{_e(path)}</span>{public}</div>",
        f"<p>{_e(op.get('summary', ''))}</p>",
    ]
    params = [(p["name"], p["in"], p.get("required", False), p.get("schema", {})) for p in op.get("parameters", [])]
    if params:
        parts.append(
            _table(
                "Parameters", ("name", "in", "required", "type"), [(n, w, _yes(r), _type(s)) for n, w, r, s in params]
            )
        )
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        required = set(body.get("required", []))
        rows = [(name, _yes(name in required), _type(schema)) for name, schema in body.get("properties", {}).items()]
        parts.append(_table("Request fields (JSON body)", ("field", "required", "type"), rows))
    answers = [(s, r.get("description", "")) for s, r in op.get("responses", {}).items() if int(s) < 400]
    errors = [(s, r.get("description", "")) for s, r in op.get("responses", {}).items() if int(s) >= 400]
    parts.append(_table("Answers", ("status", "meaning"), answers, "ok"))
    parts.append(_table("Errors", ("status", "when"), errors, "error"))
    parts.append("</section>")
    return "".join(parts)


def _table(caption: str, head: tuple[str, ...], rows: list[tuple[Any, ...]], css: str = "") -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{css}'>{_e(c)}</td>" if i == 0 and css else f"<td>{_e(c)}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><caption>{_e(caption)}</caption><tr>{header}</tr>{body}</table>"


def _type(schema: Document) -> str:
    kind = schema.get("type", "object")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "format" in schema:
        text += f" ({schema['format']})"
    values = [str(v) for v in schema.get("enum", []) if v is not None]
    if values:
        shown = ", ".join(values[:MAX_ENUM_SHOWN])
        text += f": {shown}" if len(values) <= MAX_ENUM_SHOWN else f": one of {len(values)}, such as {shown}"
    if "minimum" in schema or "maximum" in schema:
        text += f" [{schema.get('minimum', '')}..{schema.get('maximum', '')}]"
    if "maxLength" in schema:
        text += f", at most {schema['maxLength']} characters"
    return text


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
