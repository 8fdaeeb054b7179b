"""`forge merge`, `forge he`, `forge lineage` from the command line, on sealed bundles.

One end-to-end run goes through the real `forge` subprocess; the many bad-input cases
call the same entry point (`forge_secure.cli.main`) in-process, which is the code path
the subprocess runs, to keep the default suite fast."""

from __future__ import annotations

import json
import os
import time

import pytest

from ...conftest import assert_clean_error


@pytest.fixture
def forge(forge_inproc):
    return forge_inproc


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    """Real keys, a signed roster, and the consortium's decryption key (crypto library)."""
    from forge_secure.crypto import add_site_key, init_roster, load_signing_key, new_keys, sign_roster

    d = tmp_path_factory.mktemp("consortium")
    now = int(time.time())
    admin = new_keys("admin", d / "admin")
    cons = new_keys("consortium", d / "cons")
    sites = {s: new_keys(s, d / s) for s in ("site-1", "site-2", "site-3")}
    roster = d / "roster.json"
    init_roster(roster, "test-consortium", [admin.public_key], expires=now + 86400, recipients=[cons.public_key])
    for k in sites.values():
        add_site_key(roster, k.public_key, not_before=now - 600, not_after=now + 86400)
    sign_roster(roster, load_signing_key(admin.signing))
    return {"roster": roster, "cons": cons, "sites": sites, "dir": d}


@pytest.fixture(autouse=True)
def _pinned_root(request):
    """Each test's FORGE_HOME trusts the consortium's root, as a maintainer's machine does once
    it was given the root out of band ('forge roster pin')."""
    if "consortium" in request.fixturenames:
        from forge_secure.crypto import pin_root

        pin_root(request.getfixturevalue("consortium")["roster"])


def seal_all(consortium, dirs, out_dir, tag):
    from forge_secure.crypto import load_signing_key, seal

    out = []
    for i, p in enumerate(dirs):
        site = f"site-{i + 1}"
        b = out_dir / f"{tag}-{site}.forge"
        seal(p, load_signing_key(consortium["sites"][site].signing), consortium["cons"].public, b, roster=consortium["roster"])
        out.append(b)
    return out


@pytest.fixture(scope="module")
def ffa_plugins(tmp_path_factory, make_plugin):
    d = tmp_path_factory.mktemp("cli-ffa")
    return [make_plugin(d / f"f{i}", 50 + i, ffa=True, rows=r, site=f"site-{i + 1}") for i, r in enumerate([84, 62, 31])]


@pytest.mark.slow  # ~25 s: a fresh interpreter imports torch/PEFT and loads the base; the fast tests below run the same main()
def test_fusion_on_sealed_bundles_end_to_end(forge_cli, forge, consortium, ffa_plugins, tmp_path):
    bundles = seal_all(consortium, ffa_plugins, tmp_path, "plain")
    key, roster = consortium["cons"].decryption, consortium["roster"]
    # the real subprocess, sharing this session's FORGE_HOME so the base model cache is warm
    r = forge_cli(
        "merge",
        "fusion",
        "--method",
        "ffa",
        *bundles,
        "--key",
        key,
        "--roster",
        roster,
        "--out",
        tmp_path / "merged",
        "--json",
        env={"FORGE_HOME": os.environ["FORGE_HOME"]},
    )
    assert r.code == 0, r
    info = json.loads(r.out)
    assert info["method"] == "ffa" and [p["site"] for p in info["parents"]] == ["site-1", "site-2", "site-3"]
    assert info["weight_source"] == "training-set sizes"
    r = forge("lineage", tmp_path / "merged")
    assert r.code == 0 and "site-3" in r.out and "ffa" in r.out, r


def test_homomorphic_fusion_on_sealed_contributions(forge, consortium, ffa_plugins, tmp_path):
    assert forge("he", "keygen", "--out", tmp_path / "keys").code == 0
    pub = tmp_path / "keys" / "public.ctx"
    contribs = []
    for i, p in enumerate(ffa_plugins):
        r = forge("he", "encrypt", p, "--context", pub, "--out", tmp_path / f"c{i}", "--json")
        assert r.code == 0, r
        assert len(json.loads(r.out)["salt"]) == 64
        contribs.append(tmp_path / f"c{i}")
    bundles = seal_all(consortium, contribs, tmp_path, "he")
    key, roster = consortium["cons"].decryption, consortium["roster"]
    r = forge("merge", "fusion", "--encrypted", *bundles, "--context", pub, "--key", key, "--roster", roster, "--out", tmp_path / "agg")
    assert r.code == 0, r
    r = forge("he", "decrypt", tmp_path / "agg", "--key", tmp_path / "keys", "--out", tmp_path / "o", "--contributions", *contribs[:2])
    assert_clean_error(r, "contributions given")  # the aggregate lists three
    assert not (tmp_path / "o").exists()
    r = forge(
        "he", "decrypt", tmp_path / "agg", "--key", tmp_path / "keys", "--out", tmp_path / "merged", "--json", "--contributions", *contribs
    )
    assert r.code == 0, r
    assert json.loads(r.out)["method"] == "ffa-ckks"
    # the same aggregate again: one merge releases one aggregate
    r = forge("he", "decrypt", tmp_path / "agg", "--key", tmp_path / "keys", "--out", tmp_path / "again")
    assert_clean_error(r, "already in a released aggregate")
    assert not (tmp_path / "again").exists()
    r = forge("lineage", tmp_path / "agg", "--json")
    assert r.code == 0 and len(json.loads(r.out)["parents"]) == 3


