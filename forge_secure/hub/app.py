"""The hub's HTTP API (FastAPI). Every refusal is a 4xx whose JSON body is
``{"error": {"code", "message", "fix"}}`` -- the same code and fix the CLI prints.

Writes: ``POST /v1/push`` (a raw bundle, verified before it is stored), ``POST /v1/roster``
(a roster document signed by its admins), ``POST /v1/budgets`` and ``POST /v1/releases``
(signed requests, :mod:`.auth`), ``POST /v1/blobs`` (raw bytes announced by a signed request
in the ``Forge-Request`` header). Reads: ``/v1/info``, ``/v1/timestamp`` (:mod:`.freshness`), ``/v1/submissions``, ``/v1/bundles/SHA``,
``/v1/ledger``, ``/v1/releases``, ``/v1/log/...`` (checkpoint, entries, proofs), the TUF
repository under ``/tuf/`` and the read-only web page at ``/``.
"""

from __future__ import annotations

import base64
import binascii
import json

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..crypto.roster import parse_roster
from ..errors import ForgeError
from . import db, freshness, merkle, releases, web
from . import log as logmod
from .auth import MAX_REQUEST, verify_request
from .service import Hub
from .store import TooLarge, UploadError

STATUS = {
    "bundle.replay": 409,
    "budget.exceeded": 409,
    "hub.version": 409,
    "roster.rollback": 409,
    "roster.fork": 409,
    "hub.too_large": 413,
    "hub.length": 411,
    "hub.not_found": 404,
    "hub.forbidden": 403,
    "hub.signature": 401,
    "hub.auth": 401,
    "hub.stale": 401,
    "hub.replay": 409,
    "hub.no_timestamp": 404,
    "hub.timestamp_unlisted": 404,
    "hub.dp_conflict": 409,
    "bundle.untrusted_signer": 403,
    "bundle.revoked": 403,
    "bundle.expired_key": 403,
    "roster.rotation": 403,
    "roster.signature": 403,
    "hub.unsupported": 415,
}


def error_response(e: ForgeError) -> JSONResponse:
    status = STATUS.get(e.code, 400)
    return JSONResponse({"error": e.to_dict()}, status_code=status)


def _err(code: str, message: str, fix: str) -> JSONResponse:
    return error_response(ForgeError(message, fix=fix, code=code))


async def _json_body(request: Request, limit: int = MAX_REQUEST):
    body = b""
    async for block in request.stream():
        body += block
        if len(body) > limit:
            raise TooLarge(f"the request body is larger than {limit} bytes", fix="send a signed request made by 'forge hub'")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ForgeError("the request body is not JSON", fix="send the JSON document made by 'forge hub'", code="hub.bad_request") from None


