"""One consortium for the crypto CLI tests (test_cli.py, test_cli_fuzz.py): keys, a signed roster
listing the site and two recipients, a plugin and a bundle sealed by the real `forge seal`."""

from __future__ import annotations

from forge_secure.cli import main as forge_main
from forge_secure.crypto import Recipient, add_site_key, init_roster, load_signing_key, new_keys, sign_roster


def build_cli_world(tmp_path, kit, label: str, *, seal_with_roster: bool):
    """``(keys, roster, plugin, bundle)``; ``seal_with_roster`` passes ``--roster`` to seal
    (without it, seal finds the roster trusted on this machine)."""
    keys = {n: new_keys(n, tmp_path / n, random=kit.Drbg(f"{label} {n}")) for n in ("site-1", "consortium", "other", "admin-1")}
    roster = tmp_path / "roster.json"
    init_roster(
        roster,
        "medforge",
        [keys["admin-1"].public_key],
        expires=kit.NOW + 3650 * kit.DAY,
        recipients=[keys["consortium"].public_key, Recipient.from_public(keys["other"].public_key, "auditor")],
    )
    add_site_key(roster, keys["site-1"].public_key, not_before=kit.NOW - kit.DAY, not_after=kit.NOW + 3650 * kit.DAY)
    sign_roster(roster, load_signing_key(keys["admin-1"].signing))
    plugin = kit.make_plugin(tmp_path / "plugin")
    bundle = tmp_path / "a.forge"
    args = [
        "seal",
        str(plugin),
        "--signer",
        str(keys["site-1"].signing),
        "--recipient",
        str(keys["consortium"].public),
        "--out",
        str(bundle),
    ] + (["--roster", str(roster)] if seal_with_roster else [])
    assert forge_main(args) == 0
    return keys, roster, plugin, bundle
