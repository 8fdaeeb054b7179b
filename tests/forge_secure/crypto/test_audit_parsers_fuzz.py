"""Property-based fuzzing of the audit's readers of outside files (issue 16, item 1): the
policy (TOML), the evidence directory's plugin manifests and site attack results, and the
auditor's own attack results files. The audit code is not changed here; these tests call its
public readers (``load_policy``, ``Evidence``, ``attack_evidence``, ``read_membership``,
``read_reconstruction``) on mutated files. The property: every input ends in a
``ForgeError`` with a dotted code, or is read (errors of evidence files are recorded on the
item, as the audit reports them); nothing else escapes.

Mutations: the machinery of this directory's conftest.py (JSON values replaced by hostile
ones, bytes damaged, hostile tokens, random bytes), plus, for the TOML policy, TOML-aware
changes (a value replaced by a hostile TOML literal: 5,000-digit integers, 3,000-deep arrays,
dates, inline tables, nan; unknown check tables and keys; repeated tables).

Counts as in test_parsers_fuzz.py (profiles ``forge-fuzz-quick`` / ``forge-fuzz-slow``).

Measured: the slow run, once, 2026-12-03 (shared 2-core machine), 100,000 inputs per reader:

    reader                     refused   accepted  crashes
    audit-policy                86,870     10,731    2,399  (RecursionError 1,209; ValueError 1,189; OverflowError 1)
    evidence-attack-file        55,285     44,715        0
    evidence-plugin-manifest    57,717     42,283        0
    auditor-results             90,433      9,567        0

The policy crashes were fixed in audits/ (tomllib's RecursionError and ValueError become
``policy.toml``, a float setting too large for a float ``policy.type``; the regression tests
below). The slow run on the fixed reader, 2026-12-03: audit-policy 100,000 inputs, 88,396
refused, 11,604 accepted, 0 crashes. The evidence and results readers are total.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from audits import AuditOptions
from audits.attack_results import MEMBERSHIP, RECONSTRUCTION, attack_evidence
from audits.evidence import Evidence
from audits.policy import default_policy_text, load_policy
from forge_secure.errors import ForgeError
from tests.audits._plugins import plugin_meta, write_plugin

PARSERS = ["audit-policy", "evidence-attack-file", "evidence-plugin-manifest", "auditor-results"]

TOML_VALUES = [
    "1" * 5000,
    "-" + "9" * 30,
    "0x" + "f" * 40,
    "inf",
    "nan",
    "-0",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    '"[/x]"',
    '"%s{0}"',
    "'''a\nb'''",
    '[1, "a", {x = 1}]',
    "{a = 1, b = [2]}",
    "true",
    '""',
    "[" * 3000 + "]" * 3000,
    "{a = " * 500 + "1" + "}" * 500,
    "1e999",
    '"\\ud800"',
    "[[]]",
    "-1",
    "0",
    "1.5",
    "1_000",
    '"' + "a" * 10_000 + '"',
]
TOML_LINES = [
    "[checks.nonexistent]",
    "[checks]",
    "[verdict]",
    "[[checks]]",
    "unknown = 1",
    'enabled = "yes"',
    "[checks.dp-claims]",
    'format = "forge-audit-policy/1"',
    "checks = 3",
    "verdict = []",
    "[checks.dp-claims.deeper]",
    "a.b.c = 1",
]


class PolicyTarget:
    """The policy reader, with TOML-aware mutations besides the byte-level ones."""

    def __init__(self, fuzzing, path):
        self.name, self.path, self.expected, self.coded, self.only_seeds_valid = "audit-policy", path, ForgeError, True, False
        text = default_policy_text()
        self.seeds = [
            text.encode(),
            (text + "\n[checks.dp-claims]\nmax_epsilon = 2.0\n").encode()
            if "[checks.dp-claims]" not in text
            else text.replace("[verdict]", "[verdict]\n").encode(),
        ]
        self.bytes_target = fuzzing.Target("audit-policy", self.parse, self.seeds, json_doc=False)

    def parse(self, raw: bytes) -> None:
        self.path.write_bytes(raw)
        load_policy(self.path)

    def make(self, c) -> bytes:
        if c.int(0, 2):
            return self.bytes_target.make(c)
        lines = self.seeds[c.int(0, len(self.seeds) - 1)].decode().splitlines()
        for _ in range(c.int(1, 3)):
            i = c.int(0, len(lines))
            op = c.int(0, 3)
            assignments = [k for k, line in enumerate(lines) if "=" in line and not line.lstrip().startswith("#")]
            if op <= 1 and assignments:
                k = c.pick(assignments)
                lines[k] = lines[k].split("=", 1)[0] + "= " + c.pick(TOML_VALUES)
            elif op == 2:
                lines.insert(i, c.pick(TOML_LINES))
            elif lines:
                lines.insert(i, lines[c.int(0, len(lines) - 1)])  # a repeated table or key
        return "\n".join(lines).encode("utf-8", "surrogatepass")


def membership_doc(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = rng.random(24) < 0.5
    return {
        "format": "forge-attack-mia/1",
        "attack": "lira",
        "target": {"path": "plugins/site-1", "adapter_digest": "ab" * 32},
        "membership": {"include_prob": 0.5, "seed_sha256": "cd" * 32},
        "scores": (rng.normal(0, 1, 24) + labels).round(4).tolist(),
        "labels": labels.astype(int).tolist(),
        "auc": 0.61,
        "canaries": {"scores": [0.1, 0.9, 0.3], "labels": [0, 1, 0]},
    }


def reconstruction_doc() -> dict:
    return {
        "kind": "reconstruction",
        "attack": "informed",
        "target": "plugins/site-1",
        "outcomes": [1] * 3 + [0] * 17,
        "kappa": 0.05,
        "success_rate": 0.15,
    }


def _evidence_root(tmp_path):
    root = tmp_path / "evidence"
    # a well-formed plugin (the evidence reads it through the plugins' gateway, which checks the
    # schema, the adapter digest and the base), so that the fuzz's refusals are of its damage
    write_plugin(root / "plugins" / "site-1", plugin_meta("site-1"), seed=0)
    (root / "attacks").mkdir()
    return root


def _read_all(evidence: Evidence) -> None:
    """What the audit does with the files after loading them; an error the audit records on an
    item (it reports it rather than stopping) is raised here, so it is checked for a code."""
    found = [evidence.find_plugin("site-1")]
    for kind in (MEMBERSHIP, RECONSTRUCTION):
        found += [a.error for a in attack_evidence(evidence, kind)]
    found += [item.error for item in (*evidence.plugins, *evidence.attacks, *evidence.auditor_attacks)]
    for error in found:
        if isinstance(error, BaseException):
            raise error


def _targets(tmp_path, fuzzing) -> dict:
    T = fuzzing.Target
    root = _evidence_root(tmp_path)
    outside = tmp_path / "auditor" / "results.json"
    outside.parent.mkdir()
    seeds_results = [json.dumps(membership_doc(0)).encode(), json.dumps(reconstruction_doc(), indent=2).encode()]
    manifest = root / "plugins" / "site-1" / "forge.json"

    def site_file(raw: bytes) -> None:
        (root / "attacks" / "a.json").write_bytes(raw)
        _read_all(Evidence(root))

    def plugin_manifest(raw: bytes) -> None:
        manifest.write_bytes(raw)
        _read_all(Evidence(root))

    def auditor_file(raw: bytes) -> None:
        outside.write_bytes(raw)
        _read_all(Evidence(root, AuditOptions(attack_results=(outside,))))

    return {
        "audit-policy": PolicyTarget(fuzzing, tmp_path / "policy.toml"),
        "evidence-attack-file": T("evidence-attack-file", site_file, seeds_results),
        "evidence-plugin-manifest": T("evidence-plugin-manifest", plugin_manifest, [manifest.read_bytes()]),
        "auditor-results": T("auditor-results", auditor_file, seeds_results),
    }


# Crashes of audits/ found by this fuzz (reported to its owner, not fixed here: this engineer
# does not edit audits/). tomllib raises RecursionError on deeply nested arrays or inline
# tables and a plain ValueError on an integer of more than 4,300 digits; parse_policy catches
# only TOMLDecodeError, so `forge audit --policy` exits 3. A float setting given an integer
# above 1.8e308 (e.g. 400 digits) raises OverflowError in audits/checks/base.py (float(value)).
# The fixes: in parse_policy catch (tomllib.TOMLDecodeError, ValueError, RecursionError) as
# policy.toml; in the settings' float conversion catch OverflowError as policy.type.
# Every other crash class fails these tests.
KNOWN_POLICY_CRASHES: tuple[str, ...] = ()  # the three classes the slow run found are fixed (regression tests below)


def _check(run, name: str, kind: str, fuzzing) -> None:
    if name == "audit-policy" and KNOWN_POLICY_CRASHES:
        run.crashes = [c for c in run.crashes if not c[0].startswith(KNOWN_POLICY_CRASHES)]
    fuzzing.assert_total(run, fuzzing.count(kind))


@pytest.mark.parametrize("name", PARSERS)
def test_audit_reader_is_total_quick(name, tmp_path, fuzzing):
    _check(fuzzing.run(_targets(tmp_path, fuzzing)[name], "quick"), name, "quick", fuzzing)


@pytest.mark.slow
@pytest.mark.parametrize("name", PARSERS)
def test_audit_reader_is_total_100k(name, tmp_path, fuzzing):
    _check(fuzzing.run(_targets(tmp_path, fuzzing)[name], "slow"), name, "slow", fuzzing)


@pytest.mark.parametrize(
    ("key", "value"), [("inconclusive_fails", "[" * 3000 + "]" * 3000), ("inconclusive_fails", "1" * 5000), ("max_epsilon", "1" * 400)]
)
def test_policy_hostile_toml_ends_in_forge_error(key, value, tmp_path):
    path = tmp_path / "policy.toml"
    text = default_policy_text()
    old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
    path.write_text(text.replace(old, f"{key} = {value}"))
    assert f"{key} = {value[:10]}" in path.read_text()
    with pytest.raises(ForgeError):
        load_policy(path)


def test_audit_seeds_are_read(tmp_path, fuzzing):
    """The unmutated files are read without error (so the fuzz's refusals are of damage)."""
    targets = _targets(tmp_path, fuzzing)
    for target in targets.values():
        target.parse(target.seeds[0])
    ev = Evidence(tmp_path / "evidence", AuditOptions(attack_results=(tmp_path / "auditor" / "results.json",)))
    assert ev.plugins[0].ok, ev.plugins[0].error
    assert all(a.error is None for a in attack_evidence(ev, MEMBERSHIP))
    shutil.rmtree(tmp_path / "evidence")
