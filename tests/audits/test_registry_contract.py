"""The contract of :data:`audits.CHECKS`, run over every registered check the way scikit-learn's
``parametrize_with_checks`` runs every estimator (a new check is checked by registering it):
it has a title, a description and frozen default-constructible settings that round-trip through
its policy table and refuse unknown keys and wrongly typed values with a ``ForgeConfigError``;
on evidence laid out with every folder empty it never passes: a required check does not pass, and an optional
one is skipped. (Each check's verdicts on real evidence are in ``test_checks.py``.)"""

from __future__ import annotations

import dataclasses

import pytest

from audits import CHECKS, Policy, Status, run_audit
from audits.checks.base import Check, CheckSettings
from forge_secure.errors import ForgeConfigError

NAMES = CHECKS.names()


@pytest.mark.parametrize("name", NAMES)
def test_every_check_declares_its_settings(name):
    cls = CHECKS.get(name)
    assert issubclass(cls, Check) and cls.name == name and cls.title and cls.description
    assert issubclass(cls.Settings, CheckSettings) and cls.Settings.check_name == name
    settings = cls.Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.enabled = False  # type: ignore[misc]
    assert cls.Settings.from_table(settings.to_dict()) == settings


@pytest.mark.parametrize("name", NAMES)
def test_every_check_refuses_bad_settings(name):
    cls = CHECKS.get(name)
    with pytest.raises(ForgeConfigError) as e:
        cls.Settings.from_table({"no_such_setting": 1})
    assert e.value.code == "policy.unknown_key"
    for f in dataclasses.fields(cls.Settings):
        default = getattr(cls.Settings(), f.name)
        if default is None:
            continue
        wrong = "text" if not isinstance(default, str) else 3
        with pytest.raises(ForgeConfigError) as e:
            cls.Settings(**{f.name: wrong})
        assert e.value.code == "policy.type", f"{name}.{f.name}"


@pytest.mark.parametrize("required", [True, False], ids=["required", "optional"])
@pytest.mark.parametrize("name", NAMES)
def test_no_check_passes_on_empty_evidence(name, required, tmp_path):
    evidence = tmp_path / "evidence"
    for folder in ("bundles", "plugins", "merged", "attacks", "ledgers"):  # the layout, every folder empty
        (evidence / folder).mkdir(parents=True)
    table = {name: CHECKS.get(name).Settings(required=required)}
    report = run_audit(Policy(name="contract", description="", checks=table), evidence)
    (result,) = [c for c in report.checks if c.name == name]
    statuses = {f.status for f in result.findings}
    assert Status.PASS not in statuses and statuses, statuses
    if not required:
        assert statuses == {Status.SKIP}, statuses
