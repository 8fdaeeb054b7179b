"""Known-answer vectors for sealed bundles (``forge-bundle/1``).

Everything is derived from fixed labels through a SHAKE-256 counter stream (test use only,
never for real keys) and a fixed clock, so the key files, the roster and the classical
bundle are byte-for-byte reproducible. ``tests/forge_secure/crypto/test_vectors.py``
regenerates them and compares.

Two things the ``cryptography`` API does not let us fix: the HPKE encapsulation (its
ephemeral key is drawn inside the library) and ML-DSA-65 signatures (hedged, randomised).
The test therefore re-seals with the stored wrapped key, after checking that it unwraps to
the data key the fixed random source gives under the regenerated header, which makes the
classical bundle identical byte for byte; for the post-quantum bundle every byte before
the envelope and the signed statement must match, and the fresh ML-DSA signature must verify.

``roster.json`` is format ``forge-roster/2`` (it lists the consortium keys as recipients);
``roster-v1.json`` is the format-1 roster of the same keys, kept as written before format 2
(regenerated in December 2026 when rosters gained recipients): it must keep verifying the
same bundles. The bundles and key files did not change.

Regenerate deliberately (only when the format changes on purpose, with a format version bump)::

    .venv/bin/python tests/vectors/make_vectors.py

then commit the changed files under tests/vectors/ together with the format change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from forge_secure.crypto import _primitives as P
from forge_secure.crypto import _time, bundle, keys, roster
from forge_secure.crypto.replay import SequenceCounter

HERE = Path(__file__).resolve().parent
FIXED_NOW = _time.parse_time("2026-06-01T12:00:00Z", "now")
NOT_BEFORE = _time.parse_time("2026-01-01T00:00:00Z", "not_before")
FAR = _time.parse_time("2099-01-01T00:00:00Z", "far")
CHUNK = 4096
SEQUENCE = 7
BUNDLES = {  # name: (signer key dir, recipient key dir)
    "classic.forge": ("site-1", "consortium"),
    "post-quantum.forge": ("site-pq", "consortium-pq"),
}
KEY_SPECS = {"site-1": False, "site-pq": True, "consortium": False, "consortium-pq": True, "admin-1": False}


class Drbg:
    """Deterministic byte source: SHAKE-256(label || counter). For test vectors only."""

    def __init__(self, label: str):
        self.label = label.encode()
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        self.counter += 1
        return hashlib.shake_256(self.label + struct.pack(">Q", self.counter)).digest(n)


def plugin_files() -> dict[str, bytes]:
    """A small plugin directory made by hand: forge.json, adapter config, safetensors weights."""
    import numpy as np
    from safetensors.numpy import save

    meta = {
        "format": "forge-plugin/1",
        "toolkit_version": "0.1.0",
        "site": "site-1",
        "kind": "trained",
        "base": {"name": "tabular-mlp", "digest": hashlib.sha256(b"vector base").hexdigest()},
        "lora": {"rank": 4, "alpha": 8, "targets": ["fc1"], "ffa": True, "ffa_seed": 0, "dropout": 0.0},
        "training": {"epochs": 1, "batch_size": 8, "lr": 0.05, "optimizer": "sgd", "seed": 0},
        "dp": {
            "enabled": True,
            "noise_multiplier": 1.1,
            "sample_rate": 0.25,
            "steps": 12,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": 3.2,
            "delta": 0.001,
        },
        "parents": [],
        "merge": None,
    }
    rng = np.random.default_rng(0)
    weights = {
        "base_model.model.fc1.lora_A.weight": rng.standard_normal((4, 512)).astype(np.float32),
        "base_model.model.fc1.lora_B.weight": rng.standard_normal((512, 4)).astype(np.float32),
    }
    return {
        "forge.json": (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(),
        "adapter_config.json": json.dumps(
            {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["fc1"]}, sort_keys=True
        ).encode(),
        "adapter_model.safetensors": save(weights),
    }


def make_keys(root: Path) -> dict[str, keys.KeyFiles]:
    return {name: keys.new_keys(name, root / "keys" / name, post_quantum=pq, random=Drbg(f"key {name}")) for name, pq in KEY_SPECS.items()}


def make_roster(root: Path, made: dict[str, keys.KeyFiles]) -> Path:
    path = root / "roster.json"
    if path.exists():  # made already (deterministic: the same bytes)
        return path
    roster.init_roster(
        path,
        "vector-consortium",
        [made["admin-1"].public_key],
        expires=FAR,
        recipients=[made["consortium"].public_key, made["consortium-pq"].public_key],
    )
    for site in ("site-1", "site-pq"):
        roster.add_site_key(path, made[site].public_key, not_before=NOT_BEFORE, not_after=FAR)
    roster.sign_roster(path, keys.load_signing_key(made["admin-1"].signing), state_dir=root / "state")
    return path


def _made(root: Path) -> dict[str, keys.KeyFiles]:
    out = {}
    for name in KEY_SPECS:
        d = root / "keys" / name
        out[name] = keys.KeyFiles(
            d / keys.SIGNING_FILE, d / keys.DECRYPTION_FILE, d / keys.PUBLIC_FILE, keys.load_public_key(d / keys.PUBLIC_FILE)
        )
    return out


def make_bundle(root: Path, name: str, plugin: Path, wrap=P.hpke_wrap) -> Path:
    signer, recipient = BUNDLES[name]
    out = root / name
    roster_path = root / "roster.json"
    if not roster_path.exists():
        make_roster(root, _made(root))
    with tempfile.TemporaryDirectory() as counter_dir:
        bundle._seal(
            plugin,
            root / "keys" / signer / keys.SIGNING_FILE,
            root / "keys" / recipient / keys.PUBLIC_FILE,
            out,
            sequence=SEQUENCE,
            chunk_size=CHUNK,
            passphrase=None,
            random=Drbg(f"bundle {name}"),
            now=FIXED_NOW,
            counter=SequenceCounter(counter_dir),
            wrap=wrap,
            roster=roster_path,
            state_dir=root / "state",
        )
    return out


def main(target: Path = HERE) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plugin = target / "plugin"
        if plugin.exists():
            shutil.rmtree(plugin)
        plugin.mkdir(parents=True)
        for name, data in plugin_files().items():
            (plugin / name).write_bytes(data)
        made = make_keys(work)
        roster_path = make_roster(work, made)
        expected = {}
        for name in BUNDLES:
            path = make_bundle(work, name, plugin)
            v = bundle.verify(path, roster_path, now=FIXED_NOW, state_dir=work / "state")
            expected[name] = {k: val for k, val in v.to_dict().items() if k != "path"}
        for sub in ("keys", "roster.json", *BUNDLES):
            dest = target / sub
            if dest.is_dir():
                shutil.rmtree(dest)
            src = work / sub
            shutil.copytree(src, dest) if src.is_dir() else shutil.copyfile(src, dest)
        (target / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"vectors written to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
