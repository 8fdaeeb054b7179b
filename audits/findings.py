"""The findings model: what a check concluded, about what, on which evidence, and what to do.

Everything here is a frozen dataclass holding plain JSON-friendly values (str, int, float,
bool, None, lists and dicts of them), so a report can be rendered, hashed and signed without
any further conversion. Plots are kept as *data* (:class:`Plot`), never as images: the
renderers draw them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from forge_secure.errors import ForgeValueError
from forge_secure.numbers import encode


class Status(str, Enum):
    """Outcome of one finding or one check. Ordered by severity:
    FAIL > INCONCLUSIVE > WARN > PASS > SKIP.

    INCONCLUSIVE: the check ran, but its evidence cannot settle the question either way (e.g.
    the claimed epsilon is above the largest epsilon its sample could demonstrate even for a
    perfect attack). It ranks above WARN because a WARN is a concern the evidence *did*
    measure, while an INCONCLUSIVE check vouches for nothing; the policy's
    ``[verdict] inconclusive_fails`` decides whether it fails the audit.
    """

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"  # the check was not applicable (and the policy does not require it)
    INCONCLUSIVE = "inconclusive"  # the evidence cannot tell; the policy decides whether that fails

    @property
    def severity(self) -> int:
        return {"skip": 0, "pass": 1, "warn": 2, "inconclusive": 3, "fail": 4}[self.value]

    @property
    def needs_remedy(self) -> bool:
        return self in (Status.FAIL, Status.WARN, Status.INCONCLUSIVE)

    @classmethod
    def worst(cls, statuses: Iterable[Status]) -> Status:
        items = list(statuses)
        if not items:
            return cls.SKIP
        return max(items, key=lambda s: s.severity)


def _plain(value: Any, where: str) -> Any:
    """Freeze a value into JSON-friendly data; non-finite floats become the strings
    ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no literal for them)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return encode(value)  # the one codec: "inf", "-inf", "nan"
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return _plain(value.item(), where)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy array
        return _plain(value.tolist(), where)
    raise ForgeValueError(
        f"evidence value at {where} has type {type(value).__name__}, which a report cannot hold",
        fix="convert it to a number, string, list or dict before adding it to a finding",
        code="audit.evidence_type",
    )


@dataclass(frozen=True)
class Plot:
    """Data for one chart. ``kind`` is ``"roc"`` (series of {label, fpr, tpr}, drawn log-log)
    or ``"bars"`` (series of {label, value, optional claimed / bound markers}; a bar is red
    when its value exceeds the limit line, its claimed value or its bound)."""

    kind: str
    title: str
    series: tuple[dict, ...]
    x_label: str = ""
    y_label: str = ""
    limit: float | None = None
    limit_label: str = ""

    KINDS = ("roc", "bars")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ForgeValueError(f"unknown plot kind {self.kind!r}", fix=f"use one of: {', '.join(self.KINDS)}", code="audit.plot_kind")
        object.__setattr__(self, "series", tuple(_plain(dict(s), "plot.series") for s in self.series))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "title": self.title,
            "series": [dict(s) for s in self.series],
            "x_label": self.x_label,
            "y_label": self.y_label,
            "limit": _plain(self.limit, "plot.limit"),
            "limit_label": self.limit_label,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plot:
        limit = d.get("limit")
        if isinstance(limit, str):
            limit = float(limit)
        return cls(
            kind=d["kind"],
            title=d["title"],
            series=tuple(d["series"]),
            x_label=d.get("x_label", ""),
            y_label=d.get("y_label", ""),
            limit=limit,
            limit_label=d.get("limit_label", ""),
        )


#: What a finding's conclusion rests on, strongest first.
#: ``verified``: re-derived from signed or auditor-produced data, or by replay;
#: ``re-derived``: recomputed by the audit from values the site recorded (its parameters, its
#: per-record signals): consistent, but only as true as what the site wrote down;
#: ``claimed``: the site's word, not checked against anything the site does not control.
BASES = ("verified", "re-derived", "claimed")

