"""One gateway into a plugin folder (forge_secure.plugins.record.read_plugin).

A plugin goes from training through seal, open, merge, attack and audit read only by the
gateway, and a broken, truncated, tampered or wrong-type forge.json or adapter gets the same
error class and code from every entry point.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
from pathlib import Path

import pytest

from forge_secure.errors import ForgeDataError, ForgeError, ForgeFileError, ForgeIntegrityError
from forge_secure.numbers import decode, encode, jsonable
from forge_secure.plugins.record import ADAPTER_FILE, META_FILE, PluginRecord, read_plugin

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [p for d in ("forge_secure", "attacks", "audits") for p in sorted((ROOT / d).rglob("*.py"))]


# --------------------------------------------------------------------------- the other readers are gone


def test_the_other_readers_no_longer_exist():
    import forge_secure.crypto.bundle as bundle
    import forge_secure.merge.io as merge_io
    import forge_secure.plugins.plugin as plugin_mod

    for module, name in (
        (merge_io, "read_plugin_files"),
        (merge_io, "PluginFiles"),
        (merge_io, "load_safetensors"),
        (bundle, "_read_forge_json"),
        (bundle, "_jsonable_claim"),
        (plugin_mod, "read_meta"),
        (plugin_mod, "_jsonable"),
    ):
        assert not hasattr(module, name), f"{module.__name__}.{name} is a second reader/encoder"


def _reads_forge_json(node: ast.AST) -> bool:
    """A call that reads a file (read_text/read_bytes/open/read_json_file/json.load[s]) with forge.json in its arguments."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name not in ("read_text", "read_bytes", "open", "read_json_file", "load", "loads", "read_bounded_bytes", "loads_bounded"):
        return False
    text = ast.unparse(node)
    return "forge.json" in text or "META_FILE" in text or "FORGE_JSON" in text or "PLUGIN_META" in text


def test_only_the_gateway_parses_forge_json():
    offenders = []
    for path in SOURCES:
        if path.name == "record.py" and path.parent.name == "plugins":
            continue
        tree = ast.parse(path.read_text())
        offenders += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree) if _reads_forge_json(n)]
    assert not offenders, offenders


def test_one_data_compatibility_family():
    """attack.data_* and recon.data_* (kind, columns, labels) are gone: check_compatible's data.* is the one family."""
    for path in SOURCES:
        text = path.read_text()
        for gone in (
            "attack.data_columns",
            "attack.data_kind",
            "attack.data_labels",
            "recon.data_kind",
            "recon.data_columns",
            "recon.data_labels",
            "recon.base_mismatch",
            "attack.base_mismatch",
            "bundle.not_plugin",
        ):
            assert gone not in text, (path, gone)


# --------------------------------------------------------------------------- the codec


@pytest.mark.parametrize(
    "value, plain, text",
    [
        (math.inf, "inf", "inf"),
        (-math.inf, "-inf", "-inf"),
        (1.1, 1.1, "1.1"),
        (3.0, 3.0, "3.0"),
        (0.001, 0.001, "0.001"),
    ],
)
def test_the_non_finite_codec_round_trips(value, plain, text):
    assert encode(value) == plain and encode(value, text=True) == text
    assert decode(encode(value)) == value == decode(encode(value, text=True))


def test_the_codec_reads_what_older_files_hold_and_refuses_the_rest():
    assert math.isnan(decode("nan")) and math.isnan(decode(encode(math.nan)))
    for old in ("Infinity", "inf", "+inf", " INF "):
        assert decode(old) == math.inf
    assert decode("-Infinity") == -math.inf and decode(2) == 2.0 and decode("1e-05") == 1e-05
    for bad in (None, True, "lots", [1.0], {}):
        with pytest.raises(ValueError):
            decode(bad)
    # a bundle's DP claim: canonical (no floats), the same strings the plugin's forge.json holds for infinity
    assert jsonable({"epsilon": math.inf, "delta": 1e-5, "steps": 3, "big": 1 << 60}, canonical=True) == {
        "epsilon": "inf",
        "delta": "1e-05",
        "steps": 3,
        "big": str(1 << 60),
    }
    assert jsonable({"epsilon": math.inf, "x": [1.5, -math.inf]}) == {"epsilon": "inf", "x": [1.5, "-inf"]}


# --------------------------------------------------------------------------- the record


