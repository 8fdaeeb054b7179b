"""The contracts of the bench registries, run over every entry the way scikit-learn's
``parametrize_with_checks`` runs every estimator:

- :data:`attacks.bench.BENCH_ATTACKS`: every bench attack accepts its own defaults, refuses an
  unknown key, a value of the wrong type and a negative number with a ``ForgeConfigError``, and
  (for membership attacks) builds the registered membership attack of that name, whose
  reference needs its default reference count meets;
- :func:`attacks.bench.merge_registry`: every merge method the bench offers is ``none``,
  ``mixture`` or a registered Fusion method, and every Fusion method is offered.
"""

from __future__ import annotations

import pytest

from attacks.bench import BENCH_ATTACKS, config_from_dict, merge_registry
from attacks.membership import MEMBERSHIP_ATTACKS, make_attack
from forge_secure.errors import ForgeConfigError, ForgeError
from forge_secure.merge.fusion import FUSIONS

NAMES = BENCH_ATTACKS.names()
KINDS = ("membership", "reconstruction")


@pytest.mark.parametrize("name", NAMES)
def test_every_bench_attack_accepts_its_defaults(name):
    spec = BENCH_ATTACKS.get(name)
    assert spec.name == name and spec.kind in KINDS and spec.defaults
    spec.validate(dict(spec.defaults), where=f"attack.{name}")
    cfg = config_from_dict({"grid": {"attack": [name]}, "attack": {name: dict(spec.defaults)}})
    assert cfg.attack_settings(name) == dict(spec.defaults)
    for key, choices in spec.choices.items():
        assert spec.defaults[key] in choices


@pytest.mark.parametrize("name", NAMES)
def test_every_bench_attack_refuses_bad_settings(name):
    spec = BENCH_ATTACKS.get(name)
    with pytest.raises(ForgeConfigError) as e:
        spec.validate({"no_such_key": 1}, where=f"attack.{name}")
    assert e.value.code == "bench.config.unknown_key"
    for key, default in spec.defaults.items():
        wrong = "text" if not isinstance(default, str) else 1.5
        with pytest.raises(ForgeConfigError) as e:
            spec.validate({key: wrong}, where=f"attack.{name}")
        assert e.value.code == "bench.config.bad_value" and key in str(e.value)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            with pytest.raises(ForgeConfigError) as e:
                spec.validate({key: type(default)(-1)}, where=f"attack.{name}")
            assert e.value.code == "bench.config.bad_value"
    with pytest.raises(ForgeError):
        config_from_dict({"grid": {"attack": [name]}, "attack": {name: {"no_such_key": 1}}})


@pytest.mark.parametrize("name", [n for n in NAMES if BENCH_ATTACKS.get(n).kind == "membership"])
def test_every_membership_bench_attack_builds_the_registered_attack(name):
    spec = BENCH_ATTACKS.get(name)
    assert name in MEMBERSHIP_ATTACKS
    settings = {k: v for k, v in spec.defaults.items() if k not in ("references", "population")}
    attack = make_attack(name, **settings)
    assert attack.get_params() == {**attack.get_params(), **settings}
    assert attack.min_references() <= spec.defaults["references"]


def test_merge_methods_are_the_light_ones_and_every_fusion_method():
    reg = merge_registry()
    assert set(reg.names()) == {"none", "mixture", *FUSIONS.names()}
    for name in reg.names():
        assert reg.get(name) in ("none", "mixture", "fusion")
        assert (reg.get(name) == "fusion") == (name in FUSIONS)
    with pytest.raises(ForgeError):
        reg.get("average-of-vibes")