#: The claims of a plugin that the per-plugin table of a report lists, in this order.
CLAIMS = ("dp-parameters", "epsilon", "delta", "data-commitment", "weights-binding", "membership-leakage")

CLAIM_TITLES = {
    "dp-parameters": "DP parameters (noise, sampling, steps)",
    "epsilon": "epsilon",
    "delta": "delta",
    "data-commitment": "data commitment (rows, canaries)",
    "weights-binding": "weights bound to a signed bundle",
    "membership-leakage": "membership leakage",
}


@dataclass(frozen=True)
class Finding:
    """One conclusion of a check about one subject (a bundle, a plugin, a site, ...).

    ``evidence`` holds the figures the conclusion rests on (re-derived values next to the
    claimed ones); ``remedy`` says what to do when the status is not PASS.

    ``plugin`` names the plugin the finding is about (its evidence path, e.g.
    ``plugins/site-1``) when the subject is something else (an attack file, a bundle);
    ``claim`` is which of that plugin's claims (:data:`CLAIMS`) it judges, and ``basis``
    (:data:`BASES`) what the judgement rests on. All three may stay empty.
    """

    check: str
    status: Status
    subject: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    remedy: str = ""
    plots: tuple[Plot, ...] = ()
    plugin: str = ""
    claim: str = ""
    basis: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))
        object.__setattr__(self, "evidence", _plain(dict(self.evidence), f"{self.check}.evidence"))
        object.__setattr__(self, "plots", tuple(self.plots))
        if self.claim and self.claim not in CLAIMS:
            raise ForgeValueError(
                f"finding {self.check}/{self.subject} names unknown claim {self.claim!r}",
                fix=f"use one of: {', '.join(CLAIMS)}",
                code="audit.claim",
            )
        if self.basis and self.basis not in BASES:
            raise ForgeValueError(
                f"finding {self.check}/{self.subject} has unknown basis {self.basis!r}",
                fix=f"use one of: {', '.join(BASES)}",
                code="audit.basis",
            )
        if self.status.needs_remedy and not self.remedy:
            raise ForgeValueError(
                f"finding {self.check}/{self.subject} is {self.status.value} without a remedy",
                fix="say what the reader should do about it",
                code="audit.no_remedy",
            )

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "status": self.status.value,
            "subject": self.subject,
            "summary": self.summary,
            "evidence": dict(self.evidence),
            "remedy": self.remedy,
            "plots": [p.to_dict() for p in self.plots],
            "plugin": self.plugin,
            "claim": self.claim,
            "basis": self.basis,
        }

    def replace(self, **changes) -> Finding:
        """A copy with some fields changed (e.g. a plot added)."""
        import dataclasses

        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        return cls(
            check=d["check"],
            status=Status(d["status"]),
            subject=d["subject"],
            summary=d["summary"],
            evidence=d.get("evidence", {}),
            remedy=d.get("remedy", ""),
            plots=tuple(Plot.from_dict(p) for p in d.get("plots", [])),
            plugin=d.get("plugin", ""),
            claim=d.get("claim", ""),
            basis=d.get("basis", ""),
        )


@dataclass(frozen=True)
class CheckResult:
    """All findings of one check, with the settings it ran under."""

    name: str
    title: str
    description: str
    settings: Mapping[str, Any]
    findings: tuple[Finding, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))
        object.__setattr__(self, "settings", _plain(dict(self.settings), f"{self.name}.settings"))

    @property
    def status(self) -> Status:
        return Status.worst(f.status for f in self.findings)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "status": self.status.value,
            "settings": dict(self.settings),
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, d: dict) -> CheckResult:
        return cls(
            name=d["name"],
            title=d["title"],
            description=d["description"],
            settings=d.get("settings", {}),
            findings=tuple(Finding.from_dict(f) for f in d["findings"]),
        )
