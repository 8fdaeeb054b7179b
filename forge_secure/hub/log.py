"""The hub's append-only transparency log, kept in the database.

Every accepted submission, roster version, budget change, configuration and release is an
entry: a canonical JSON object whose RFC 9162 leaf hash is stored with it. Appending happens
inside the hub's one write transaction (see :mod:`.db`), so indexes are dense and unique
across processes. Checkpoints (C2SP tlog-checkpoint, signed note) and proofs are computed
from the stored leaf hashes; entries never change, so a process caches the leaf hashes it
has read and only reads the new ones.
"""

from __future__ import annotations

import base64
import json
import threading

import sqlalchemy as sa

from ..fileio import canonical_json
from . import db, merkle
from .note import Checkpoint, NoteSigner, sign_checkpoint

RECEIPT_FORMAT = "forge-hub-receipt/1"

# statements built once: each push runs them, and a prebuilt statement skips SQLAlchemy's
# construction and cache-key work (bound values are given at execution)
_SIZE = sa.select(db.log_head.c.size).where(db.log_head.c.id == 1)
_INSERT = db.log_entries.insert()
_ADVANCE = (
    db.log_head.update().where(db.log_head.c.id == 1, db.log_head.c.size == sa.bindparam("old_size")).values(size=sa.bindparam("new_size"))
)
_ENTRY = sa.select(db.log_entries.c.body).where(db.log_entries.c.idx == sa.bindparam("idx"))
_LEAVES = (
    sa.select(db.log_entries.c.idx, db.log_entries.c.leaf_hash)
    .where(db.log_entries.c.idx >= sa.bindparam("start"), db.log_entries.c.idx < sa.bindparam("stop"))
    .order_by(db.log_entries.c.idx)
)


class LeafCache:
    """The log's leaf hashes read so far (entries never change) and a :class:`~.merkle.Tree`
    over them, which remembers the roots of complete subtrees."""

    def __init__(self):
        self._leaves: list[bytes] = []
        self._lock = threading.Lock()
        self.tree = merkle.Tree(self._leaves)

    def read(self, conn: sa.Connection, size: int) -> merkle.Tree:
        """The tree, holding at least the first ``size`` leaves (read from the database when new).

        Leaves read inside a write transaction may not be committed yet (the push's own entry,
        read for its receipt): if that transaction aborts, :func:`.db.write` runs the undo
        registered here, which forgets them and every subtree root over them, so the cache
        never holds an entry the database does not."""
        with self._lock:
            had = len(self._leaves)
            if had < size:
                rows = conn.execute(_LEAVES, {"start": had, "stop": size}).all()
                for idx, h in rows:
                    if idx != len(self._leaves):
                        raise RuntimeError(f"the log has a gap at index {len(self._leaves)}")
                    self._leaves.append(bytes.fromhex(h))
                if conn.info.get("write"):
                    db.on_abort(conn, lambda: self.truncate(had))
            return self.tree

    def truncate(self, size: int) -> None:
        """Forget the leaves from ``size`` on and the subtree roots that cover any of them."""
        with self._lock:
            del self._leaves[size:]
            self.tree.forget_from(size)


def size(conn: sa.Connection) -> int:
    return int(conn.execute(_SIZE).scalar_one())


def append(conn: sa.Connection, kind: str, body: dict, now: int) -> int:
    """Append one entry (inside a write transaction); returns its index."""
    n = size(conn)
    data = canonical_json({**body, "kind": kind, "index": n})
    conn.execute(_INSERT, {"idx": n, "kind": kind, "leaf_hash": merkle.leaf_hash(data).hex(), "body": data.decode("utf-8"), "created": now})
    updated = conn.execute(_ADVANCE, {"old_size": n, "new_size": n + 1})
    if updated.rowcount != 1:  # another writer moved the head: the writer lock failed
        raise RuntimeError("the log head moved during an append")
    return n


def entry(conn: sa.Connection, index: int) -> str | None:
    return conn.execute(_ENTRY, {"idx": index}).scalar()


def entries(conn: sa.Connection, start: int = 0, limit: int = 1000, kind: str | None = None) -> list[dict]:
    q = sa.select(db.log_entries.c.body).where(db.log_entries.c.idx >= start).order_by(db.log_entries.c.idx).limit(limit)
    if kind:
        q = q.where(db.log_entries.c.kind == kind)
    return [json.loads(b) for (b,) in conn.execute(q)]


class Log:
    def __init__(self, signer: NoteSigner, origin: str):
        self.signer, self.origin, self.cache = signer, origin, LeafCache()

    def checkpoint(self, conn: sa.Connection, at: int | None = None) -> Checkpoint:
        n = size(conn) if at is None else at
        return sign_checkpoint(self.signer, self.origin, n, self.cache.read(conn, n).root(n))

    def inclusion(self, conn: sa.Connection, index: int, at: int) -> list[str]:
        return [h.hex() for h in self.cache.read(conn, at).inclusion_proof(index, at)]

    def consistency(self, conn: sa.Connection, old: int, new: int) -> list[str]:
        return [h.hex() for h in self.cache.read(conn, new).consistency_proof(old, new)] if old else []

    def receipt(self, conn: sa.Connection, index: int, at: int | None = None) -> dict:
        """A receipt for entry ``index``: the entry, a checkpoint of size ``at`` (default:
        just after the entry), its inclusion proof, all signed by the hub's log key."""
        at = index + 1 if at is None else at
        body = entry(conn, index)
        cp = self.checkpoint(conn, at)
        receipt = {
            "format": RECEIPT_FORMAT,
            "origin": self.origin,
            "hub_key": self.signer.verifier.encode(),
            "index": index,
            "entry": body,
            "checkpoint": cp.note,
            "inclusion": self.inclusion(conn, index, at),
        }
        sig = self.signer.key.sign(canonical_json(receipt))
        return {**receipt, "signature": base64.b64encode(sig).decode()}
