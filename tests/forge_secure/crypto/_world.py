"""The consortium of the crypto tests (keys, a signed roster, a hand-made plugin, all at a fixed
clock) and bundle surgery; the conftest hands them to tests as the ``kit`` and ``world`` fixtures."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from forge_secure.crypto import (
    Recipient,
    ReplayStore,
    _time,
    add_site_key,
    init_roster,
    load_decryption_key,
    load_roster,
    load_signing_key,
    new_keys,
    open_bundle,
    seal,
    sign_roster,
    verify,
)
from forge_secure.crypto import bundle as bundle_mod
from forge_secure.crypto.errors import BundleError

NOW = _time.parse_time("2026-06-01T12:00:00Z", "now")
DAY = 86400


class Drbg:
    """Deterministic byte source for tests: SHAKE-256(label || counter)."""

    def __init__(self, label: str):
        self.label, self.counter = label.encode(), 0

    def __call__(self, n: int) -> bytes:
        self.counter += 1
        return hashlib.shake_256(self.label + struct.pack(">Q", self.counter)).digest(n)


def make_plugin(path: Path, *, rows: int = 64, seed: int = 0, dp_epsilon: float = 3.2) -> Path:
    """A plugin directory made by hand: forge.json + a small safetensors file."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {
            "base_model.model.fc1.lora_A.weight": rng.standard_normal((4, rows)).astype(np.float32),
            "base_model.model.fc1.lora_B.weight": np.zeros((rows, 4), np.float32),
        },
        str(path / "adapter_model.safetensors"),
    )
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["fc1"]}))
    meta = {
        "format": "forge-plugin/1",
        "kind": "trained",
        "site": "site-1",
        "base": {"name": "tabular-mlp", "digest": "ab" * 32},
        "dp": {
            "enabled": True,
            "noise_multiplier": 1.1,
            "sample_rate": 0.25,
            "steps": 120,
            "max_grad_norm": 1.0,
            "accountant": "prv",
            "epsilon": dp_epsilon,
            "delta": 1e-3,
        },
    }
    (path / "forge.json").write_text(json.dumps(meta, indent=2))
    return path


@dataclass
class World:
    root: Path
    keys: dict
    roster: Path
    plugin: Path
    counter: int = 0

    def signer(self, site="site-1"):
        return load_signing_key(self.keys[site].signing)

    def decryption(self, who="consortium"):
        return load_decryption_key(self.keys[who].decryption)

    def seal(self, name="a.forge", *, site="site-1", recipient="consortium", plugin=None, label=None, **kw) -> Path:
        self.counter += 1
        kw.setdefault("now", NOW)
        kw.setdefault("random", Drbg(label or f"bundle {self.counter}"))
        kw.setdefault("chunk_size", 4096)
        return seal(plugin or self.plugin, self.signer(site), self.keys[recipient].public, self.root / name, **kw)

    def verify(self, path, *, now=NOW, roster=None):
        return verify(path, roster or self.roster, now=now)

    def trusted(self):
        """The roster, trusted once (for loops over thousands of mutated bundles)."""
        if not hasattr(self, "_trusted"):
            self._trusted = load_roster(self.roster, now=NOW)
        return self._trusted

    def verify_bytes(self, data: bytes):
        """verify() on an in-memory bundle with the already trusted roster (same checks)."""
        return bundle_mod._verify(io.BytesIO(data), "<mutated>", self.trusted(), NOW)[1]

    def open_bytes(self, data: bytes, out="opened"):
        """open_bundle() on an in-memory bundle with the trusted roster and a loaded key (same checks)."""
        if not hasattr(self, "_key"):
            self._key = self.decryption()
        return bundle_mod._open(io.BytesIO(data), "<mutated>", self._key, self.trusted(), self.root / out, NOW, ReplayStore())

    def open(self, path, out="opened", *, key="consortium", now=NOW, roster=None, replay=None):
        return open_bundle(path, self.decryption(key), roster or self.roster, self.root / out, now=now, replay=replay)


def build_world(root: Path, *, post_quantum: bool = False, rows: int = 64) -> World:
    keys = {}
    for name, pq in (
        ("site-1", post_quantum),
        ("site-2", False),
        ("consortium", post_quantum),
        ("other", post_quantum),
        ("admin-1", False),
        ("stranger", False),
    ):
        keys[name] = new_keys(name, root / "keys" / name, post_quantum=pq, random=Drbg(f"world key {name} {pq}"))
    roster = root / "roster.json"
    init_roster(
        roster,
        "medforge",
        [keys["admin-1"].public_key],
        expires=NOW + 365 * DAY,
        recipients=[keys["consortium"].public_key, Recipient.from_public(keys["other"].public_key, "auditor")],
    )
    for site in ("site-1", "site-2"):
        add_site_key(roster, keys[site].public_key, not_before=NOW - 30 * DAY, not_after=NOW + 180 * DAY)
    sign_roster(roster, load_signing_key(keys["admin-1"].signing))
    return World(root, keys, roster, make_plugin(root / "plugin", rows=rows))


# --------------------------------------------------------------------------- bundle surgery


def split_bundle(data: bytes) -> SimpleNamespace:
    """Cut a bundle into its regions (for tests that tamper with one region)."""
    hlen = struct.unpack(">I", data[8:12])[0]
    header = json.loads(data[12 : 12 + hlen])
    pos = 12 + hlen
    wlen = struct.unpack(">H", data[pos : pos + 2])[0]
    wrapped = data[pos + 2 : pos + 2 + wlen]
    pos += 2 + wlen
    cs, total, size = header["chunk_size"], header["chunks"], header["payload_size"]
    chunks = []
    for i in range(total):
        n = (size - i * cs if i == total - 1 else cs) + 16
        chunks.append(data[pos : pos + n])
        pos += n
    elen = struct.unpack(">I", data[pos : pos + 4])[0]
    envelope = data[pos + 4 : pos + 4 + elen]
    return SimpleNamespace(
        header=header,
        header_bytes=data[12 : 12 + hlen],
        wrapped=wrapped,
        chunks=chunks,
        envelope=envelope,
        head=data[: 12 + hlen + 2 + wlen],
        body_end=pos,
    )


def join_bundle(header_bytes: bytes, wrapped: bytes, chunks: list[bytes], envelope: bytes) -> bytes:
    return (
        b"FORGEBDL"
        + struct.pack(">I", len(header_bytes))
        + header_bytes
        + struct.pack(">H", len(wrapped))
        + wrapped
        + b"".join(chunks)
        + struct.pack(">I", len(envelope))
        + envelope
    )


def code_of(fn, *a, **kw) -> str:
    """The code of the one-line BundleError that ``fn(*a, **kw)`` raises."""
    with pytest.raises(BundleError) as e:
        fn(*a, **kw)
    assert "\n" not in str(e.value)
    return e.value.code
