"""The sites' and maintainer's side of the hub: push, receipts, log verification, pull.

Trust: the hub's log key (a signed-note verifier key) is pinned per hub in
``$FORGE_HOME/hub/trust/<host>.json`` -- given with ``--hub-key`` or taken on first use from
``/v1/info`` -- together with the newest checkpoint this client has verified. Every later
checkpoint must be signed by the pinned key and be consistent with the saved one (RFC 9162
consistency proof), so a hub that rewrites or forks its history is detected.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..crypto.received import ArrivalDigest
from ..errors import ForgeError, ForgeFileError, ForgeIntegrityError
from ..fileio import atomic_output, atomic_write_json, canonical_json, sha256_file
from ..home import forge_home
from . import merkle
from .log import RECEIPT_FORMAT
from .naming import SentEnds, check_entry
from .note import Checkpoint, NoteVerifier, verify_checkpoint

TIMEOUT = httpx.Timeout(60.0, connect=10.0)
BLOCK = 1 << 20


class HubError(ForgeError):
    """A refusal from the hub: carries the hub's own code, message and fix."""

    default_code = "hub.error"


def _check_url(url: str) -> str:
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        raise ForgeError(f"--hub {url!r} is not an http(s) URL", fix="give the hub's URL, e.g. https://hub.example.org", code="hub.url")
    return url.rstrip("/")


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        raise HubError(str(err["message"]), fix=err.get("fix"), code=str(err["code"]))
    except (ValueError, KeyError, TypeError):
        raise HubError(f"the hub answered HTTP {resp.status_code}", fix="check the hub URL and the hub's log", code="hub.http") from None


_HTTP: httpx.Client | None = None
_HTTP_LOCK = threading.Lock()


def http() -> httpx.Client:
    """One shared connection pool per process (thread-safe, keep-alive): a new client per call
    would build a TLS context and a connection each time."""
    global _HTTP
    with _HTTP_LOCK:
        if _HTTP is None:
            _HTTP = httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
        return _HTTP


def _request(method: str, url: str, **kw) -> httpx.Response:
    try:
        resp = http().request(method, url, **kw)
    except httpx.HTTPError as e:
        raise HubError(
            f"cannot reach the hub at {url} ({e.__class__.__name__}: {e})",
            fix="check the URL, that the hub runs, and the network",
            code="hub.unreachable",
        ) from None
    raise_for(resp)
    return resp


def _file_chunks(path: Path, sent: SentEnds | None = None):
    """The file's bytes in blocks of ``BLOCK``; ``sent`` keeps the header and envelope of what was read."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            if sent is not None:
                sent.add(block)
            yield block


# --------------------------------------------------------------------------- trust store


def _trust_path(url: str) -> Path:
    host = urlparse(url).netloc.replace(":", "_")
    d = forge_home() / "hub" / "trust"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{host}.json"


def pinned(url: str, hub_key: str | None = None) -> dict:
    """The trust record of the hub at ``url`` (pinning its key on first use)."""
    path = _trust_path(url)
    state = json.loads(path.read_text()) if path.exists() else None
    if state is not None and hub_key is not None and state["hub_key"] != hub_key:
        raise ForgeIntegrityError(
            f"the hub key given ({hub_key[:40]}...) is not the one pinned for {url}",
            fix=f"check with the consortium which key is right; the pinned one is in {path}",
            code="log.key_mismatch",
        )
    if state is None:
        info = _request("GET", f"{url}/v1/info").json()
        if hub_key is not None and info["hub_key"] != hub_key:
            raise ForgeIntegrityError(
                "the hub presents another log key than the one given", fix="check the --hub-key and the URL", code="log.key_mismatch"
            )
        NoteVerifier.decode(info["hub_key"])
        state = {"url": url, "origin": info["origin"], "hub_key": info["hub_key"], "checkpoint": None}
        atomic_write_json(path, state)
    return state


# --------------------------------------------------------------------------- receipts


def verify_receipt(receipt: object, hub_key: str) -> dict:
    """Check a receipt: its signature, its checkpoint's signature and the entry's inclusion
    proof. Returns ``{"entry", "checkpoint", "index"}``; raises ``log.*`` errors."""
    bad = ForgeIntegrityError("the receipt is malformed", fix="use the receipt file written by 'forge push'", code="log.receipt")
    if not isinstance(receipt, dict) or receipt.get("format") != RECEIPT_FORMAT:
        raise bad
    verifier = NoteVerifier.decode(hub_key)
    if receipt.get("hub_key") != hub_key:
        raise ForgeIntegrityError(
            "the receipt is signed by another hub key than the pinned one",
            fix="it comes from another hub, or the hub changed its key: ask the consortium",
            code="log.key_mismatch",
        )
    body = {k: v for k, v in receipt.items() if k != "signature"}
    try:
        Ed25519PublicKey.from_public_bytes(verifier.public_raw).verify(
            base64.b64decode(receipt["signature"], validate=True), canonical_json(body)
        )
        index, entry, proof = int(receipt["index"]), str(receipt["entry"]), [bytes.fromhex(h) for h in receipt["inclusion"]]
    except InvalidSignature:
        raise ForgeIntegrityError(
            "the receipt's signature does not verify", fix="the receipt was changed; do not trust it", code="log.receipt"
        ) from None
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise bad from None
    cp = verify_checkpoint(receipt["checkpoint"], verifier, receipt.get("origin"))
    merkle.verify_inclusion(merkle.leaf_hash(entry.encode("utf-8")), index, cp.size, proof, cp.root)
    parsed = json.loads(entry)
    if parsed.get("index") != index:
        raise bad
    return {"entry": parsed, "checkpoint": cp, "index": index}


def _save_receipt(receipt: dict, out: Path | None) -> None:
    if out is not None:
        with atomic_output(out) as f:
            f.write((json.dumps(receipt, indent=2, sort_keys=True) + "\n").encode())


def _check_names_sent(entry: dict, sent: SentEnds, bundle: Path) -> None:
    """The receipt's entry must name the bundle sent (:func:`.naming.check_entry`). An entry
    of a hub from before entries named the payload and envelope digests has only the sha256
    of the whole file: then the file is hashed and compared, as such hubs' clients did."""
    if "payload_sha256" in entry or "envelope_sha256" in entry:
        check_entry(entry, sent.name())
    elif entry.get("bundle_sha256") != sha256_file(bundle) or entry.get("size") != sent.size:
        raise ForgeIntegrityError(
            "the hub's receipt is for other bytes than the bundle sent (its bundle_sha256 differs)",
            fix="do not rely on this hub; report it to the consortium",
            code="log.receipt",
        )