def _int(value: str | None, name: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ForgeError(
            f"query parameter {name}={str(value)[:40]!r} is not an integer", fix=f"give {name} as a whole number", code="hub.bad_request"
        ) from None
    if n < 0:
        raise ForgeError(f"query parameter {name} is negative", fix=f"give {name} of at least 0", code="hub.bad_request")
    return n


def _content_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return  # chunked: the limit is enforced while streaming
    if not raw.isdigit():
        raise ForgeError("the Content-Length header is not a number", fix="send a well-formed HTTP request", code="hub.bad_request")
    if int(raw) > limit:
        raise TooLarge(
            f"the upload of {int(raw)} bytes is larger than the hub's limit of {limit} bytes",
            fix="the hub refuses bundles above --max-bundle; ask its operator, or send a smaller bundle",
        )


def create_app(hub: Hub) -> FastAPI:
    app = FastAPI(title="forge-secure hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub

    @app.exception_handler(ForgeError)
    async def _forge_error(_request: Request, e: ForgeError):
        return error_response(e)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _e: ClientDisconnect):
        return Response(status_code=400)

    async def _receive(request: Request, limit: int, work):
        _content_length(request, limit)
        with hub.store.incoming() as inc:
            await inc.receive(request.stream(), limit)
            if inc.size == 0:
                raise UploadError("the upload is empty", fix="send the .forge bundle file", code="bundle.truncated")
            return await run_in_threadpool(work, inc)

    @app.post("/v1/push")
    async def push(request: Request):
        return await _receive(request, hub.config.max_bundle, hub.accept_push)

    @app.post("/v1/blobs")
    async def blob(request: Request):
        raw = request.headers.get("forge-request", "")
        try:
            doc = json.loads(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            raise ForgeError(
                "the Forge-Request header is missing or not base64 JSON", fix="upload with 'forge hub publish'", code="hub.auth"
            ) from None
        # the signature, signer and freshness are checked before a byte of the body is stored
        verify_request(doc, hub.roster(), action="blob", origin=hub.origin, now=hub.now())
        return await _receive(request, hub.config.max_bundle, lambda inc: releases.upload_blob(hub, doc, inc))

    @app.post("/v1/releases")
    async def publish(request: Request):
        doc = await _json_body(request)
        return await run_in_threadpool(releases.publish, hub, doc)

    @app.post("/v1/budgets")
    async def budgets(request: Request):
        doc = await _json_body(request)
        return await run_in_threadpool(hub.set_budget, doc)

    @app.post("/v1/roster")
    async def roster_update(request: Request):
        doc = await _json_body(request, 16 << 20)
        return await run_in_threadpool(hub.update_roster, parse_roster(doc, "the posted roster"))

    @app.get("/v1/roster")
    def roster_get():
        return hub.roster().to_document()

    @app.get("/v1/timestamp")
    def timestamp():
        return freshness.current(hub)

    @app.get("/v1/info")
    def info():
        with db.read(hub.engine) as conn:
            size = logmod.size(conn)
            root1 = conn.execute(sa.select(db.tuf_files.c.body).where(db.tuf_files.c.name == "1.root.json")).scalar()
        r = hub.roster()
        return {
            "origin": hub.origin,
            "hub_key": hub.keys.verifier,
            "consortium": r.consortium,
            "roster_version": r.version,
            "max_bundle": hub.config.max_bundle,
            "log_size": size,
            "tuf_root_sha256": merkle.hashlib.sha256(root1).hexdigest() if root1 else None,
        }

    @app.get("/v1/submissions")
    def submissions(site: str | None = None):
        return {"submissions": web.submissions(hub, site)}

    @app.get("/v1/submissions/{submission_id}/receipt")
    def receipt(submission_id: str, size: str | None = None):
        with db.read(hub.engine) as conn:
            index = conn.execute(sa.select(db.submissions.c.log_index).where(db.submissions.c.submission_id == submission_id)).scalar()
            if index is None:
                raise ForgeError(f"no accepted submission {submission_id[:40]!r}", fix="check the id", code="hub.not_found")
            at = _int(size, "size", logmod.size(conn))
            if not index < at <= logmod.size(conn):
                raise ForgeError(f"size {at} does not contain entry {index}", fix="give a larger size", code="hub.bad_request")
            return hub.log.receipt(conn, index, at)

    @app.get("/v1/receipt")
    def receipt_by_bundle(bundle: str = ""):
        with db.read(hub.engine) as conn:
            index = conn.execute(sa.select(db.submissions.c.log_index).where(db.submissions.c.bundle_sha256 == bundle)).scalar()
            if index is None:
                raise ForgeError(f"no accepted bundle with sha256 {bundle[:64]!r}", fix="push it", code="hub.not_found")
            return hub.log.receipt(conn, index)

    @app.get("/v1/bundles/{sha256}")
    def bundle(sha256: str):
        with db.read(hub.engine) as conn:
            known = conn.execute(sa.select(db.submissions.c.submission_id).where(db.submissions.c.bundle_sha256 == sha256)).first()
        if known is None:
            raise ForgeError(f"no accepted bundle {sha256[:64]!r}", fix="list them with 'forge hub pull'", code="hub.not_found")
        return FileResponse(hub.store.path(sha256), media_type="application/octet-stream")

    @app.get("/v1/ledger")
    def ledger_get():
        return {"sites": web.ledgers(hub)}

    @app.get("/v1/releases")
    def releases_get():
        return {"releases": web.releases(hub)}

    @app.get("/v1/log/checkpoint", response_class=PlainTextResponse)
    def checkpoint():
        with db.read(hub.engine) as conn:
            return hub.log.checkpoint(conn).note

    @app.get("/v1/log/entries")
    def entries(start: str | None = None, limit: str | None = None):
        with db.read(hub.engine) as conn:
            return {"entries": logmod.entries(conn, _int(start, "start", 0), min(_int(limit, "limit", 100), 1000))}

    @app.get("/v1/log/consistency")
    def consistency(old: str | None = None, new: str | None = None):
        with db.read(hub.engine) as conn:
            n = logmod.size(conn)
            o, m = _int(old, "old"), _int(new, "new", n)
            if not o <= m <= n:
                raise ForgeError(
                    f"no consistency proof from {o} to {m} (log size {n})", fix="give old <= new <= the log size", code="hub.bad_request"
                )
            return {"old": o, "new": m, "proof": hub.log.consistency(conn, o, m)}

    @app.get("/tuf/metadata/{name}")
    def tuf_metadata(name: str):
        body = releases.tuf_metadata(hub, name)
        if body is None:
            return Response(status_code=404)
        return Response(body, media_type="application/json")

    @app.get("/tuf/targets/{path:path}")
    def tuf_target(path: str):
        base = path.rsplit("/", 1)[-1]
        digest = base.split(".", 1)[0]
        if not releases.HEX64.match(digest) or not hub.store.has(digest):
            return Response(status_code=404)
        return FileResponse(hub.store.path(digest), media_type="application/octet-stream")

    @app.get("/audit/{version}")
    def audit(version: str):
        blob = web.audit_blob(hub, _int(version, "version"))
        if blob is None:
            raise ForgeError(f"release {version} has no audit report", fix="see the releases on the hub's page", code="hub.not_found")
        return FileResponse(hub.store.path(blob["sha256"]), media_type=blob["media_type"])

    @app.get("/", response_class=HTMLResponse)
    def page():
        return web.render_page(hub)

    return app