def test_the_record_is_frozen_and_typed(saved_plugin):
    rec = read_plugin(saved_plugin)
    assert isinstance(rec, PluginRecord) and rec.base_checked and rec.is_plugin
    assert rec.epsilon == math.inf and rec.dp.enabled is False  # "inf" in forge.json, a float here
    assert rec.adapter_sha256 == rec.recorded_adapter_sha256 == rec.digest
    assert rec.data.kind == "tabular" and rec.data.rows == 10 and rec.data.n_classes == 2
    assert rec.lineage.parents == () and rec.lineage.method is None
    assert set(rec.tensors) and rec.adapter.rank == 4
    with pytest.raises(AttributeError):
        rec.site = "site-9"
    light = read_plugin(saved_plugin, weights=False)
    assert light.tensors is None and light.digest == rec.digest and light.meta == rec.meta


@pytest.fixture
def saved_plugin(tmp_path, tabular_base, make_lora_model, make_meta):
    from forge_secure.plugins.plugin import save_plugin

    return save_plugin(make_lora_model(tabular_base), make_meta(tabular_base), tmp_path / "plugin")


# --------------------------------------------------------------------------- the walk and the faults


def _edit(path: Path, fn) -> None:
    meta = json.loads((path / META_FILE).read_text())
    fn(meta)
    (path / META_FILE).write_text(json.dumps(meta))


FAULTS = {
    # broken, truncated, tampered and wrong-type forge.json / adapter: one error each
    "forge.json broken": (lambda p: (p / META_FILE).write_text('{"format": "forge-plugin/1", "dp": {'), ForgeDataError, "file.not_json"),
    "forge.json empty": (lambda p: (p / META_FILE).write_text(""), ForgeDataError, "file.empty"),
    "forge.json wrong type": (lambda p: (p / META_FILE).write_text("[1, 2, 3]"), ForgeDataError, "plugin.wrong_type"),
    "forge.json missing": (lambda p: (p / META_FILE).unlink(), ForgeFileError, "plugin.no_meta"),
    "forge.json tampered": (lambda p: _edit(p, lambda m: m["dp"].update(steps="many")), ForgeDataError, "plugin.meta_invalid"),
    "adapter truncated": (
        lambda p: (p / ADAPTER_FILE).write_bytes((p / ADAPTER_FILE).read_bytes()[:-64]),
        ForgeIntegrityError,
        "plugin.adapter_digest",
    ),
    "adapter missing": (lambda p: (p / ADAPTER_FILE).unlink(), ForgeFileError, "plugin.no_adapter"),
}


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """Two sites' DP plugins trained by train_plugin, sealed, opened, merged and attacked; the
    audit's world (keys, roster) from the audits' conftest."""
    import os

    from forge_secure.plugins.bases import load_base
    from forge_secure.plugins.data import bundled_splits
    from forge_secure.privacy.config import TrainConfig
    from forge_secure.privacy.train import train_plugin
    from tests.audits.conftest import build_world

    root = tmp_path_factory.mktemp("walk")
    old = os.environ.get("FORGE_HOME")
    os.environ["FORGE_HOME"] = str(root / "forge-home")
    try:
        world = build_world(root / "world")
        base = load_base("tabular-mlp")
        splits = bundled_splits()
        trained = {}
        for site in ("site-1", "site-2"):
            shard = splits.site(site)
            cfg = TrainConfig(noise_multiplier=1.0, epochs=2, seed=3, ffa=True, ffa_seed=0)
            trained[site] = train_plugin(
                cfg, shard.train(), site=site, base=base, commitment={"membership": shard.commitment()}, out=root / "trained" / site
            )
        yield world, base, trained, root
    finally:
        if old is None:
            os.environ.pop("FORGE_HOME", None)
        else:
            os.environ["FORGE_HOME"] = old


