"""Fixtures of the audit tests: a consortium built with the real crypto (keys, signed roster,
sealed bundles), plugin directories with real safetensors weights, and attack results files.

``world`` builds, in a temporary directory, the keys of three sites, an admin, the
consortium's recipient key and the auditor's key, a signed roster, and an empty evidence
directory. Helpers add plugins, bundles, merged versions and attack results to it: under the
evidence's attacks/ as the *site* supplied them (``add_attack``), or outside it as the
auditor's own runs (``add_auditor_attack``; pass ``world.options()`` to the audit).

The default plugin record is self-consistent the way ``forge train`` writes it: 400 rows,
batch size 32 (q = 0.08), 5 epochs x ceil(400 / 32) = 65 steps, delta 1e-5.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from forge_secure.crypto import _time
from forge_secure.crypto.bundle import seal
from forge_secure.crypto.keys import load_public_key, load_signing_key, new_keys
from forge_secure.crypto.replay import SequenceCounter
from forge_secure.crypto.roster import Recipient, add_site_key, init_roster, revoke_key, sign_roster
from forge_secure.fileio import sha256_file
from forge_secure.privacy.ledger import Ledger

DAY = 86400

from tests.audits._plugins import BASE_DIGEST, plugin_meta, write_plugin  # noqa: E402,F401 - re-exported to the tests


def membership_results(target: str, *, separation: float, n: int = 400, seed: int = 0, attack: str = "lira") -> dict:
    """An attack results document: per-record scores and coin-flip membership labels.

    ``separation`` is the shift of member scores (in standard deviations): 0 is an attack
    that learns nothing, 4 one that nearly always tells members apart."""
    labels = np.random.default_rng([seed, 1]).random(n) < 0.5
    scores = np.random.default_rng([seed, 2]).normal(0.0, 1.0, n) + separation * labels
    return {
        "format": "forge-attack-mia/1",
        "attack": attack,
        "target": {"path": target},
        "membership": {"include_prob": 0.5},
        "scores": scores.tolist(),
        "labels": labels.astype(int).tolist(),
    }


@dataclass
class World:
    root: Path
    keys: dict = field(default_factory=dict)
    now: int = 0
    counter: SequenceCounter | None = None
    auditor_attacks: list = field(default_factory=list)

    @property
    def evidence(self) -> Path:
        return self.root / "evidence"

    @property
    def roster(self) -> Path:
        return self.evidence / "roster.json"

    def signing(self, name: str):
        return load_signing_key(self.keys[name] / "signing.key")

    def public(self, name: str):
        return load_public_key(self.keys[name] / "public.json")

    def add_plugin(self, name: str, site: str, *, seed: int = 0, seal_it: bool = True, ledger: bool = True, **meta_kw) -> Path:
        """plugins/<name> and, when ``seal_it``, bundles/<name>.forge sealed by ``site``; the
        training is recorded in the site's real budget ledger under ledgers/ (``ledger``)."""
        meta = plugin_meta(site, **meta_kw)
        dp = meta["dp"]
        if ledger and dp.get("enabled"):
            self.record(site, [(dp["noise_multiplier"], dp["sample_rate"], dp["steps"])], dp["delta"])
        staging = self.root / "staging" / name
        write_plugin(staging, meta, seed)
        if seal_it:
            self.seal(staging, site, self.evidence / "bundles" / f"{name}.forge")
        dest = self.evidence / "plugins" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
        return dest

    def record(self, site: str, history, delta: float, budget: float | None = None) -> None:
        Ledger.open(site, f"bundled:{site}", budget, root=self.evidence / "ledgers").record(history, kind="train", delta=delta, note={})

    def seal(self, plugin_dir: Path, site: str, out: Path) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        return seal(
            plugin_dir,
            self.signing(site),
            self.public("consortium"),
            out,
            now=self.now - 60,
            counter=self.counter,
            roster=self.roster,
            state_dir=self.root / "site-roster-state",
            root=self.roster,
        )

    def add_merged(self, name: str, parents: list[tuple[str, str]], *, method: str = "ffa-ckks", seed: int = 99) -> Path:
        """merged/<name> whose parents are (digest, site) pairs."""
        meta = plugin_meta(
            "consortium",
            kind="merged",
            parents=[{"digest": d, "site": s} for d, s in parents],
            merge={"method": method, "weights": [1.0] * len(parents)},
        )
        return write_plugin(self.evidence / "merged" / name, meta, seed)

    def add_attack(self, name: str, doc: dict) -> Path:
        p = self.evidence / "attacks" / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc))
        return p

    def add_auditor_attack(self, name: str, doc: dict) -> Path:
        """Results of an attack the auditor ran itself, kept outside the evidence directory."""
        p = self.root / "auditor-attacks" / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc))
        self.auditor_attacks.append(p)
        return p

    def options(self, **kw):
        from audits import AuditOptions

        return AuditOptions(attack_results=tuple(self.auditor_attacks), **kw)

    @property
    def decryption_key(self) -> Path:
        return self.keys["consortium"] / "decryption.key"

    def revoke(self, site: str) -> None:
        revoke_key(self.roster, self.public(site).key_id, reason="key compromised", at=self.now - 30)
        sign_roster(self.roster, self.signing("admin"))


def build_world(root: Path) -> World:
    w = World(root=root, now=_time.now())
    w.counter = SequenceCounter(root / "counter")
    for name in ("site-1", "site-2", "site-3", "admin", "consortium", "auditor"):
        w.keys[name] = new_keys(name, root / "keys" / name).public.parent
    w.evidence.mkdir(parents=True)
    init_roster(
        w.roster,
        "medforge",
        [w.public("admin")],
        expires=w.now + 90 * DAY,
        recipients=[w.public("consortium"), Recipient.from_public(w.public("auditor"), "auditor")],
    )
    for site in ("site-1", "site-2", "site-3"):
        add_site_key(w.roster, w.public(site), not_before=w.now - DAY, not_after=w.now + 365 * DAY)
    sign_roster(w.roster, w.signing("admin"))
    return w


@pytest.fixture
def world(tmp_path, monkeypatch) -> World:
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "forge-home"))
    return build_world(tmp_path)


@pytest.fixture
def compliant_world(world) -> World:
    """Three sites' DP plugins (epsilon re-derives below the claim), sealed and opened, a
    homomorphic merge of all three, and the auditor's own membership attack on each that
    learns nothing, on 2000 coin-flip records (enough to show an epsilon above the claimed 4)."""
    digests = []
    for i, site in enumerate(("site-1", "site-2", "site-3")):
        p = world.add_plugin(f"{site}-plugin", site, seed=i)
        digests.append((sha256_file(p / "adapter_model.safetensors"), site))
        world.add_auditor_attack(f"mia-{site}", membership_results(f"plugins/{site}-plugin", separation=0.0, seed=i, n=2000))
    world.add_merged("v1", digests)
    return world