def test_mixture_on_sealed_bundles(forge, consortium, ffa_plugins, tmp_path):
    bundles = seal_all(consortium, ffa_plugins, tmp_path, "mix")
    key, roster = consortium["cons"].decryption, consortium["roster"]
    r = forge("merge", "mixture", "--router", "similarity", *bundles, "--key", key, "--roster", roster, "--out", tmp_path / "mix", "--json")
    assert r.code == 0, r
    assert json.loads(r.out)["router"] == "similarity"
    r = forge("lineage", tmp_path / "mix")
    assert r.code == 0 and "mixture" in r.out


def test_cli_bad_inputs_give_one_line_and_exit_2(forge, consortium, ffa_plugins, make_plugin, tmp_path):
    plain = make_plugin(tmp_path / "plain", 9)
    cases = [
        (("merge", "fusion", "--method", "ffa", ffa_plugins[0], plain, "--out", tmp_path / "o"), ("mixture of ffa and plain lora",)),
        (("merge", "fusion", ffa_plugins[0], tmp_path / "missing", "--out", tmp_path / "o"), ("does not exist",)),
        (("merge", "fusion", ffa_plugins[0], ffa_plugins[1], "--weights", "1,x", "--out", tmp_path / "o"), ("--weights",)),
        (("merge", "fusion", ffa_plugins[0], ffa_plugins[1], "--weights", "1", "--out", tmp_path / "o"), ("1 weights for 2 plugins",)),
        (("merge", "fusion", "--method", "sequential", ffa_plugins[0], ffa_plugins[1], "--out", tmp_path / "o"), ("--tune-on",)),
        (
            ("merge", "fusion", ffa_plugins[0], ffa_plugins[1], "--tune-on", ffa_plugins[0] / "forge.json", "--out", tmp_path / "o"),
            ("not a forge synthetic",),
        ),
        (("merge", "mixture", "--router", "gate", ffa_plugins[0], ffa_plugins[1], "--out", tmp_path / "o"), ("--tune-on",)),
        (("lineage", ffa_plugins[0] / "forge.json"), ("not a directory",)),
        (("he", "decrypt", tmp_path, "--key", tmp_path, "--out", tmp_path / "o"), ("forge.json",)),
        (("he", "encrypt", plain, "--context", tmp_path / "nokeys", "--out", tmp_path / "o"), ("does not exist",)),
    ]
    fake = tmp_path / "fake.forge"
    fake.write_bytes(b"FORGE not really")
    cases.append((("merge", "fusion", fake, ffa_plugins[1], "--out", tmp_path / "o"), ("--key",)))
    cases.append(
        (
            (
                "merge",
                "fusion",
                fake,
                ffa_plugins[1],
                "--key",
                consortium["cons"].decryption,
                "--roster",
                consortium["roster"],
                "--out",
                tmp_path / "o",
            ),
            ("bundle",),
        )
    )
    for args, words in cases:
        r = forge(*args)
        assert_clean_error(r, *words)
        assert len(r.err.strip().splitlines()) == 1, r
        assert not (tmp_path / "o").exists(), args


def test_bundle_whose_plugin_claims_another_site_is_refused(consortium, ffa_plugins, tmp_path):
    """site-1 signs a plugin whose forge.json says site-2: the merge must not record
    site-2 as its author (lineage and per-site DP records would be false)."""
    import shutil

    from forge_secure.crypto import load_signing_key, seal
    from forge_secure.errors import ForgeIntegrityError
    from forge_secure.merge import fusion_merge

    forged = tmp_path / "forged"
    shutil.copytree(ffa_plugins[1], forged)  # forge.json says site-2
    good = seal_all(consortium, ffa_plugins[:1], tmp_path, "attr")[0]
    bad = tmp_path / "attr-forged.forge"
    seal(forged, load_signing_key(consortium["sites"]["site-1"].signing), consortium["cons"].public, bad)
    key, roster = consortium["cons"].decryption, consortium["roster"]
    with pytest.raises(ForgeIntegrityError, match="site-2") as e:
        fusion_merge([good, bad], tmp_path / "o", method="ffa", key=key, roster=roster)
    assert e.value.code == "merge.site_mismatch"
    assert not (tmp_path / "o").exists()


def test_bad_merge_arguments_do_not_consume_sealed_bundles(forge, consortium, ffa_plugins, tmp_path):
    """Opening a bundle records it in the replay store; a merge that fails on its own
    arguments must fail before opening, or the bundles could never be merged again."""
    bundles = seal_all(consortium, ffa_plugins[:2], tmp_path, "burn")
    key, roster = consortium["cons"].decryption, consortium["roster"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    for args, words in [
        (("--weights", "1,2,3", "--out", tmp_path / "o"), ("3 weights for 2 plugins",)),
        (("--out", taken), ("already exists",)),
    ]:
        r = forge("merge", "fusion", "--method", "ffa", *bundles, "--key", key, "--roster", roster, *args)
        assert_clean_error(r, *words)
        r = forge("merge", "mixture", *bundles, "--key", key, "--roster", roster, *args)
        assert_clean_error(r, *words)
    r = forge("merge", "fusion", "--method", "ffa", *bundles, "--key", key, "--roster", roster, "--out", tmp_path / "o", "--json")
    assert r.code == 0, r
