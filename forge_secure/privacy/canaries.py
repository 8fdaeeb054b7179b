"""Auditor-issued canaries (Steinke, Nasr and Jagielski 2023, "Privacy auditing with one (1)
training run"), drawn so that the audited site cannot choose them, drop them, or learn which
were held back.

The auditor (``forge audit canaries issue``) draws ``M`` canaries and an independent fair coin
for each from a fresh secret of its own (:class:`~.randomness.SecretStream`); it keeps a private
*record* (the secret and the parameters, from which everything is regenerated) and seals to the
site a *grant* (a ``.forge`` bundle signed by the auditor, encrypted to the site) that holds only
the canaries whose coin came up heads. The site inserts them (``forge train --canary-grant``); the
replay envelope binds their digest, so dropping or altering them fails replay. The audit scores
the released plugin on all ``M`` canaries and runs the one-run audit on included against held-back
ones: a split the site never saw.

Canaries: tabular records with every feature ``+-U(4, 8)`` standard deviations (random sign),
where real records almost never lie, image records of uniform noise pixels, and text records of
token ids drawn uniformly from those that occur in the data (a random word salad, valid for its
tokenizer); labels uniformly random. An out-of-distribution record with a random label is only predicted right when it was
memorised (Carlini et al. 2019, "The Secret Sharer").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ForgeDataError, ForgeError, ForgeFileError, ForgeValueError
from .randomness import GENERATOR_V1, SecretStream, check_secret, fresh_secret

if TYPE_CHECKING:
    from ..plugins.data import Dataset

RECORD_FORMAT = "forge-canary-record/1"
GRANT_FORMAT = "forge-canary-grant/1"
#: default number of canaries drawn (half, in expectation, are inserted): see docs/benchmarks.md
#: ("audit power") for why this many can contradict a false epsilon-1 claim of a plugin trained
#: without noise on the bundled data
DEFAULT_COUNT = 256


def _like_record(like) -> dict:
    rec = {"kind": like.kind, "shape": list(like.shape), "n_classes": int(like.n_classes), "feature_names": list(like.feature_names)}
    if like.kind == "text":  # canaries are drawn from the token ids that occur in the data (valid for its tokenizer)
        vocab = np.unique(np.asarray(like.X, dtype=np.int64))
        if not len(vocab):
            raise ForgeDataError(
                f"{like.name} holds no tokens to draw text canaries from",
                fix="give the site's text data with --like",
                code="canaries.no_tokens",
            )
        rec["vocab"] = [int(v) for v in vocab]
    return rec


def draw_canaries(secret: bytes, count: int, like: dict):
    """All ``count`` canaries of ``secret`` and their inclusion coins: ``(Dataset, mask)``."""
    from ..plugins.data import Dataset

    s = SecretStream(check_secret(secret), "auditor-canaries", GENERATOR_V1)  # pinned: issued sets re-derive from the secret
    shape = (int(count), *like["shape"])
    n = int(np.prod(shape))
    if like["kind"] == "tabular":
        sign = np.where(s.uniform(n) < 0.5, -1.0, 1.0)
        X = (sign * (4.0 + 4.0 * s.uniform(n))).reshape(shape)
    elif like["kind"] == "text":  # a random word salad of the data's own token ids
        vocab = np.asarray(like["vocab"], dtype=np.int64)
        X = vocab[np.minimum((s.uniform(n) * len(vocab)).astype(np.int64), len(vocab) - 1)].reshape(shape)
    else:
        X = s.uniform(n).reshape(shape)
    y = np.minimum((s.uniform(int(count)) * like["n_classes"]).astype(np.int64), like["n_classes"] - 1)
    mask = s.uniform(int(count)) < 0.5
    data = Dataset(
        X.astype(np.float32), y, int(like["n_classes"]), f"canaries/m={count}", like["kind"], tuple(like.get("feature_names") or ())
    )
    return data, mask


def issue_record(site: str, count: int, like, *, secret: bytes | None = None) -> dict:
    """The auditor's private record of a new canary set for ``site`` shaped like ``like``."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
        raise ForgeValueError(
            f"canary count {count!r} must be an integer of at least 2", fix=f"give --count such as {DEFAULT_COUNT}", code="canaries.count"
        )
    secret = check_secret(secret) if secret is not None else fresh_secret()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "site": site,
        "count": int(count),
        "secret": secret.hex(),
        "grant_id": os.urandom(16).hex(),
        "like": _like_record(like),
        "created": int(time.time()),
    }
    cset, mask = draw_canaries(secret, count, record["like"])
    record["included"] = int(mask.sum())
    record["included_digest"] = cset.subset(mask).digest()
    return record


