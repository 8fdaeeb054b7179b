"""The check registry and the settings base class.

A check is a class registered by name in :data:`CHECKS`. It declares a frozen ``Settings``
dataclass (its table in the policy, ``[checks.<name>]``), a ``title`` and a
``description``, and implements ``run(evidence, settings, *, progress) -> list[Finding]``.
Settings are validated on construction: types are checked against the annotations, and
each class adds its own range checks in ``validate()``.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from forge_secure.errors import ForgeConfigError
from forge_secure.registry import Registry

from ..findings import Finding

CHECKS: Registry[type[Check]] = Registry("audit check")

ProgressFn = Callable[[str, int, int], None]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against a simple annotation (bool, int, float, str, tuple[str, ...],
    ``X | None``); lists become tuples. Raise a ForgeConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ForgeConfigError(
                    f"policy setting {where} is a number too large for a float ({len(str(value))} digits)",
                    fix="give a number below 1e308",
                    code="policy.type",
                ) from None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        tp = f"list of {_type_name(args[0])}"
    raise ForgeConfigError(
        f"policy setting {where} = {value!r} has the wrong type (expected {_type_name(tp) if not isinstance(tp, str) else tp})",
        fix=f"give {where} a value of that type",
        code="policy.type",
    )


@dataclass(frozen=True)
class CheckSettings:
    """Settings every check has. ``required``: when the evidence this check needs is absent,
    the check FAILS (``true``) or is skipped (``false``)."""

    enabled: bool = True
    required: bool = True

    check_name: ClassVar[str] = "?"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, _coerce(value, hints[f.name], f"checks.{self.check_name}.{f.name}"))
        self.validate()

    def validate(self) -> None:
        """Range checks; subclasses raise :func:`bad` for an out-of-range value."""

    def bad(self, field_name: str, value: Any, expected: str) -> ForgeConfigError:
        return ForgeConfigError(
            f"policy setting checks.{self.check_name}.{field_name} = {value!r} is out of range ({expected})",
            fix=f"set checks.{self.check_name}.{field_name} to a value that is {expected}",
            code="policy.range",
        )

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_table(cls, table: dict) -> CheckSettings:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise ForgeConfigError(
                f"unknown policy setting(s) {', '.join(unknown)} in [checks.{cls.check_name}]",
                fix=f"allowed settings are: {', '.join(allowed)}",
                code="policy.unknown_key",
            )
        return cls(**table)


class Check(abc.ABC):
    """Base class of a registered check."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Settings: ClassVar[type[CheckSettings]] = CheckSettings

    @abc.abstractmethod
    def run(self, evidence, settings: CheckSettings, *, progress: ProgressFn | None = None) -> list[Finding]:
        """The findings of this check on ``evidence`` under ``settings``."""


def register_check(name: str):
    """Class decorator: register a check and bind its settings class to its name."""

    def deco(cls: type[Check]) -> type[Check]:
        cls.name = name
        cls.Settings.check_name = name
        CHECKS.add(name, cls)
        return cls

    return deco
