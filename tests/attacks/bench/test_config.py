"""The bench configuration: parsing, validation before any work, grid expansion, cache keys."""

from __future__ import annotations

import math

import pytest
import tomllib

from attacks.bench import BENCH_ATTACKS, config_from_dict, expand_grid, load_config, merge_registry
from attacks.bench import grid as G
from attacks.bench.config import DEFAULT_CONFIG
from forge_secure.errors import ForgeConfigError, ForgeFileError


def base_doc() -> dict:
    return {
        "bench": {"seeds": [0, 1]},
        "grid": {"epsilon": [1, "inf"], "rank": [2], "lora": ["ffa"], "merge": ["none", "exact"], "attack": ["lira", "rmia"]},
        "attack": {"lira": {"references": 2}},
    }


def test_default_config_loads_and_expands():
    cfg = load_config("default")
    assert cfg == load_config(None) == load_config(DEFAULT_CONFIG)
    assert math.inf in cfg.grid.epsilon and 1.0 in cfg.grid.epsilon
    cells = expand_grid(cfg)
    assert len(cells) == cfg.grid.size == 3 * 1 * 1 * 1 * 3
    # the default grid inserts canaries and audits them (issue 17: rows that separate)
    assert cfg.canaries.count > 0 and cfg.training.base == "vit-tiny" and cfg.data.source == "bundled-digits"
    assert len(set(cells)) == len(cells)
    assert {c.lora for c in cells} == {"lora"}
    # every attack table of the bundled file is a known attack with known keys
    raw = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert set(raw["attack"]) <= set(BENCH_ATTACKS.names())


def test_inf_is_parsed_and_written_back():
    cfg = config_from_dict(base_doc())
    assert cfg.grid.epsilon == (1.0, math.inf)
    assert cfg.to_dict()["grid"]["epsilon"] == [1.0, "inf"]
    assert cfg.attack_settings("lira")["references"] == 2
    assert cfg.attack_settings("rmia") == dict(BENCH_ATTACKS.get("rmia").defaults)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.update(colour="red"), ["unknown key 'colour'", "bench", "grid"]),
        (lambda d: d["grid"].update(epsilons=[1]), ["unknown key 'epsilons'", "epsilon"]),
        (lambda d: d["attack"]["lira"].update(refs=3), ["unknown key 'refs'", "references"]),
        (lambda d: d["grid"].update(attack=["lira", "shadow"]), ["unknown attack 'shadow'", "lira", "recon", "rmia"]),
        (lambda d: d["attack"].update(shadow={}), ["unknown attack 'shadow'", "lira"]),
        (lambda d: d["grid"].update(merge=["avg"]), ["unknown merge method 'avg'", "mixture", "none", "exact"]),
        (lambda d: d["grid"].update(lora=["qlora"]), ["unknown lora kind 'qlora'", "ffa"]),
        (lambda d: d["grid"].update(epsilon=[]), ["epsilon is empty"]),
        (lambda d: d["grid"].update(attack=[]), ["attack is empty"]),
        (lambda d: d["bench"].update(seeds=[]), ["seeds is empty"]),
        (lambda d: d["grid"].update(epsilon=[-1]), ["epsilon must be a positive number", "-1"]),
        (lambda d: d["grid"].update(epsilon=["infinite-ish"]), ["infinite-ish"]),
        (lambda d: d["grid"].update(rank=[0]), ["rank must be an integer >= 1", "0"]),
        (lambda d: d["grid"].update(rank=[4, 4]), ["rank lists 4 twice"]),
        (lambda d: d["attack"]["lira"].update(references=0), ["references must be at least 1"]),
        (lambda d: d["attack"]["lira"].update(online="yes"), ["online must be of type bool", "yes"]),
        (lambda d: d.update(training={"epochs": 0}), ["epochs must be an integer >= 1"]),
        (lambda d: d.update(training={"lr": "fast"}), ["lr must be a number", "fast"]),
        (lambda d: d.update(bench={"seeds": [0], "confidence": 1.5}), ["confidence"]),
        (lambda d: d.update(run={"workers": 0}), ["workers must be an integer >= 1"]),
        (lambda d: d.update(grid=[1, 2]), ["grid must be a table"]),
        (lambda d: d.update(canaries={"count": -3}), ["count must be an integer >= 0"]),
        (lambda d: d.update(canaries={"count": 1}), ["count must be 0", "at least 2"]),
        (lambda d: d.update(canaries={"count": "many"}), ["count must be an integer", "many"]),
        (lambda d: d.update(canaries={"cnt": 64}), ["unknown key 'cnt'", "count"]),
        (lambda d: d.update(canaries={"k_plus_fraction": 0.8, "k_minus_fraction": 0.8}), ["k_plus_fraction + k_minus_fraction"]),
        (lambda d: d.update(canaries={"p_target": 0.7}), ["p_target"]),
        (lambda d: d.update(canaries=[64]), ["canaries must be a table"]),
    ],
)
def test_bad_configs_are_refused_with_the_fix(mutate, words):
    doc = base_doc()
    mutate(doc)
    with pytest.raises(ForgeConfigError) as info:
        config_from_dict(doc)
    text = str(info.value)
    for w in words:
        assert w in text, (w, text)
    assert "\n" not in text


