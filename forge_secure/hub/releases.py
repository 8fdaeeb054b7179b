"""Releases at the hub: signed blob uploads and signed publish requests, turned into TUF
targets and log entries.

A release version ``V`` is three TUF targets: ``releases/V/release.json`` (the publish request
exactly as the maintainer signed it: version, the merged plugin archive's sha256 and size,
the lineage to accepted submissions, the audit report when given), ``releases/V/plugin.tar``
and, optionally, ``releases/V/audit.<ext>``. Sites fetch them through TUF and check the
maintainer's signature against their own roster (:mod:`.client`).
"""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from ..errors import ForgeError
from ..fileio import canonical_json
from . import db
from . import log as logmod
from .auth import AuthError, parse_request
from .tuf_repo import DbRepository

AUDIT_TYPES = {"application/json": "json", "text/html": "html", "application/pdf": "pdf"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _params_error(why: str) -> ForgeError:
    return ForgeError(f"the publish request is not valid ({why})", fix="publish with 'forge hub publish'", code="hub.release")


def upload_blob(hub, doc: dict, inc) -> dict:
    """Store an upload announced by the signed request ``doc`` (action ``blob``: sha256, size)."""
    with db.write(hub.engine) as conn:
        st = hub._authorise(conn, doc, "blob")
        p = st["params"]
        if p.get("sha256") != inc.sha256 or p.get("size") != inc.size:
            raise AuthError(
                "the uploaded bytes do not match the sha256 and size the request was signed for",
                fix="upload the file the request names; it changed or was damaged in transit",
                code="hub.digest",
            )
        media = str(p.get("media_type") or "application/octet-stream")[:128]
        inc.commit()
        if conn.execute(sa.select(db.blobs.c.sha256).where(db.blobs.c.sha256 == inc.sha256)).first() is None:
            conn.execute(
                db.blobs.insert().values(sha256=inc.sha256, size=inc.size, media_type=media, key_id=st["key_id"], uploaded=hub.now())
            )
    return {"sha256": inc.sha256, "size": inc.size}


def _blob(conn, ref: object, what: str) -> dict:
    if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str) or not HEX64.match(ref["sha256"]):
        raise _params_error(f"{what} is not a {{sha256, size}} reference")
    row = conn.execute(sa.select(db.blobs.c.size, db.blobs.c.media_type).where(db.blobs.c.sha256 == ref["sha256"])).first()
    if row is None or row[0] != ref.get("size"):
        raise ForgeError(
            f"the {what} {ref['sha256'][:16]}... was not uploaded to the hub (or has another size)",
            fix="upload it first ('forge hub publish' does both)",
            code="hub.missing_blob",
        )
    return {"sha256": ref["sha256"], "size": row[0], "media_type": row[1]}


def publish(hub, doc: dict) -> dict:
    """Record release ``params.version`` (the next version), signed by a roster admin."""
    with db.write(hub.engine) as conn:
        st = hub._authorise(conn, doc, "publish")
        p = st["params"]
        version = p.get("version")
        last = conn.execute(sa.select(sa.func.max(db.releases.c.version))).scalar() or 0
        if not isinstance(version, int) or isinstance(version, bool) or version != last + 1:
            raise ForgeError(
                f"release version {version!r} is not the next version ({last + 1})",
                fix=f"publish version {last + 1}; versions are never reused or skipped",
                code="hub.version",
            )
        plugin = _blob(conn, p.get("plugin"), "plugin archive")
        audit = _blob(conn, p["audit"], "audit report") if p.get("audit") is not None else None
        lineage = p.get("lineage")
        if not isinstance(lineage, list) or not all(isinstance(x, dict) for x in lineage):
            raise _params_error("lineage is not a list of submissions")
        for item in lineage:
            row = conn.execute(
                sa.select(db.submissions.c.bundle_sha256, db.submissions.c.log_index, db.submissions.c.site).where(
                    db.submissions.c.submission_id == str(item.get("submission_id"))
                )
            ).first()
            if row is None or (row[0], row[1], row[2]) != (item.get("bundle_sha256"), item.get("log_index"), item.get("site")):
                raise ForgeError(
                    f"lineage entry {str(item.get('submission_id'))[:40]!r} is not a submission the hub accepted",
                    fix="list only submissions pulled with 'forge hub pull'",
                    code="hub.lineage",
                )
        statement_bytes = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
        statement_sha = hub.store.put_bytes(statement_bytes)
        files = {
            f"releases/{version}/release.json": (len(statement_bytes), statement_sha),
            f"releases/{version}/plugin.tar": (plugin["size"], plugin["sha256"]),
        }
        if audit is not None:
            files[f"releases/{version}/audit.{AUDIT_TYPES.get(audit['media_type'], 'bin')}"] = (audit["size"], audit["sha256"])
        body = {
            "version": version,
            "publisher": st["key_id"],
            "statement_sha256": statement_sha,
            "plugin": plugin,
            "audit": audit,
            "lineage": lineage,
            "targets": {k: v[1] for k, v in files.items()},
            "notes": str(p.get("notes", ""))[:2000],
        }
        index = logmod.append(conn, "release", body, hub.now())
        conn.execute(
            db.releases.insert().values(version=version, statement=canonical_json(body).decode(), log_index=index, created=hub.now())
        )
        DbRepository(conn, hub.keys.tuf, now=hub.clock(), lifetimes=hub.config.tuf_lifetimes).add_targets(files)
        return {"version": version, "log_index": index, "targets": sorted(files), "receipt": hub.log.receipt(conn, index)}


def tuf_metadata(hub, name: str) -> bytes | None:
    """A metadata file for the TUF client (the timestamp re-signed when it is getting old)."""
    if name == "timestamp.json":
        with db.read(hub.engine) as conn:
            repo = DbRepository(conn, hub.keys.tuf, now=hub.clock(), lifetimes=hub.config.tuf_lifetimes)
            stale = _timestamp_stale(repo)
        if stale:
            with db.write(hub.engine) as conn:
                DbRepository(conn, hub.keys.tuf, now=hub.clock(), lifetimes=hub.config.tuf_lifetimes).refresh_timestamp()
    elif not re.match(r"^[0-9]+\.(root|snapshot|targets)\.json$", name):
        return None
    with db.read(hub.engine) as conn:
        return conn.execute(sa.select(db.tuf_files.c.body).where(db.tuf_files.c.name == name)).scalar()


def _timestamp_stale(repo: DbRepository) -> bool:
    from datetime import datetime, timedelta, timezone

    left = (repo.timestamp().expires - datetime.fromtimestamp(repo.now, timezone.utc)) / timedelta(seconds=1)
    return left <= repo.lifetimes["timestamp"] / 2


__all__ = ["parse_request", "publish", "tuf_metadata", "upload_blob"]
