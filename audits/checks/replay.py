"""Checks that verify a plugin's DP claims instead of believing them.

- ``dp-randomness``: the plugin says its noise and sampling came from a fresh OS secret (a
  commitment in forge.json), not from a published seed. This alone is the site's word; a
  plugin without it (a toolkit that seeded the noise from ``training.seed``) fails outright.
- ``replay``: the auditor opens the replay envelope beside each plugin (sealed to the
  auditor's key by ``forge train --auditor``), re-runs the training on the data it holds and
  compares every claim and the released weights (:func:`forge_secure.privacy.replay.replay`).
  PASS = "verified by replay"; a missing, foreign, damaged or unopenable envelope, a claim the
  recipe does not back, or weights the recipe does not reproduce FAIL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forge_secure.errors import ForgeError

from ..findings import Finding, Status
from .base import Check, CheckSettings, register_check
from .dp import bad_evidence, missing_evidence, trained_plugins

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@register_check("dp-randomness")
class DpRandomness(Check):
    title = "Secret DP randomness"
    description = (
        "Each plugin's noise and Poisson sampling must come from a fresh secret drawn from the operating system, "
        "of which forge.json holds only a commitment; noise that a published seed regenerates is worth nothing."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        allow_supplied_secret: bool = False  # true: a caller-supplied secret passes when replay verifies the plugin

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.privacy.randomness import is_generator

        plugins = trained_plugins(evidence)
        if not plugins:
            return missing_evidence(
                self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the plugin directories under plugins/"
            )
        out = []
        for item in plugins:
            if item.data is None:
                out.append(bad_evidence(self.name, item))
                continue
            rnd = (item.data.get("dp") or {}).get("randomness")
            ev = {"randomness": rnd, "basis": "claimed"}
            if not isinstance(rnd, dict) or not _HEX64.match(str(rnd.get("secret_commitment", ""))):
                out.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        "no commitment to a secret: the DP noise and sampling are predictable (seeded from public values)",
                        evidence=ev,
                        remedy="re-train with this toolkit's forge train (a fresh OS secret every run)",
                        plugin=item.rel,
                        claim="dp-parameters",
                        basis="claimed",
                    )
                )
            elif not is_generator(rnd.get("generator")):
                out.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"unknown generator {rnd.get('generator')!r}",
                        evidence=ev,
                        remedy="re-train with forge train",
                        plugin=item.rel,
                        claim="dp-parameters",
                        basis="claimed",
                    )
                )
            elif rnd.get("source") != "os" and not settings.allow_supplied_secret:
                out.append(
                    Finding(
                        self.name,
                        Status.FAIL,
                        item.rel,
                        f"the randomness secret was supplied by the caller (source {rnd.get('source')!r}), so nothing shows it was secret",
                        evidence=ev,
                        remedy="re-train with forge train, which draws the secret from the OS",
                        plugin=item.rel,
                        claim="dp-parameters",
                        basis="claimed",
                    )
                )
            else:
                out.append(
                    Finding(
                        self.name,
                        Status.PASS,
                        item.rel,
                        f"noise and sampling from a secret (commitment {rnd['secret_commitment'][:16]}...); "
                        "the replay check verifies the commitment",
                        evidence=ev,
                        plugin=item.rel,
                        claim="dp-parameters",
                        basis="claimed",
                    )
                )
        return out


@register_check("replay")
class Replay(Check):
    title = "Training replayed by the auditor"
    description = (
        "The auditor opens each plugin's replay envelope, re-runs the training from the recorded secret and recipe on "
        "the data it holds, and compares every DP claim and the released weights. Only a replayed plugin's claims "
        "are verified; the others are the site's word."
    )

    @dataclass(frozen=True)
    class Settings(CheckSettings):
        tolerance: float = 1e-4  # relative L2 distance of the adapters (see forge_secure.privacy.replay)

        def validate(self) -> None:
            if not (0 <= self.tolerance < 1):
                raise self.bad("tolerance", self.tolerance, "in [0, 1)")

    def run(self, evidence, settings, *, progress=None) -> list[Finding]:
        from forge_secure.privacy.canaries import read_record
        from forge_secure.privacy.replay import envelope_path

        plugins = trained_plugins(evidence)
        if not plugins:
            return missing_evidence(
                self.name, settings, "trained plugins (plugins/<name>/forge.json)", "add the plugin directories under plugins/"
            )
        opts = evidence.options
        if opts.replay_key is None or evidence.roster_path is None:
            what = "the auditor's replay key (--replay-key)" if opts.replay_key is None else "roster.json"
            status = Status.FAIL if settings.required else Status.SKIP
            return [
                Finding(
                    self.name,
                    status,
                    item.rel,
                    f"not replayed: no {what}; every DP claim of this plugin is the site's word",
                    evidence={"basis": "claimed"},
                    remedy="run the audit on site with --replay-key AUDITOR/decryption.key and the site's data, "
                    "or use a policy without the replay check (claims then stay 'claimed only')",
                )
                for item in plugins
            ]
        records = {}
        for path in opts.canary_records:
            try:
                rec = read_record(path)
                records[rec["grant_id"]] = rec
            except ForgeError:
                continue  # the auditor-canaries check reports an unreadable record
        from .provenance import trusted_roster

        trusted, err = trusted_roster(evidence)
        if trusted is None:
            return [
                Finding(
                    self.name,
                    Status.FAIL,
                    item.rel,
                    f"not replayed: the roster is not trusted ({err})",
                    evidence={"basis": "claimed", "reason_code": getattr(err, "code", "roster")},
                    remedy="pin the consortium's root on the auditor's machine (forge roster pin) and audit again",
                    plugin=item.rel,
                    claim="dp-parameters",
                    basis="claimed",
                )
                for item in plugins
            ]
        data_for = dict(opts.site_data)
        out = []
        for item in plugins:
            if progress is not None:
                progress(f"replaying {item.rel}")
            if item.data is None:
                out.append(bad_evidence(self.name, item))
                continue
            env = envelope_path(item.path)
            out.append(self._one(item, env, opts, trusted, records, data_for, settings))
        return out

    def _one(self, item, env, opts, roster, records, data_for, settings) -> Finding:
        from forge_secure.privacy.replay import assemble_data, open_replay_envelope, replay

        fail_remedy = (
            "do not accept the plugin: its DP claims are not what its training did; ask the site to re-train with "
            "forge train --auditor and hand over the plugin with its envelope"
        )
        if not env.is_file():
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"no replay envelope ({env.name} beside the plugin): claimed only",
                evidence={"reason_code": "replay.missing", "basis": "claimed"},
                remedy="ask the site for the envelope that 'forge train --auditor' writes beside the plugin",
            )
        try:
            recipe = open_replay_envelope(env, key=opts.replay_key, roster=roster, passphrase=opts.replay_passphrase, root=roster)
            if recipe.get("site") != item.data.get("site"):
                return Finding(
                    self.name,
                    Status.FAIL,
                    item.rel,
                    f"the envelope is {recipe.get('site')}'s, the plugin {item.data.get('site')}'s",
                    evidence={"reason_code": "replay.other_plugin", "basis": "claimed"},
                    remedy=fail_remedy,
                )
            grant = recipe.get("canaries") or {}
            record = records.get(grant.get("grant_id")) if grant else None
            data = assemble_data(recipe, spec=data_for.get(item.data.get("site")), canary_record=record)
            result = replay(recipe, item.path, data, tolerance=settings.tolerance)
        except ForgeError as e:
            return Finding(
                self.name,
                Status.FAIL,
                item.rel,
                f"not replayed: {e}",
                evidence={"reason_code": e.code, "basis": "claimed"},
                remedy=fail_remedy,
            )
        ev = {k: v for k, v in result.to_dict().items() if k not in ("environment", "plugin")}
        ev["basis"] = "verified" if result.verified else "claimed"
        ev["replayed_on"] = recipe["data"]["source"].get("spec") if not data_for.get(item.data.get("site")) else data_for[item.data["site"]]
        ev["canary_grant"] = grant.get("grant_id")
        if result.verified:
            return Finding(
                self.name,
                Status.PASS,
                item.rel,
                "verified by replay: " + result.message,
                evidence=ev,
                plugin=item.rel,
                claim="dp-parameters",
                basis="verified",
            )
        return Finding(
            self.name,
            Status.FAIL,
            item.rel,
            f"replay failed ({result.reason}): {result.message}",
            evidence=ev,
            remedy=fail_remedy,
            plugin=item.rel,
            claim="dp-parameters",
            basis="verified",
        )
