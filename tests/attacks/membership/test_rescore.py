"""Re-derivable results: the signals in a results file, ``rescore`` and ``forge attack mia rescore``."""

from __future__ import annotations

import copy
import json

import pytest

from forge_secure.errors import ForgeConfigError, ForgeDataError

FIGURES = ("attack", "scores", "labels", "metrics", "empirical_epsilon", "is_canary", "canaries")


@pytest.fixture
def forge_inproc(forge_inproc, mia_home):
    return forge_inproc


@pytest.fixture(scope="module")
def saved(mia_home, overfit_plugin, tmp_path_factory):
    """A LiRA run with 8 references (population kept, canaries used), written to disk."""
    from attacks.membership.run import MiaSettings, run_mia, write_results

    results = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", references=8, n_boot=100, seed=1))
    path = write_results(results, tmp_path_factory.mktemp("rescore") / "lira.json")
    return path, results


@pytest.fixture(scope="module")
def saved_offline(mia_home, overfit_plugin, tmp_path_factory):
    """The same with offline references (trained on population records only)."""
    from attacks.membership.run import MiaSettings, run_mia, write_results

    results = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", online=False, references=8, n_boot=100, seed=1))
    return write_results(results, tmp_path_factory.mktemp("rescore") / "lira-offline.json"), results


def _same(a: dict, b: dict) -> None:
    for k in FIGURES:
        assert a[k] == b[k], k


def test_rescore_reproduces_the_file_exactly(saved):
    from attacks.membership import rescore

    path, original = saved
    again = rescore(path)
    _same(again, json.loads(path.read_text()))
    _same(again, original)
    assert again["rescored"]["from_attack"] == "lira" and again["rescored"]["references_used"] == 8
    assert again["signals"] == original["signals"]


@pytest.mark.parametrize(
    "attack,settings",
    [
        ("lira", {"online": False}),
        ("lira", {"fixed_variance": True}),
        ("rmia", {}),
        ("rmia", {"online": False}),
        ("loss", {}),
        ("reference", {}),
    ],
)
def test_rescore_equals_a_run_of_that_attack(saved, saved_offline, overfit_plugin, attack, settings):
    """Any registered attack from the saved signals gives what a run of that attack gives
    (its references come from the cache: the same models). Offline variants are rescored
    from the offline file (a run with --offline trains offline references)."""
    from attacks.membership import MEMBERSHIP_ATTACKS, rescore
    from attacks.membership.run import MiaSettings, run_mia

    assert attack in MEMBERSHIP_ATTACKS
    path, _ = saved_offline if settings.get("online") is False else saved
    direct = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack=attack, references=8, n_boot=100, seed=1, **settings))
    _same(rescore(path, attack, **settings), direct)


def test_first_k_references_reproduce_a_smaller_run(saved, overfit_plugin):
    from attacks.membership import rescore
    from attacks.membership.run import MiaSettings, run_mia

    path, _ = saved
    small = run_mia(overfit_plugin, "bundled:site-1", settings=MiaSettings(attack="lira", references=4, n_boot=100, seed=1))
    again = rescore(path, references=4)
    _same(again, small)
    assert again["references"]["count"] == 4
    with pytest.raises(ForgeConfigError):
        rescore(path, references=9)


def test_offline_variant_on_online_references(saved):
    """Another use of the same signals: the offline test on the online run's OUT references."""
    from attacks.membership import rescore

    path, original = saved
    off = rescore(path, "lira", online=False)
    assert off["settings"]["online"] is False and off["scores"] != original["scores"]
    assert 0.0 <= off["metrics"]["auc"]["value"] <= 1.0


@pytest.mark.parametrize("edit", ["reference_logits", "target_logits", "reference_in_mask", "membership", "labels", "digest"])
def test_edited_signals_are_refused(saved, edit):
    from attacks.membership import rescore

    _, original = saved
    doc = copy.deepcopy(original)
    sig = doc["signals"]
    if edit == "reference_logits":
        sig["reference_logits"][3][5][0] += 1e-9
    elif edit == "target_logits":
        sig["target_logits"][0][1] = sig["target_logits"][0][1] * 2
    elif edit == "reference_in_mask":
        sig["reference_in_mask"][0][0] = 1 - sig["reference_in_mask"][0][0]
    elif edit == "membership":  # labels and signals edited together: the digest still catches it
        sig["membership"][0] = 1 - sig["membership"][0]
        doc["labels"][0] = sig["membership"][0]
    elif edit == "labels":  # the labels outside the signals
        doc["labels"][0] = 1 - doc["labels"][0]
    else:
        sig["digest"] = "0" * 64
    with pytest.raises(ForgeDataError) as e:
        rescore(doc)
    assert e.value.code == "attack.signals_tampered"


def test_files_without_or_with_broken_signals(saved, tmp_path):
    from attacks.membership import rescore

    _, original = saved
    doc = copy.deepcopy(original)
    doc.pop("signals")
    with pytest.raises(ForgeDataError) as e:
        rescore(doc)
    assert e.value.code == "attack.no_signals"
    doc["signals"] = {
        "format": "forge-mia-signals/1",
        "references": {"mode": "online", "seed": 1},
        "digests": {},
        "digest": "x",
        "target_logits": "not an array",
    }
    with pytest.raises(ForgeDataError):
        rescore(doc)
    with pytest.raises(ForgeDataError):
        rescore([1, 2])


def test_cli_rescore(forge_inproc, saved, tmp_path):
    path, original = saved
    out = tmp_path / "rmia.json"
    r = forge_inproc("attack", "mia", "rescore", path, "--attack", "rmia", "--out", out, "--json")
    assert r.code == 0, r
    summary = json.loads(r.out)
    assert summary["attack"] == "rmia" and summary["rescored"]["from_attack"] == "lira"
    written = json.loads(out.read_text())
    assert written["attack"] == "rmia" and written["signals"]["digest"] == original["signals"]["digest"]
    r = forge_inproc("attack", "mia", "rescore", path)
    assert r.code == 0 and "ROC AUC" in r.out


@pytest.mark.parametrize("damage", ["tampered", "truncated", "not_json_object", "missing"])
def test_cli_rescore_bad_files(forge_inproc, saved, tmp_path, damage):
    path, _ = saved
    bad = tmp_path / "bad.json"
    text = path.read_text()
    if damage == "tampered":
        doc = json.loads(text)
        doc["signals"]["target_logits"][0][0] += 1.0
        bad.write_text(json.dumps(doc))
    elif damage == "truncated":
        bad.write_text(text[: len(text) // 2])
    elif damage == "not_json_object":
        bad.write_text("[1, 2, 3]")
    out = tmp_path / "out.json"
    r = forge_inproc("attack", "mia", "rescore", bad, "--out", out)
    assert r.code == 2, r
    assert "Traceback" not in r.err and not out.exists()


def test_cli_mia_still_needs_its_options(forge_inproc, tmp_path):
    r = forge_inproc("attack", "mia", "--data", "bundled:site-1", "--out", tmp_path / "x.json")
    assert r.code == 2 and "--target" in r.err


def test_cli_names_the_library_default():
    import dataclasses

    from attacks.membership.run import MiaSettings
    from forge_secure.cli.attack_mia import DEFAULT_ATTACK_TEXT

    d = {f.name: f.default for f in dataclasses.fields(MiaSettings)}
    parts = [d["attack"], "online" if d["online"] else "offline"]
    if d["attack"] == "lira":
        parts.append("fixed variance" if d["fixed_variance"] else "per-record variance")
    assert DEFAULT_ATTACK_TEXT == ", ".join(parts)
