"""Policy: the shipped default loads; bad policies are refused with errors naming the fix."""

from __future__ import annotations

import dataclasses

import pytest

from audits import CHECKS, default_policy, default_policy_text, load_policy, parse_policy
from forge_secure.errors import ForgeConfigError, ForgeDataError, ForgeFileError, ForgeValueError

HEAD = 'format = "forge-audit-policy/1"\nname = "t"\n'


def test_default_policy_lists_every_registered_check_with_documented_settings():
    p = default_policy()
    assert set(p.checks) == set(CHECKS.names())
    assert p.checks["dp-claims"].max_epsilon == 8.0
    assert p.checks["delta"].max_delta_times_n == 0.01 and p.checks["delta"].max_delta == 1e-5
    assert p.checks["provenance"].require_weight_binding is True
    assert p.inconclusive_fails is False and p.to_dict()["verdict"] == {"inconclusive_fails": False}
    assert "canary_audit" not in text_of(p)
    assert p.checks["he-contributions"].min_contributions == 3
    assert len(p.sha256) == 64
    text = default_policy_text()
    for name in CHECKS.names():  # every check is documented in the shipped file
        assert f"[checks.{name}]" in text


def text_of(policy) -> str:
    import json

    return json.dumps(policy.to_dict())


def test_verdict_table_sets_whether_inconclusive_fails():
    assert parse_policy(HEAD + "[verdict]\ninconclusive_fails = true\n[checks.delta]\n").inconclusive_fails is True
    assert parse_policy(HEAD + "[checks.delta]\n").inconclusive_fails is False


def test_policy_runs_only_listed_checks_in_registry_order():
    p = parse_policy(HEAD + "[checks.delta]\n[checks.dp-claims]\nmax_epsilon = 2\n")
    assert list(p.checks) == ["dp-claims", "delta"]
    assert p.checks["dp-claims"].max_epsilon == 2.0  # int accepted for a float
    assert p.to_dict()["checks"]["dp-claims"]["accountant"] == "prv"


@pytest.mark.parametrize(
    "text, code, words",
    [
        (HEAD + "[checks.no-such-check]\n", "audit_check.unknown", ["no-such-check", "dp-claims", "provenance"]),
        (HEAD + "[checks.dp-claims]\nmax_epsilonn = 3\n", "policy.unknown_key", ["max_epsilonn", "max_epsilon"]),
        (HEAD + '[checks.dp-claims]\nmax_epsilon = "3"\n', "policy.type", ["max_epsilon", "'3'"]),
        (HEAD + "[checks.dp-claims]\nmax_epsilon = -1\n", "policy.range", ["max_epsilon", "-1"]),
        (HEAD + '[checks.dp-claims]\naccountant = "moments"\n', "policy.range", ["moments", "prv"]),
        (HEAD + "[checks.delta]\nmax_delta_times_n = 2\n", "policy.range", ["max_delta_times_n"]),
        (HEAD + "[checks.provenance]\nallowed_signers = [1]\n", "policy.type", ["allowed_signers"]),
        (HEAD + '[checks.delta]\nenabled = "yes"\n', "policy.type", ["enabled"]),
        (HEAD + "thresholds = 3\n[checks.delta]\n", "policy.unknown_key", ["thresholds", "checks"]),
        ('format = "forge-audit-policy/9"\nname = "t"\n[checks.delta]\n', "policy.format", ["forge-audit-policy/1"]),
        (HEAD + "[checks.delta]\nenabled = false\n", "policy.empty", ["no checks"]),
        (HEAD, "policy.empty", ["no checks"]),
        (HEAD + "checks = 3\n", "policy.type", ["checks"]),
        (HEAD + "[checks\n", "policy.toml", ["not valid TOML"]),
        (HEAD + "[verdict]\ninconclusive_fail = true\n[checks.delta]\n", "policy.unknown_key", ["inconclusive_fail", "inconclusive_fails"]),
        (HEAD + "[verdict]\ninconclusive_fails = 1\n[checks.delta]\n", "policy.type", ["inconclusive_fails"]),
        (HEAD + "verdict = 3\n[checks.delta]\n", "policy.type", ["verdict"]),
        (HEAD + "[checks.consistency]\ncanary_audit = true\n", "policy.unknown_key", ["canary_audit", "auditor-canaries"]),
        (HEAD + "[checks.delta]\nmax_delta = 0\n", "policy.range", ["max_delta"]),
        ('format = "forge-audit-policy/1"\nname = ""\n[checks.delta]\n', "policy.name", ["name"]),
    ],
)
def test_bad_policies_are_refused_with_a_reason_code_and_the_allowed_values(text, code, words):
    with pytest.raises(ForgeValueError) as e:
        parse_policy(text)
    assert e.value.code == code
    for w in words:
        assert w in str(e.value)


def test_policy_files_missing_empty_binary_or_a_directory(tmp_path):
    with pytest.raises(ForgeFileError) as e:
        load_policy(tmp_path / "nope.toml")
    assert e.value.code == "policy.missing"
    with pytest.raises(ForgeFileError) as e:
        load_policy(tmp_path)
    assert e.value.code == "policy.is_directory"
    (tmp_path / "empty.toml").write_text("  \n")
    with pytest.raises(ForgeDataError) as e:
        load_policy(tmp_path / "empty.toml")
    assert e.value.code == "policy.empty_file"
    (tmp_path / "bin.toml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ForgeDataError) as e:
        load_policy(tmp_path / "bin.toml")
    assert e.value.code == "policy.not_text"
    full = default_policy_text()
    (tmp_path / "trunc.toml").write_text(full[: full.index("[checks.membership]") + 12])
    with pytest.raises(ForgeConfigError) as e:
        load_policy(tmp_path / "trunc.toml")
    assert e.value.code == "policy.toml"


def test_settings_are_frozen():
    p = default_policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.checks["dp-claims"].max_epsilon = 100.0  # type: ignore[misc]