def read_record(path: str | Path) -> dict:
    """Read an auditor's canary record (a private file)."""
    from ..fileio import read_json_file

    rec = read_json_file(Path(path), "canary record")
    try:
        if rec.get("format") != RECORD_FORMAT:
            raise ValueError(f"format {rec.get('format')!r}")
        check_secret(bytes.fromhex(rec["secret"]))
        int(rec["count"])
        rec["like"]["shape"], rec["like"]["kind"], rec["like"]["n_classes"]  # noqa: B018
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ForgeDataError(
            f"{path} is not a {RECORD_FORMAT} file ({e})",
            fix="give the record that 'forge audit canaries issue' wrote",
            code="canaries.record",
        ) from None
    return rec


def all_canaries(record: dict):
    """``(Dataset of all canaries, inclusion mask)`` of an auditor's record."""
    return draw_canaries(bytes.fromhex(record["secret"]), int(record["count"]), record["like"])


def included_canaries(record: dict, like=None):
    """The canaries the site was given (in grant order)."""
    cset, mask = all_canaries(record)
    if like is not None and (tuple(like.shape) != tuple(cset.shape) or like.kind != cset.kind):
        raise ForgeDataError(
            f"the canaries are {cset.kind} records of shape {cset.shape}, the site's data {like.kind} of shape {like.shape}",
            fix="issue canaries shaped like the site's data",
            code="canaries.shape",
        )
    return cset.subset(mask)


def write_grant(record: dict, *, signer, site_key, out: str | Path, passphrase: bytes | None = None, roster=None) -> Path:
    """Seal the included canaries of ``record`` to the site (``site_key``: its public key or
    ``public.json``, listed as a recipient in the trusted ``roster``), signed by the auditor's ``signer``."""
    from safetensors.numpy import save

    from .sealed import seal_files

    cset = included_canaries(record)
    meta = {
        "format": GRANT_FORMAT,
        "kind": "canary-grant",
        "site": record["site"],
        "grant_id": record["grant_id"],
        "count": len(cset),
        "digest": cset.digest(),
        "like": record["like"],
    }
    arrays = save({"X": np.ascontiguousarray(cset.X), "y": np.ascontiguousarray(cset.y)})
    return seal_files(
        {"canaries.safetensors": arrays},
        meta,
        signer=signer,
        recipient=site_key,
        out=out,
        counter="sequence-grants",
        roster=roster,
        passphrase=passphrase,
    )


def open_grant(grant: str | Path, *, key, roster, passphrase: bytes | None = None, root=None) -> tuple[dict, Dataset]:
    """Verify and open a canary grant: ``(grant meta, Dataset of the canaries to insert)``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from ..plugins.data import Dataset
    from ..plugins.record import read_manifest
    from .sealed import opened_files

    grant = Path(grant)
    if not grant.is_file():
        raise ForgeFileError(
            f"canary grant {grant} does not exist", fix="give the .forge file the auditor sent", code="canaries.grant_missing"
        )
    with opened_files(grant, key=key, roster=roster, passphrase=passphrase, root=root) as out:
        try:
            meta = read_manifest(out)  # the one parse of a forge.json
            arrays = load_file(str(out / "canaries.safetensors"))
            if meta.get("format") != GRANT_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            like = meta["like"]
            data = Dataset(
                arrays["X"],
                arrays["y"].astype(np.int64),
                int(like["n_classes"]),
                f"canaries/{meta['grant_id']}",
                like["kind"],
                tuple(like.get("feature_names") or ()),
            )
        except (OSError, ValueError, KeyError, TypeError, SafetensorError, ForgeError) as e:
            raise ForgeDataError(
                f"{grant} is not a canary grant ({e})", fix="give the .forge file the auditor sent", code="canaries.grant_invalid"
            ) from None
    if data.digest() != meta.get("digest") or len(data) != meta.get("count"):
        raise ForgeDataError(
            f"the canaries in {grant} do not match its own record",
            fix="ask the auditor to issue the grant again",
            code="canaries.grant_invalid",
        )
    return meta, data
