"""The hub's TUF repository (python-tuf's ``tuf.repository.Repository``), kept in the
database so every hub process serves the same metadata.

Roles: root (trust anchor, pinned by sites as ``1.root.json``), targets (the releases: a
release's signed statement, plugin archive and audit report), snapshot and timestamp, each
with its own Ed25519 key of the hub (threshold 1) and consistent snapshots (versioned
metadata names, targets served by their sha256 from the content store). The client is
``tuf.ngclient.Updater``, which refuses rolled-back versions, expired (frozen) metadata and
metadata that does not match the snapshot or timestamp it was listed in (mix-and-match).
The timestamp is re-signed by whichever hub process serves it once half its lifetime has
passed, so a live hub never looks frozen.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from . import db

LIFETIMES = {"root": 365 * 86400, "targets": 365 * 86400, "snapshot": 30 * 86400, "timestamp": 86400}


class DbRepository(Repository):
    """The repository on one open write connection; ``signers`` maps role -> CryptoSigner."""

    def __init__(self, conn: sa.Connection, signers: dict, *, now: float, lifetimes: dict | None = None):
        self.conn, self.signers, self.now = conn, signers, now
        self.lifetimes = {**LIFETIMES, **(lifetimes or {})}

    def _get(self, name: str) -> bytes | None:
        return self.conn.execute(sa.select(db.tuf_files.c.body).where(db.tuf_files.c.name == name)).scalar()

    def _put(self, name: str, body: bytes) -> None:
        if self._get(name) is None:
            self.conn.execute(db.tuf_files.insert().values(name=name, body=body))
        else:
            self.conn.execute(db.tuf_files.update().where(db.tuf_files.c.name == name).values(body=body))

    def _expiry(self, role: str) -> datetime:
        return datetime.fromtimestamp(int(self.now) + self.lifetimes[role], timezone.utc)

    def open(self, role: str) -> Metadata:
        body = self._get(f"{role}.json")
        if body is not None:
            return Metadata.from_bytes(body)
        if role == Root.type:
            root = Root(expires=self._expiry(role), consistent_snapshot=True)
            for r, signer in self.signers.items():
                root.add_key(signer.public_key, r)
            return Metadata(root)
        signed = {"targets": Targets, "snapshot": Snapshot, "timestamp": Timestamp}[role]()
        signed.version = 0  # close() makes it version 1
        return Metadata(signed)

    def close(self, role: str, md: Metadata) -> None:
        if role != Root.type or self._get("root.json") is not None:
            md.signed.version += 1
        md.signed.expires = self._expiry(role)
        md.signatures.clear()
        md.sign(self.signers[role], append=True)
        body = md.to_bytes(JSONSerializer(compact=False))
        self._put(f"{role}.json", body)
        if role != Timestamp.type:
            self._put(f"{md.signed.version}.{role}.json", body)

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {"targets.json": MetaFile(self.targets().version)}

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self.snapshot().version)

    # ------------------------------------------------------------------ hub operations
    def initialise(self) -> bool:
        """Make version 1 of every role (once); True when it did."""
        if self._get("root.json") is not None:
            return False
        with self.edit_root():
            pass
        with self.edit_targets():
            pass
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)
        return True

    def add_targets(self, files: dict[str, tuple[int, str]]) -> None:
        """Add targets ``{path: (length, sha256)}`` and publish a new snapshot and timestamp."""
        with self.edit_targets() as targets:
            for path, (length, sha) in files.items():
                targets.targets[path] = TargetFile(length, {"sha256": sha}, path)
        self.do_snapshot()
        self.do_timestamp()

    def refresh_timestamp(self) -> bool:
        """Re-sign the timestamp once half its lifetime has passed; True when it did."""
        ts = self.timestamp()
        left = (ts.expires - datetime.fromtimestamp(self.now, timezone.utc)) / timedelta(seconds=1)
        if left > self.lifetimes["timestamp"] / 2:
            return False
        self.do_timestamp(force=True)
        return True


def read_file(conn: sa.Connection, name: str) -> bytes | None:
    return conn.execute(sa.select(db.tuf_files.c.body).where(db.tuf_files.c.name == name)).scalar()
