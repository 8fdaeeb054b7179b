"""docs/errors.md is the catalogue of every error code, generated from the source (issue 14, item 5)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("errors_catalogue", ROOT / "tools" / "errors_catalogue.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_the_catalogue_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "errors_catalogue.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + "\n(regenerate: python tools/errors_catalogue.py)"


def test_every_code_is_well_formed_documented_and_raised(tmp_path):
    tool = _tool()
    entries = tool.scan()
    assert len(entries) > 300
    text = (ROOT / "docs" / "errors.md").read_text()
    for code, entry in entries.items():
        assert entry.sites, code  # listed only because some place raises it
        assert f"`{code}`" in text, code
        if not entry.dynamic:
            assert tool.CODE_RE.match(code), f"{code!r} is not a dotted lower-case code"
    # codes the tests and the CLI rely on are found where they are raised
    for code in ("bundle.truncated", "key.wrong_passphrase", "ledger.corrupt", "canaries.grant_invalid", "replay.missing"):
        if code in entries:
            assert any(s.path.endswith(".py") for s in entries[code].sites)
    assert {"bundle", "key", "roster", "replay", "hub", "audit", "attack"} <= {c.split(".")[0] for c in entries}


def test_the_generator_finds_codes_passed_by_keyword_and_through_factories(tmp_path):
    tool = _tool()
    pkg = tmp_path / "forge_secure"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errs.py").write_text("def fail(code, message, fix):\n    return ValueError(message)\n")
    (pkg / "a.py").write_text(
        "from .errs import fail\n"
        "def f(x):\n"
        "    raise ForgeValueError(f'bad {x}', fix='give a good one', code='demo.bad')\n"
        "def g():\n"
        "    raise fail('demo.worse', 'worse', 'do better')\n"
    )
    for name in ("attacks", "audits"):
        (tmp_path / name).mkdir()
    entries = tool.scan(tmp_path)
    assert set(entries) == {"demo.bad", "demo.worse"}
    assert entries["demo.bad"].sites[0].message == "bad {x}" and entries["demo.bad"].sites[0].fix == "give a good one"
    assert entries["demo.worse"].sites[0].fix == "do better"
