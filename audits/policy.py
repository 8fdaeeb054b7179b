"""Audit policy: which checks to run and their thresholds, read from TOML.

A policy file looks like the shipped default (``audits/default_policy.toml``)::

    format = "forge-audit-policy/1"
    name = "my-consortium"
    description = "..."

    [verdict]
    inconclusive_fails = false

    [checks.dp-claims]
    max_epsilon = 8.0

``[verdict]`` decides what an INCONCLUSIVE check (evidence that can neither confirm nor refute
a claim) does to the verdict: ``inconclusive_fails = true`` fails the audit; false (the
default) passes it, and the report says so on its verdict banner. Only the checks that have a
``[checks.<name>]`` table run (in the registry's order); a table may set ``enabled = false``.
Unknown top-level keys, unknown check names and unknown or badly typed settings are refused
with an error that lists what is allowed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from forge_secure.errors import ForgeConfigError, ForgeDataError, ForgeFileError
from forge_secure.fileio import sha256_bytes

from .checks import CHECKS
from .checks.base import CheckSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

POLICY_FORMAT = "forge-audit-policy/1"
TOP_LEVEL_KEYS = ("format", "name", "description", "verdict", "checks")
VERDICT_KEYS = {"inconclusive_fails": bool}


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``checks`` maps check name -> its validated settings, in run order."""

    name: str
    description: str
    checks: Mapping[str, CheckSettings]
    source: str = "<memory>"
    sha256: str = ""
    inconclusive_fails: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ForgeConfigError(f"policy name {self.name!r} is empty", fix='set name = "..." in the policy', code="policy.name")
        checks = dict(self.checks)
        for name, settings in checks.items():
            cls = CHECKS.get(name)  # raises, listing the allowed names
            if not isinstance(settings, cls.Settings):
                raise ForgeConfigError(
                    f"settings for check {name!r} have type {type(settings).__name__}",
                    fix=f"use {cls.__name__}.Settings",
                    code="policy.type",
                )
        order = CHECKS.names()
        ordered = {n: checks[n] for n in sorted(checks, key=lambda n: _run_order(n, order))}
        object.__setattr__(self, "checks", ordered)
        if not any(s.enabled for s in ordered.values()):
            raise ForgeConfigError(
                f"policy {self.name!r} enables no checks",
                fix=f"add at least one [checks.<name>] table; checks are: {', '.join(CHECKS.names())}",
                code="policy.empty",
            )

    def enabled(self) -> dict[str, CheckSettings]:
        return {n: s for n, s in self.checks.items() if s.enabled}

    def to_dict(self) -> dict:
        return {
            "format": POLICY_FORMAT,
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "sha256": self.sha256,
            "verdict": {"inconclusive_fails": self.inconclusive_fails},
            "checks": {n: s.to_dict() for n, s in self.checks.items()},
        }


def _run_order(name: str, registry_names: list[str]) -> int:
    from .checks import RUN_ORDER

    return RUN_ORDER.index(name) if name in RUN_ORDER else len(RUN_ORDER) + registry_names.index(name)


def parse_policy(text: str, *, source: str = "<string>") -> Policy:
    """Parse and validate policy TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ForgeConfigError(
            f"policy {source} is not valid TOML ({e})", fix="fix the TOML syntax at the place shown", code="policy.toml"
        ) from None
    except (RecursionError, ValueError) as e:  # nesting too deep for the parser, an integer of thousands of digits
        why = "arrays nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
        raise ForgeConfigError(
            f"policy {source} cannot be read ({why})", fix="write each setting as a plain number, string or short list", code="policy.toml"
        ) from None
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ForgeConfigError(
            f"unknown top-level key(s) {', '.join(unknown)} in policy {source}",
            fix=f"allowed keys are: {', '.join(TOP_LEVEL_KEYS)}; check settings go in [checks.<name>] tables",
            code="policy.unknown_key",
        )
    fmt = data.get("format")
    if fmt != POLICY_FORMAT:
        raise ForgeConfigError(
            f"policy {source} has format {fmt!r}",
            fix=f'set format = "{POLICY_FORMAT}" at the top of the policy',
            code="policy.format",
        )
    checks_table = data.get("checks", {})
    if not isinstance(checks_table, dict):
        raise ForgeConfigError(
            f"'checks' in policy {source} is not a table", fix="write one [checks.<name>] table per check", code="policy.type"
        )
    checks: dict[str, CheckSettings] = {}
    for name, table in checks_table.items():
        cls = CHECKS.get(name)
        if not isinstance(table, dict):
            raise ForgeConfigError(
                f"checks.{name} in policy {source} is {table!r}, not a table",
                fix=f"write it as a [checks.{name}] table",
                code="policy.type",
            )
        checks[name] = cls.Settings.from_table(table)
    verdict = _verdict_table(data.get("verdict", {}), source)
    name = data.get("name", "")
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise ForgeConfigError(f"policy {key} = {value!r} is not a string", fix=f'write {key} = "..."', code="policy.type")
    return Policy(
        name=name,
        description=description,
        checks=checks,
        source=source,
        sha256=sha256_bytes(text.encode("utf-8")),
        inconclusive_fails=verdict["inconclusive_fails"],
    )


def _verdict_table(table, source: str) -> dict:
    """The ``[verdict]`` table: known keys only, each of its type; defaults filled in."""
    if not isinstance(table, dict):
        raise ForgeConfigError(f"'verdict' in policy {source} is not a table", fix="write it as a [verdict] table", code="policy.type")
    unknown = sorted(set(table) - set(VERDICT_KEYS))
    if unknown:
        raise ForgeConfigError(
            f"unknown policy setting(s) {', '.join(unknown)} in [verdict]",
            fix=f"allowed settings are: {', '.join(VERDICT_KEYS)}",
            code="policy.unknown_key",
        )
    out = {"inconclusive_fails": False}
    for key, value in table.items():
        if not isinstance(value, VERDICT_KEYS[key]):
            raise ForgeConfigError(
                f"policy setting verdict.{key} = {value!r} has the wrong type (expected {VERDICT_KEYS[key].__name__})",
                fix=f"give verdict.{key} a value of that type",
                code="policy.type",
            )
        out[key] = value
    return out


def load_policy(path: str | Path) -> Policy:
    """Read a policy TOML file, with errors for a missing, empty, binary or invalid file."""
    path = Path(path)
    if not path.exists():
        raise ForgeFileError(
            f"policy {path} does not exist", fix="check the path, or omit --policy to use the default policy", code="policy.missing"
        )
    if path.is_dir():
        raise ForgeFileError(f"policy {path} is a directory", fix="give the path of the .toml file", code="policy.is_directory")
    raw = path.read_bytes()
    if not raw.strip():
        raise ForgeDataError(
            f"policy {path} is empty", fix="start from the default: forge audit --print-default-policy", code="policy.empty_file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ForgeDataError(f"policy {path} is not UTF-8 text", fix="give a TOML policy file", code="policy.not_text") from None
    return parse_policy(text, source=str(path))


def default_policy_text() -> str:
    """The documented default policy shipped with the package."""
    return resources.files("audits").joinpath("default_policy.toml").read_text(encoding="utf-8")


def default_policy() -> Policy:
    return parse_policy(default_policy_text(), source="audits/default_policy.toml")
