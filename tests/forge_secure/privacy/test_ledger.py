"""The budget ledger: composition, refusal with figures, concurrency, corruption."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from forge_secure.errors import ForgeBudgetError, ForgeValueError
from forge_secure.privacy import Ledger, TrainConfig, compute_epsilon, train_plugin

H1 = [(2.0, 0.3, 20)]
H2 = [(3.0, 1.0, 1)]


def test_compose_record_and_refuse(tmp_path):
    led = Ledger.open("site-1", "breast-cancer/site-1", budget=6.0, root=tmp_path)
    assert led.history() == [] and led.check(H1, 1e-3, accountant="rdp") == pytest.approx(compute_epsilon(H1, 1e-3, "rdp"))
    led.record(H1, kind="train", delta=1e-3, accountant="rdp", note={"run": 1})
    led.record(H2, kind="synth", delta=1e-3, accountant="rdp")
    assert led.history() == H1 + H2
    assert led.spent(1e-3) == pytest.approx(compute_epsilon(H1 + H2, 1e-3, "rdp"))
    assert led.accountant == "rdp" and led.budget == 6.0
    big = [(1.0, 0.5, 200)]
    with pytest.raises(ForgeBudgetError) as e:
        led.check(big, 1e-3, accountant="rdp")
    text = str(e.value)
    assert e.value.code == "budget.exceeded"
    total = compute_epsilon(H1 + H2 + big, 1e-3, "rdp")
    for figure in (f"{total:.3f}", f"{led.spent(1e-3):.3f}", "budget 6", "site-1"):
        assert figure in text, (figure, text)
    with pytest.raises(ForgeBudgetError):  # record re-checks under the lock
        led.record(big, kind="train", delta=1e-3, accountant="rdp")
    assert len(Ledger.open("site-1", "breast-cancer/site-1", None, root=tmp_path).records()) == 2
    # a reopened ledger keeps its budget; a new budget is recorded as an entry
    again = Ledger.open("site-1", "breast-cancer/site-1", budget=None, root=tmp_path)
    assert again.budget == 6.0
    raised = Ledger.open("site-1", "breast-cancer/site-1", budget=100.0, root=tmp_path)
    assert raised.budget == 100.0 and [e["kind"] for e in raised.entries()] == ["budget", "train", "synth", "budget"]
    assert [led.site for led in Ledger.list_all(root=tmp_path)] == ["site-1"]


def test_training_refused_before_it_starts(tab_base, tab_train, tmp_path):
    led = Ledger.open("site-1", "bc/site-1", budget=2.0, root=tmp_path / "ledgers")
    with pytest.raises(ForgeBudgetError) as e:
        train_plugin(
            TrainConfig(noise_multiplier=0.8, epochs=20, accountant="rdp"),
            tab_train,
            site="site-1",
            base=tab_base,
            ledger=led,
            out=tmp_path / "p",
        )
    assert "budget 2" in str(e.value)
    assert not (tmp_path / "p").exists() and led.records() == []
    with pytest.raises(ForgeBudgetError) as e:  # no DP = unbounded epsilon: refused where a budget exists
        train_plugin(TrainConfig(no_dp=True, epochs=1), tab_train, site="site-1", base=tab_base, ledger=led)
    assert "unbounded" in str(e.value)
    plugin = train_plugin(
        TrainConfig(noise_multiplier=3.0, epochs=2, accountant="rdp"),
        tab_train,
        site="site-1",
        base=tab_base,
        ledger=led,
        out=tmp_path / "q",
    )
    (rec,) = led.records()
    assert rec["kind"] == "train" and rec["history"] == [[3.0, plugin.meta["dp"]["sample_rate"], plugin.meta["dp"]["steps"]]]
    assert rec["epsilon"] == pytest.approx(plugin.meta["dp"]["epsilon"])


WRITER = """
import sys
from forge_secure.privacy.ledger import Ledger
root, tag = sys.argv[1], sys.argv[2]
led = Ledger.open("site-9", "shared", None, root=root)
for i in range(8):
    led.record([(2.0, 0.1, 1)], kind="train", delta=1e-4, accountant="rdp", note={"writer": tag, "i": i})
"""


def test_two_processes_append_concurrently(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), t], stderr=subprocess.PIPE, text=True) for t in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    recs = Ledger.open("site-9", "shared", None, root=tmp_path).records()  # verifies the chain
    assert len(recs) == 16 and [r["seq"] for r in recs] == list(range(16))
    assert sorted((r["note"]["writer"], r["note"]["i"]) for r in recs) == sorted((t, i) for t in "ab" for i in range(8))


def _ledger_with_entries(tmp_path):
    led = Ledger.open("site-1", "d", None, root=tmp_path)
    for s in (2.0, 3.0, 4.0):
        led.record([(s, 0.2, 5)], kind="train", delta=1e-4, accountant="rdp")
    return led


def _damage_truncate(p):
    p.write_bytes(p.read_bytes()[:-7])


def _damage_bad_json(p):
    lines = p.read_bytes().splitlines(keepends=True)
    lines[1] = b"{not json\n"
    p.write_bytes(b"".join(lines))


def _damage_tamper(p):
    lines = p.read_text().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["history"][0][0] = 40.0  # pretend far more noise was used
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    p.write_text("".join(lines))


def _damage_drop_last(p):
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:-1]))


def _damage_drop_middle(p):
    lines = p.read_text().splitlines(keepends=True)
    p.write_text(lines[0] + lines[2])


def _damage_head(p):
    p.with_suffix(".head").unlink()


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_bad_json, _damage_tamper, _damage_drop_last, _damage_drop_middle, _damage_head]
)
def test_corruption_detected(tmp_path, damage):
    led = _ledger_with_entries(tmp_path)
    damage(led.path)
    with pytest.raises(ForgeBudgetError) as e:
        Ledger.open("site-1", "d", None, root=tmp_path)
    assert e.value.code == "ledger.corrupt"
    assert "restore" in str(e.value).lower() and str(led.path) in str(e.value)
    with pytest.raises(ForgeBudgetError):
        led.record([(2.0, 0.2, 5)], kind="train", delta=1e-4, accountant="rdp")


def test_bad_names_and_values(tmp_path):
    for site in ("", "../x", "a/b"):
        with pytest.raises(ForgeValueError):
            Ledger.open(site, "d", None, root=tmp_path)
    with pytest.raises(ForgeValueError):
        Ledger.open("site-1", "d", -1.0, root=tmp_path)
    led = Ledger.open("site-1", "d", None, root=tmp_path)
    with pytest.raises(ForgeValueError):
        led.record([], kind="train", delta=1e-4)
    with pytest.raises(ForgeValueError):
        led.record([(1.0, 0.2, 5)], kind="budget", delta=1e-4)