def push(bundle: str | Path, url: str, *, receipt_out: str | Path | None = None, retries: int = 3, hub_key: str | None = None) -> dict:
    """Upload ``bundle`` (streamed); returns the checked receipt. A retry after a lost
    answer finds the first acceptance by the bundle's submission id instead of failing.

    The receipt is checked (:func:`verify_receipt`) and its entry must name the bundle sent:
    its submission id, size, signed payload digest and envelope digest, read from the header
    and envelope of the bytes sent (:mod:`.naming`), so the bundle is read once and not hashed here."""
    url, bundle = _check_url(url), Path(bundle)
    if not bundle.is_file():
        raise ForgeFileError(f"bundle {bundle} does not exist or is not a file", fix="give the .forge file", code="file.missing")
    trust = pinned(url, hub_key)
    size = bundle.stat().st_size
    last: Exception | None = None
    for attempt in range(retries + 1):
        sent = SentEnds()
        try:
            resp = http().post(
                f"{url}/v1/push",
                content=_file_chunks(bundle, sent),
                headers={"content-type": "application/octet-stream", "content-length": str(size)},
            )
        except httpx.HTTPError as e:
            last = e
            time.sleep(min(0.5 * 2**attempt, 5))
            continue
        if resp.status_code == 409 and attempt > 0:
            found = http().get(f"{url}/v1/submissions/{quote(sent.name().submission_id, safe='')}/receipt")
            if found.status_code == 200:  # our earlier attempt was accepted: its answer was lost
                resp = found
        raise_for(resp)
        receipt = resp.json()
        checked = verify_receipt(receipt, trust["hub_key"])
        _check_names_sent(checked["entry"], sent, bundle)
        _save_receipt(receipt, Path(receipt_out) if receipt_out else None)
        return {"receipt": receipt, "entry": checked["entry"], "index": checked["index"], "log_size": checked["checkpoint"].size}
    raise HubError(
        f"cannot reach the hub at {url} after {retries + 1} attempts ({last.__class__.__name__}: {last})",
        fix="check the URL and that the hub runs; pushing again is safe",
        code="hub.unreachable",
    )


# --------------------------------------------------------------------------- the log


def fetch_checkpoint(url: str, trust: dict) -> Checkpoint:
    note = _request("GET", f"{url}/v1/log/checkpoint").text
    return verify_checkpoint(note, NoteVerifier.decode(trust["hub_key"]), trust["origin"])


def check_consistency(url: str, old: Checkpoint, new: Checkpoint) -> None:
    if old.size > new.size:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, [])  # raises log.rollback
    proof = _request("GET", f"{url}/v1/log/consistency", params={"old": old.size, "new": new.size}).json()["proof"]
    merkle.verify_consistency(old.size, new.size, old.root, new.root, [bytes.fromhex(h) for h in proof])