def test_one_plugin_from_training_to_audit_through_the_gateway(walk, monkeypatch):
    from attacks.membership.run import MiaSettings, run_mia
    from audits import run_audit
    from audits.checks import CHECKS
    from audits.policy import Policy
    from forge_secure.crypto.bundle import open_bundle
    from forge_secure.merge import fusion_merge

    world, base, trained, root = walk
    monkeypatch.setenv("FORGE_HOME", str(root / "forge-home"))  # the machine that pinned the roster's root
    # training wrote the record the gateway read back
    rec = trained["site-1"].record
    assert rec is not None and rec.dp.enabled and math.isfinite(rec.epsilon) and rec.adapter_sha256
    # seal (the site) -> verify and open (the consortium) -> merge -> attack -> audit
    bundles = {}
    for site, plugin in trained.items():
        bundles[site] = world.seal(plugin.path, site, world.evidence / "bundles" / f"{site}.forge")
        opened = open_bundle(
            bundles[site],
            world.decryption_key,
            world.roster,
            world.evidence / "plugins" / site,
            root=world.roster,
            state_dir=root / "consortium-state",
        )
        assert read_plugin(opened.out).adapter_sha256 == plugin.record.adapter_sha256
    merged = fusion_merge([world.evidence / "plugins" / s for s in trained], world.evidence / "merged" / "v1", method="ffa")
    mrec = read_plugin(merged)
    assert mrec.kind == "merged" and [p["site"] for p in mrec.lineage.parents] == ["site-1", "site-2"]
    assert mrec.epsilon == max(p.record.epsilon for p in trained.values())  # the codec: floats in, floats out
    res = run_mia(
        world.evidence / "plugins" / "site-1", "bundled:site-1", settings=MiaSettings(attack="loss", references=0, n_boot=200), workers=1
    )
    assert 0.0 <= res["metrics"]["auc"]["value"] <= 1.0
    table = {name: CHECKS.get(name).Settings() for name in ("provenance", "dp-claims")}
    report = run_audit(
        Policy(name="t", description="", checks=table), world.evidence, options=world.options(decryption_key=world.decryption_key)
    )
    prov = {f.subject: f for c in report.checks if c.name == "provenance" for f in c.findings}
    assert "plugins/site-1" in prov, [(f.subject, f.status.value, f.summary) for f in prov.values()]
    assert prov["plugins/site-1"].status.value == "pass" and prov["plugins/site-2"].status.value == "pass", prov
    assert prov["merged/v1"].status.value in ("pass", "warn"), prov["merged/v1"]
    dp = {f.subject: f for c in report.checks if c.name == "dp-claims" for f in c.findings}
    assert dp["plugins/site-1"].status.value in ("pass", "warn"), dp["plugins/site-1"]


def _entry_points(world, base, root):
    """Every entry point that takes a plugin folder: name -> function(folder) that raises."""
    from attacks.membership.target import load_target
    from audits.evidence import Evidence
    from forge_secure.merge import fusion_merge, mixture_merge
    from forge_secure.merge.lineage import lineage_tree
    from forge_secure.plugins.plugin import load_plugin

    def seal(folder):
        world.seal(folder, "site-1", root / "out" / f"{folder.name}.forge")

    def merge(folder):
        fusion_merge([folder, root / "trained" / "site-2"], root / "out" / f"merge-{folder.name}", method="exact")

    def mixture(folder):
        mixture_merge([folder, root / "trained" / "site-2"], root / "out" / f"mix-{folder.name}")

    def attack(folder):
        load_target(folder)

    def audit(folder):
        ev_root = root / "out" / f"evidence-{folder.name}"
        (ev_root / "plugins").mkdir(parents=True)
        shutil.copytree(folder, ev_root / "plugins" / folder.name)
        item = Evidence(ev_root).plugins[0]
        assert item.error is not None
        raise item.error

    return {
        "load": load_plugin,
        "seal": seal,
        "merge": merge,
        "mixture": mixture,
        "attack": attack,
        "audit": audit,
        "lineage": lineage_tree,
    }


# seal checks only what a transport must (the parse and the adapter digest): the schema is the opener's
SEAL_CHECKS = set(FAULTS) - {"forge.json tampered"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_gets_the_same_error_from_every_entry_point(walk, fault, monkeypatch):
    world, base, trained, root = walk
    monkeypatch.setenv("FORGE_HOME", str(root / "forge-home"))
    breaker, error, code = FAULTS[fault]
    folder = root / "broken" / fault.replace(" ", "-")
    shutil.copytree(trained["site-1"].path, folder)
    breaker(folder)
    got = {}
    for name, enter in _entry_points(world, base, root).items():
        if name == "seal" and fault not in SEAL_CHECKS:
            continue
        with pytest.raises(ForgeError) as info:
            enter(folder)
        got[name] = (type(info.value), info.value.code)
        assert "\n" not in str(info.value) and info.value.fix
    assert len(got) >= 6 and set(got.values()) == {(error, code)}, got
    for made in ("merge", "mix"):  # no half-written output
        assert not (root / "out" / f"{made}-{folder.name}").exists()