def test_merge_names_come_from_the_fusion_registry():
    from forge_secure.merge.fusion import FUSIONS

    names = merge_registry().names()
    assert set(FUSIONS.names()) <= set(names) and {"none", "mixture"} <= set(names)


def test_file_errors(tmp_path):
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ForgeFileError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid\nepsilon = [1]\n")
    with pytest.raises(ForgeConfigError, match="not valid TOML"):
        load_config(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ForgeConfigError, match="is empty"):
        load_config(empty)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ForgeConfigError, match="not valid TOML"):
        load_config(binary)
    nodata = tmp_path / "nodata.toml"
    nodata.write_text('[data]\nsource = "no/such.csv"\nlabel_column = "y"\n')
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_config(nodata)


def test_user_csv_needs_a_label_column(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n1,2,0\n")
    cfg_file = tmp_path / "b.toml"
    cfg_file.write_text('[data]\nsource = "d.csv"\n')
    with pytest.raises(ForgeConfigError, match="label_column"):
        load_config(cfg_file)
    cfg_file.write_text('[data]\nsource = "d.csv"\nlabel_column = "label"\n')
    assert load_config(cfg_file).data.source == str(csv)  # relative to the config file


def test_keys_change_only_for_the_cells_a_setting_touches():
    a = config_from_dict(base_doc())
    doc = base_doc()
    doc["attack"]["lira"]["references"] = 4
    b = config_from_dict(doc)
    digest = "d" * 64
    for cell in expand_grid(a):
        for seed in a.seeds:
            same_model = G.model_key(a, cell, seed, digest) == G.model_key(b, cell, seed, digest)
            same_cell = G.cell_key(a, cell, seed, digest) == G.cell_key(b, cell, seed, digest)
            assert same_model
            assert same_cell == (cell.attack != "lira")
    # the data digest and the training recipe reach every key
    cell = expand_grid(a)[0]
    assert G.cell_key(a, cell, 0, digest) != G.cell_key(a, cell, 0, "e" * 64)
    doc = base_doc()
    doc["training"] = {"epochs": 7}
    c = config_from_dict(doc)
    assert G.model_key(a, cell, 0, digest) != G.model_key(c, cell, 0, digest)
    # seeds and cells are distinct keys
    keys = {G.cell_key(a, c_, s, digest) for c_ in expand_grid(a) for s in a.seeds}
    assert len(keys) == len(expand_grid(a)) * len(a.seeds)


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d.update(training={"accountant": "moments"}), ["unknown accountant 'moments'", "prv", "rdp"]),
        (lambda d: d.update(training={"base": "resnet-9000"}), ["unknown base model 'resnet-9000'", "tabular-mlp"]),
        (lambda d: d["attack"].update(lira={"references": 1, "fixed_variance": False}), ["at least 4 reference models"]),
        (lambda d: d["attack"].update(rmia={"a": 3.0}), ["a=3.0", "[0, 1]"]),
        (lambda d: d.update(training={"optimizer": "lbfgs"}), ["lbfgs", "adam", "sgd"]),
        # canaries shaped like the bundled digits cannot go into a tabular base's training set
        (lambda d: d.update(data={"source": "bundled-digits"}, training={"base": "tabular-mlp"}), ["does not fit base"]),
    ],
)
def test_preflight_checks_the_libraries_settings_before_any_work(tmp_path, mutate, words):
    from attacks.bench.data import load_bench_data
    from attacks.bench.runner import preflight, run_bench
    from forge_secure.errors import ForgeError

    doc = base_doc()
    mutate(doc)
    cfg = config_from_dict(doc)
    with pytest.raises(ForgeError) as info:
        preflight(cfg, load_bench_data(cfg.data))
    for w in words:
        assert w in str(info.value)
    with pytest.raises(ForgeError):
        run_bench(cfg, tmp_path / "out", cache_root=tmp_path / "cache", workers=1)
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").rglob("*.json"))


def test_out_rules(tmp_path):
    from attacks.bench.output import MARKER, check_out

    assert check_out(tmp_path / "new") is False
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty") is False
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ForgeFileError, match="not a directory"):
        check_out(f)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ForgeFileError, match="did not write"):
        check_out(other)
    (other / MARKER).write_text("{}")
    assert check_out(other) is True
