"""The hub's logic, independent of HTTP: accept a verified push, keep the roster, budgets,
releases and the log. :mod:`.app` wraps it in FastAPI; tests may call it directly.

The hub keeps no state outside its database and its content store (and its key directory),
so several processes may serve one deployment. A write runs in one database transaction
holding the writer lock (:func:`.db.write`): everything it decides on (replay, sequence,
ledger, nonce, versions) is read and written under that lock, and the log entry is appended
in the same transaction, so an accepted write is in the log exactly once and a refused or
interrupted one leaves nothing (a bundle file moved into the store just before a failed
commit is an unreferenced blob, reused by a retry).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from ..crypto import _time
from ..crypto.errors import BundleError, fail
from ..crypto.keys import PrivateKey
from ..crypto.received import verify_received
from ..crypto.roster import Roster, parse_roster, read_roster
from ..errors import ForgeError
from ..fileio import canonical_json, sweep_partials
from ..home import forge_home
from . import db, ledger
from . import log as logmod
from .auth import AuthError, verify_request
from .hubkeys import HubKeys, load_hub_keys
from .store import Store
from .tuf_repo import DbRepository

DEFAULT_MAX_BUNDLE = 1 << 30
_SYNC = ThreadPoolExecutor(max_workers=8, thread_name_prefix="forge-hub-fsync")  # fsyncs release the GIL

# the statements every push runs, built once (values are bound at execution): a prebuilt
# statement skips SQLAlchemy's construction and cache-key work
_ROSTER_HEAD = sa.select(db.rosters.c.version, db.rosters.c.digest).order_by(db.rosters.c.version.desc()).limit(1)
_ROSTER_DOC = sa.select(db.rosters.c.document).where(db.rosters.c.version == sa.bindparam("version"))
_SEEN = sa.select(db.submissions.c.accepted, db.submissions.c.log_index).where(db.submissions.c.submission_id == sa.bindparam("sid"))
_LAST_SEQUENCE = sa.select(sa.func.max(db.submissions.c.sequence)).where(db.submissions.c.site == sa.bindparam("site"))
_BUDGETS = sa.select(db.budgets.c.site, db.budgets.c.epsilon).where(
    sa.or_(db.budgets.c.site == sa.bindparam("site"), db.budgets.c.site == "*")
)
_BUDGETED = sa.select(db.budgets.c.site)
_INSERT_SUBMISSION = db.submissions.insert()


@dataclass
class HubConfig:
    store: Path
    db_url: str | None = None
    key_dir: Path | None = None
    origin: str | None = None
    max_bundle: int = DEFAULT_MAX_BUNDLE
    ledger_delta: float = ledger.DEFAULT_DELTA
    tuf_lifetimes: dict = field(default_factory=dict)
    clock: Callable[[], float] | None = None  # a callable returning the time (tests), default time.time
    timestamp_key: PrivateKey | None = None  # a forge signing key (PrivateKey) listed in the roster's timestamp_keys: GET /v1/timestamp
    timestamp_lifetime: int = 6 * 3600


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        roster: str | Path | Roster | None = None,
        budgets: dict[str, float] | None = None,
        default_budget: float | None = None,
    ):
        self.config = config
        self._roster_cache: Roster | None = None
        self.clock = config.clock or time.time
        self.store = Store(config.store)
        self.engine = db.make_engine(config.db_url)
        db.migrate(self.engine)
        self.state_dir = self.store.root / "roster-state"
        # start-up: remove the partial outputs a killed hub process left (never a live sibling's)
        key_dir = Path(config.key_dir) if config.key_dir is not None else forge_home() / "hub" / "keys"
        self.swept = self.store.sweep() + sweep_partials(self.state_dir) + sweep_partials(key_dir)
        with db.read(self.engine) as conn:
            origin = conn.execute(sa.select(db.hub_meta.c.value).where(db.hub_meta.c.key == "origin")).scalar()
        if origin is None:
            if roster is None:
                raise ForgeError(
                    "this hub has no roster yet", fix="start it once with --roster ROSTER.json (signed by the admins)", code="hub.no_roster"
                )
            first = roster if isinstance(roster, Roster) else read_roster(roster)
            origin = config.origin or f"forge-hub.local/{first.consortium}"
        self.origin = origin
        self.keys: HubKeys = load_hub_keys(config.key_dir, origin.replace("/", "-"))
        self.log = logmod.Log(self.keys.log, origin)
        self._initialise(roster, budgets or {}, default_budget)

    # ------------------------------------------------------------------ setup
    def now(self) -> int:
        return int(self.clock())

    def _initialise(self, roster, budgets: dict, default_budget) -> None:
        with db.write(self.engine) as conn:
            if conn.execute(sa.select(db.hub_meta.c.value).where(db.hub_meta.c.key == "origin")).scalar() is None:
                conn.execute(db.hub_meta.insert().values(key="origin", value=self.origin))
                conn.execute(db.hub_meta.insert().values(key="hub_key", value=self.keys.verifier))
                logmod.append(
                    conn,
                    "hub",
                    {"origin": self.origin, "hub_key": self.keys.verifier, "ledger_delta": repr(self.config.ledger_delta)},
                    self.now(),
                )
            DbRepository(conn, self.keys.tuf, now=self.clock(), lifetimes=self.config.tuf_lifetimes).initialise()
        if roster is not None:
            self.update_roster(roster if isinstance(roster, Roster) else read_roster(roster))
        if budgets or default_budget is not None:
            with db.write(self.engine) as conn:
                for site, eps in sorted(budgets.items()):
                    self._set_budget(conn, site, float(eps), None)
                if default_budget is not None:
                    self._set_budget(conn, "*", float(default_budget), None)

    # ------------------------------------------------------------------ roster
    def roster(self, conn: sa.Connection | None = None) -> Roster:
        if conn is None:
            with db.read(self.engine) as c:
                return self.roster(c)
        row = conn.execute(_ROSTER_HEAD).first()
        if row is None:
            raise ForgeError("this hub has no roster yet", fix="start it with --roster ROSTER.json", code="hub.no_roster")
        cached = self._roster_cache
        if cached is not None and (cached.version, cached.digest) == tuple(row):
            return cached
        doc = conn.execute(_ROSTER_DOC, {"version": row[0]}).scalar_one()
        self._roster_cache = parse_roster(json.loads(doc), "the hub's roster")
        return self._roster_cache

    def update_roster(self, new: Roster) -> dict:
        """Adopt a newer roster: trusted now (admin threshold, expiry) and, when it changes the
        admins or threshold, signed by a threshold of the current admins (TUF root rotation)."""
        from ..crypto.roster import trust

        with db.write(self.engine) as conn:
            current = None
            if conn.execute(sa.select(sa.func.count()).select_from(db.rosters)).scalar():
                current = self.roster(conn)
            if current is not None:
                if new.consortium != current.consortium:
                    raise fail(
                        "roster.wrong_consortium",
                        f"the roster is of {new.consortium}, this hub serves {current.consortium}",
                        "send the roster of this hub's consortium",
                    )
                if new.version < current.version:
                    raise fail(
                        "roster.rollback",
                        f"roster version {new.version} is older than the hub's version {current.version}",
                        "send the current roster",
                    )
                if new.version == current.version:
                    if new.digest == current.digest:
                        return {"version": new.version, "changed": False}
                    raise fail(
                        "roster.fork",
                        f"roster version {new.version} differs from the hub's roster of the same version",
                        "a roster version is never reused; make a new version",
                    )
                if (new.threshold, {a.key.key_id for a in new.admins}) != (current.threshold, {a.key.key_id for a in current.admins}):
                    if len(new.valid_signers(current.admins)) < current.threshold:
                        raise fail(
                            "roster.rotation",
                            "the new roster changes the admins but is not signed by a threshold of the current admins",
                            "have the current admins sign the new roster too",
                        )
            # the hub's root of trust is the roster its operator started it with (given out of band);
            # every later version chains to the current one, checked above and by trust()
            trust(new, now=self.now(), state_dir=self.state_dir, root=current if current is not None else new)
            doc = canonical_json(new.to_document()).decode()
            index = logmod.append(
                conn,
                "roster",
                {"consortium": new.consortium, "version": new.version, "sha256": new.digest, "document": json.loads(doc)},
                self.now(),
            )
            conn.execute(
                db.rosters.insert().values(version=new.version, consortium=new.consortium, digest=new.digest, document=doc, log_index=index)
            )
        return {"version": new.version, "changed": True, "log_index": index}

    # ------------------------------------------------------------------ push
    def accept_push(self, inc) -> dict:
        """Verify the received upload ``inc`` (a :class:`.store.Incoming`, not yet in the
        store), then move it into the store and record it in one transaction."""
        now = self.now()
        durable = _SYNC.submit(inc.sync)  # the file's fsync runs while the bundle is verified
        try:
            with db.read(self.engine) as conn:
                roster = self.roster(conn)
                budgeted = {site for (site,) in conn.execute(_BUDGETED)}
            path = inc.path
            # every check of verify(); the payload digest is the one taken as the bytes arrived; the
            # bundle's name in the log (.naming) is the verified payload digest and the envelope's sha256
            v = verify_received(path, roster, inc.arrival, now=now, state_dir=self.state_dir, root=roster)
            envelope = v.envelope_sha256
        finally:
            durable.result()  # never leave an fsync running on a file that is about to be removed
        received_sha256 = inc.sha256
        record = ledger.rederive(v.dp)
        if budgeted & {v.site, "*"}:  # a budget to enforce: the ledger figure outside the lock first (the accountant is cached)
            with db.read(self.engine) as conn:
                self._ledger_after(conn, v.site, record)
        with db.write(self.engine) as conn:
            current = self.roster(conn)
            if current.version != roster.version:
                current.check_signer(v.signer, v.site, _time.parse_time(v.created, "created"), now)
            self._check_replay(conn, v.submission_id, v.site, v.sequence)
            if record.run is not None:  # one training run, one record, budget or not
                ledger.already_counted(self._records(conn, v.site, record.run), record)
            budget, before, after, accountant = self._ledger_after(conn, v.site, record)
            ledger.check_budget(v.site, budget, before, after, accountant)
            body = {
                "site": v.site,
                "sequence": v.sequence,
                "submission_id": v.submission_id,
                "bundle_sha256": received_sha256,
                "payload_sha256": v.bundle_sha256,
                "envelope_sha256": envelope,
                "size": inc.size,
                "signer": v.signer,
                "recipient": v.recipient,
                "created": v.created,
                "accepted": _time.format_time(now),
                "roster_version": current.version,
                "base_digest": v.base_digest,
                "content": v.content,
                "dp": record.to_dict(),
                "ledger": {
                    "budget": None if budget is None else repr(budget),
                    "spent_before": None if budget is None else ledger._num(before),
                    "spent_after": None if budget is None else ledger._num(after),
                    "accountant": accountant,
                    "delta": repr(self.config.ledger_delta),
                },
            }
            index = logmod.append(conn, "submission", body, now)
            conn.execute(
                _INSERT_SUBMISSION,
                dict(
                    submission_id=v.submission_id,
                    site=v.site,
                    sequence=v.sequence,
                    bundle_sha256=received_sha256,
                    size=body["size"],
                    signer=v.signer,
                    created=v.created,
                    accepted=now,
                    log_index=index,
                    dp=json.dumps(record.to_dict()),
                    epsilon=None if not math.isfinite(after) else after,
                    dp_run=record.run,
                ),
            )
            inc.commit()  # durable in the store before the transaction commits
            receipt = self.log.receipt(conn, index)
        return receipt

    def push_file(self, path: str | Path) -> dict:
        """Push a bundle file that is already on this machine (tests, the embedded demo)."""
        with self.store.incoming() as inc, open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inc.write(block, self.config.max_bundle)
            inc.file.flush()
            return self.accept_push(inc)

    def _check_replay(self, conn, submission_id: str, site: str, sequence: int) -> None:
        seen = conn.execute(_SEEN, {"sid": submission_id}).first()
        if seen is not None:
            raise fail(
                "bundle.replay",
                f"submission {submission_id} was already accepted by the hub on {_time.format_time(seen[0])} (log entry {seen[1]})",
                "this is a replay or a duplicate; nothing was stored again ('forge hub receipt' shows the first receipt)",
            )
        last = conn.execute(_LAST_SEQUENCE, {"site": site}).scalar()
        if last is not None and sequence <= int(last):
            raise fail(
                "bundle.replay",
                f"sequence number {sequence} of {site} is not above {last}, the last one the hub accepted",
                "this is an old or replayed submission; ask the site to seal again with a higher sequence",
            )

    def budget(self, conn, site: str) -> float | None:
        rows = dict(conn.execute(_BUDGETS, {"site": site}).all())
        return rows.get(site, rows.get("*"))

    def _records(self, conn, site: str, run: str | None = None) -> list[dict]:
        """The stored DP records of ``site`` in sequence order (with ``run``: only those of that training run)."""
        q = sa.select(db.submissions.c.dp).where(db.submissions.c.site == site).order_by(db.submissions.c.sequence)
        if run is not None:
            q = q.where(db.submissions.c.dp_run == run)
        return [json.loads(d) for (d,) in conn.execute(q)]

    def _ledger_after(self, conn, site: str, record: ledger.DpRecord):
        budget = self.budget(conn, site)
        if budget is None:  # nothing to enforce: the figures are computed when the ledger is read
            return None, math.nan, math.nan, "deferred"
        stored = self._records(conn, site)
        counted = ledger.already_counted(stored, record)  # the same training run again (e.g. its CKKS contribution)
        histories = [ledger.history_of(r) for r in ledger.distinct_runs(stored)]
        before, accountant = ledger.spent(histories, self.config.ledger_delta)
        if not counted:
            after, accountant = ledger.spent(histories + [record.history if record.bounded else None], self.config.ledger_delta)
        else:
            after = before
        return budget, before, after, accountant

    # ------------------------------------------------------------------ signed writes
    def _authorise(self, conn, doc: dict, action: str, admins_only: bool = True) -> dict:
        statement = verify_request(doc, self.roster(conn), action=action, origin=self.origin, now=self.now(), admins_only=admins_only)
        if conn.execute(sa.select(db.nonces.c.nonce).where(db.nonces.c.nonce == statement["nonce"])).first() is not None:
            raise AuthError(
                "this signed request was already used", fix="send a fresh request; captured requests cannot be replayed", code="hub.replay"
            )
        conn.execute(db.nonces.delete().where(db.nonces.c.issued < self.now() - 3600))
        conn.execute(db.nonces.insert().values(nonce=statement["nonce"], key_id=statement["key_id"], issued=statement["issued"]))
        return statement

    def _set_budget(self, conn, site: str, epsilon: float, request: dict | None) -> int:
        if not (epsilon >= 0 and math.isfinite(epsilon)):
            raise ForgeError(f"budget {epsilon!r} is not a finite epsilon of at least 0", fix="give a number such as 8", code="hub.budget")
        index = logmod.append(conn, "budget", {"site": site, "epsilon": repr(epsilon), "request": request}, self.now())
        conn.execute(db.budgets.delete().where(db.budgets.c.site == site))
        conn.execute(db.budgets.insert().values(site=site, epsilon=epsilon, log_index=index))
        return index

    def set_budget(self, doc: dict) -> dict:
        with db.write(self.engine) as conn:
            st = self._authorise(conn, doc, "set-budget")
            try:
                site, eps = str(st["params"]["site"]), float(st["params"]["epsilon"])
            except (KeyError, TypeError, ValueError):
                raise AuthError("the set-budget request needs params site and epsilon", fix="use 'forge hub budget'") from None
            index = self._set_budget(conn, site, eps, doc)
            return {"site": site, "epsilon": eps, "log_index": index, "receipt": self.log.receipt(conn, index)}


__all__ = ["BundleError", "Hub", "HubConfig"]