def verify_log(url: str, *, receipt: str | Path | None = None, hub_key: str | None = None) -> dict:
    """Check the hub's newest checkpoint against the one saved before (consistency) and,
    with ``receipt``, that the receipt's entry is in it; then save the new checkpoint."""
    url = _check_url(url)
    trust = pinned(url, hub_key)
    verifier = NoteVerifier.decode(trust["hub_key"])
    new = fetch_checkpoint(url, trust)
    out = {"origin": trust["origin"], "size": new.size, "root": new.root.hex(), "previous": None, "receipt": None}
    if trust.get("checkpoint"):
        old = verify_checkpoint(trust["checkpoint"], verifier, trust["origin"])
        check_consistency(url, old, new)
        out["previous"] = old.size
    if receipt is not None:
        try:
            doc = json.loads(Path(receipt).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            raise ForgeIntegrityError(
                f"receipt {receipt} cannot be read as JSON", fix="give the receipt file written by 'forge push'", code="log.receipt"
            ) from None
        checked = verify_receipt(doc, trust["hub_key"])
        check_consistency(url, checked["checkpoint"], new)  # the log still holds the entry, unchanged
        out["receipt"] = {
            "index": checked["index"],
            "kind": checked["entry"].get("kind"),
            "submission_id": checked["entry"].get("submission_id"),
        }
    trust["checkpoint"] = new.note
    atomic_write_json(_trust_path(url), trust)
    return out


# --------------------------------------------------------------------------- pull


def _download(url: str, s: dict, entry: dict, target: Path) -> None:
    """Download one accepted bundle to ``target``, checked on the way (one SHA-256 pass) against
    its log entry: the sha256 of the file and, for entries that name them (:mod:`.naming`), the
    signed payload digest, the envelope digest, the size and the submission id."""
    arrival, ends = ArrivalDigest(), SentEnds()
    with atomic_output(target) as f:
        with http().stream("GET", f"{url}/v1/bundles/{s['bundle_sha256']}") as resp:
            raise_for(resp)
            for block in resp.iter_bytes(BLOCK):
                arrival.update(block)
                ends.add(block)
                f.write(block)
        bad = arrival.hexdigest() != s["bundle_sha256"]
        if not bad and "payload_sha256" in entry:
            try:
                bad = bool(ends.name().mismatches(entry)) or arrival.prefix_hexdigest() != entry["payload_sha256"]
            except ForgeIntegrityError:
                bad = True
        if bad:
            raise ForgeIntegrityError(
                f"bundle {s['submission_id']} downloaded with other bytes than its log entry names",
                fix="pull again; if it persists, report the hub",
                code="hub.digest",
            )


def pull(url: str, out: str | Path, *, site: str | None = None, hub_key: str | None = None) -> dict:
    """Download accepted bundles (those not yet in ``out``), each checked against its log
    entry (sha256, signed payload digest, envelope) and inclusion proof; ``out/pulled.json``
    lists them for the lineage."""
    url, out = _check_url(url), Path(out)
    trust = pinned(url, hub_key)
    out.mkdir(parents=True, exist_ok=True)
    subs = _request("GET", f"{url}/v1/submissions", params={"site": site} if site else None).json()["submissions"]
    pulled = []
    for s in subs:
        receipt = _request("GET", f"{url}/v1/submissions/{s['submission_id']}/receipt").json()
        entry = verify_receipt(receipt, trust["hub_key"])["entry"]
        if entry.get("bundle_sha256") != s["bundle_sha256"] or entry.get("submission_id") != s["submission_id"]:
            raise ForgeIntegrityError(
                f"the hub's listing of {s['submission_id']} does not match its log entry",
                fix="do not rely on this hub; report it to the consortium",
                code="log.receipt",
            )
        target = out / f"{s['site']}-{s['sequence']}-{s['submission_id'][:12]}.forge"
        if not (target.exists() and sha256_file(target) == s["bundle_sha256"]):
            _download(url, s, entry, target)
        pulled.append(
            {
                "submission_id": s["submission_id"],
                "site": s["site"],
                "sequence": s["sequence"],
                "bundle_sha256": s["bundle_sha256"],
                "log_index": s["log_index"],
                "path": target.name,
            }
        )
    atomic_write_json(out / "pulled.json", {"hub": url, "submissions": pulled})
    return {"out": str(out), "submissions": pulled}


# --------------------------------------------------------------------------- timestamps


def fetch_timestamp(url: str, out: str | Path, *, roster: str | Path | None = None, root=None) -> dict:
    """Fetch the hub's signed timestamp, check it against a trusted roster and write it to ``out``.

    ``roster``: the site's roster file (default: the hub's current roster, which must chain to
    the root pinned on this machine -- ``root`` pins one first). A timestamp that is expired,
    not signed by a timestamp key of that roster, or that names another roster version as
    current (``timestamp.stale_roster``: get the newer roster) is refused and nothing is written.
    Use the file with ``forge seal/verify/open --timestamp``."""
    from ..crypto.roster import parse_roster
    from ..crypto.timestamp import timestamp_from_bytes, verify_timestamp
    from ..crypto.trust import load_roster

    url = _check_url(url)
    raw = _request("GET", f"{url}/v1/timestamp").content
    ts = timestamp_from_bytes(raw, f"served by {url}")
    if roster is None:
        try:
            doc = json.loads(_request("GET", f"{url}/v1/roster").content)
        except ValueError:
            raise HubError("the hub's roster is not JSON", fix="check the hub URL", code="hub.http") from None
        trusted = load_roster(parse_roster(doc, f"the roster served by {url}"), root=root)
    else:
        trusted = load_roster(roster, root=root)
    verify_timestamp(ts, trusted)
    with atomic_output(Path(out)) as f:
        f.write((json.dumps(ts.to_document(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return {"out": str(out), **ts.signed_dict()}
