"""The bench's tables: the tidy CSV (one row per cell and seed) and the summary across
seeds (mean and Student-t confidence interval, with n), rendered as Markdown and HTML
(jinja2).

The t-interval for a mean of n values with sample standard deviation s is
mean +- t_{(1+c)/2, n-1} s / sqrt(n) (Student 1908); with n = 1 there is no interval and
the tables say so instead of inventing one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from scipy import stats

from forge_secure.fileio import atomic_write_bytes

# one CSV row per (cell, seed): the grid coordinates, then what was measured
KEY_COLUMNS = ("epsilon", "rank", "lora", "merge", "attack")
COLUMNS = (
    *KEY_COLUMNS,
    "seed",
    "claimed_epsilon",  # the epsilon the accountant recorded (largest over the sites in the model)
    "delta",
    "accountant",
    "accuracy",  # utility on the union of the sites' test sets
    "utility_auc",
    "attack_auc",  # membership: ROC AUC, member = positive class
    "tpr_at_1pct_fpr",
    "fpr_reached_1pct",  # the FPR actually reached at that threshold (<= 1 %)
    "tpr_at_0.1pct_fpr",
    "empirical_epsilon",  # lower bound, Clopper-Pearson with a held-out threshold
    "empirical_ceiling",  # the largest such bound a perfect attack could show on that sample
    "canary_epsilon",  # one-run audit on the canaries (lower bound at 1 - p_target confidence)
    "canary_ceiling",  # the largest one-run bound a perfect attack could show with these guesses
    "canary_m",  # canaries of the model's sites (about half inserted)
    "canary_guesses",
    "canary_correct",
    "canary_acc_in",  # share of inserted canaries whose random label the model predicts
    "canary_acc_out",  # the same for the held-back ones (chance: 1 / classes)
    "canary_above_claim",
    "above_claim",  # an empirical lower bound (either) > claimed epsilon: a bug in the DP pipeline
    "n_members",
    "n_nonmembers",
    "references",
    "recon_success",  # reconstruction (informed adversary) success rate
    "recon_low",
    "recon_high",
    "recon_baseline",
    "recon_bound",  # the ReRo bound the DP guarantee gives
    "seconds",
    "cell_key",
)

# (column, heading, decimals) of the summary table
SUMMARY_METRICS = (
    ("accuracy", "accuracy", 3),
    ("utility_auc", "utility AUC", 3),
    ("attack_auc", "attack AUC", 3),
    ("tpr_at_1pct_fpr", "TPR @ 1% FPR", 3),
    ("empirical_epsilon", "threshold eps (LB)", 2),
    ("empirical_ceiling", "its ceiling", 2),
    ("canary_epsilon", "one-run eps (LB) per seed", 2),
    ("canary_ceiling", "its ceiling", 2),
    ("canary_acc_in", "canaries memorised", 2),
    ("canary_acc_out", "held back right", 2),
    ("recon_success", "recon success", 3),
    ("claimed_epsilon", "claimed eps", 2),
)
#: columns holding an epsilon lower bound, and the column of the ceiling that goes with each
BOUND_CEILINGS = {"empirical_epsilon": "empirical_ceiling", "canary_epsilon": "canary_ceiling"}


def _fmt_csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt_csv(r.get(c)) for c in COLUMNS])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Read the tidy CSV back (numbers as floats/ints, empty cells as NaN)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in ("lora", "merge", "attack", "cell_key", "accountant"):
                    row[k] = v
                elif k in ("above_claim", "canary_above_claim"):
                    row[k] = v == "true"
                elif k in ("rank", "seed", "n_members", "n_nonmembers", "references", "canary_m", "canary_guesses", "canary_correct"):
                    row[k] = int(v) if v else None
                else:
                    row[k] = float(v) if v else math.nan
            out.append(row)
    return out


def t_interval(values: Iterable[float | None], confidence: float = 0.95) -> tuple[int, float, float]:
    """(n, mean, half-width) of the Student-t interval over the finite values; the
    half-width is NaN when n < 2 (no interval from one value)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return 0, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return n, mean, math.nan
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return n, mean, half


def _sort_key(k: tuple) -> tuple:
    return tuple((0, x) if isinstance(x, (int, float)) else (1, str(x)) for x in k)


def summarize(rows: Sequence[dict[str, Any]], confidence: float = 0.95, p_target: float = 0.05) -> list[dict[str, Any]]:
    """One entry per cell: its coordinates, the number of seeds and, per metric, the
    ``(n, mean, half_width)`` across seeds; the claim (largest over seeds), the one-run audit
    pooled over seeds (:func:`attacks.bench.leakage.pooled_one_run`, at ``p_target``), the
    largest ceiling of each bound over seeds and the cell's verdict."""
    from .leakage import claim_of, pooled_one_run, verdict

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in KEY_COLUMNS), []).append(r)
    out = []
    for key in sorted(groups, key=_sort_key):
        members = groups[key]
        entry: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
        entry["seeds"] = len(members)
        entry["above_claim"] = sum(bool(r.get("above_claim")) for r in members)
        for col, _, _ in SUMMARY_METRICS:
            values = [r.get(col) for r in members]
            if values and all(v is not None and math.isinf(v) and v > 0 for v in values):
                entry[col] = (len(values), math.inf, math.nan)  # e.g. the claim without DP
            else:
                entry[col] = t_interval(values, confidence)
        entry["claim"] = claim_of(members)
        entry["max_ceiling"] = {
            c: max([float(r[c]) for r in members if r.get(c) is not None and math.isfinite(r[c])] or [math.nan])
            for c in BOUND_CEILINGS.values()
        }
        entry["pooled"] = pooled_one_run(members, p_target)
        entry["verdict"] = verdict(members, entry["pooled"])
        out.append(entry)
    return out


def _eps(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:g}"


def _cell(stat: tuple[int, float, float], decimals: int) -> str:
    n, mean, half = stat
    if n == 0:
        return "-"
    if math.isinf(mean):
        return "∞"
    text = f"{mean:.{decimals}f}"
    if not math.isnan(half):
        text += f" ± {half:.{decimals}f}"
    return text


def bound_cell(e: dict[str, Any], col: str, decimals: int = 2) -> str:
    """An epsilon bound across seeds, or "cannot tell" when the cell's finite claim is above
    the largest bound that column's sample could show in any seed (never a bare 0)."""
    from .leakage import CANNOT_TELL, cannot_tell

    if e[col][0] and cannot_tell(e["claim"], e["max_ceiling"][BOUND_CEILINGS[col]]):
        return CANNOT_TELL
    return _cell(e[col], decimals)


def pooled_cells(e: dict[str, Any]) -> tuple[str, str]:
    """(pooled one-run bound or "cannot tell", its ceiling) of a summary entry."""
    from .leakage import CANNOT_TELL, cannot_tell

    p = e.get("pooled")
    if p is None:
        return "-", "-"
    value = CANNOT_TELL if cannot_tell(e["claim"], p["ceiling"]) else f"{p['epsilon_lb']:.2f} ({p['v']}/{p['r']})"
    return value, f"{p['ceiling']:.2f}"


def table_rows(summary: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = (
        ["epsilon", "rank", "LoRA", "merge", "attack", "n"]
        + [h for _, h, _ in SUMMARY_METRICS]
        + ["one-run eps (LB) pooled over seeds (right / guesses)", "its ceiling", "verdict", "above claim"]
    )
    body = []
    for e in summary:
        body.append(
            [_eps(e["epsilon"]), str(e["rank"]), e["lora"], e["merge"], e["attack"], str(e["seeds"])]
            + [bound_cell(e, c, d) if c in BOUND_CEILINGS else _cell(e[c], d) for c, _, d in SUMMARY_METRICS]
            + list(pooled_cells(e))
            + [e["verdict"], str(e["above_claim"])]
        )
    return head, body


def _mean_only(text: str) -> str:
    """ "0.52 ± 0.10" -> "0.52"; words ("cannot tell") unchanged."""
    return text.split(" ± ")[0]


def terminal_rows(summary: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The few columns that matter, one row per cell: the full table is in summary.md/html."""
    ranks = len({e["rank"] for e in summary}) > 1
    head = [
        "eps",
        *(["r"] if ranks else []),
        "LoRA",
        "merge",
        "attack",
        "acc",
        "AUC",
        "thresh. eps",
        "one-run eps",
        "ceiling",
        "claim",
        "verdict",
    ]
    body = []
    for e in summary:
        pooled, ceiling = pooled_cells(e)
        if e.get("pooled") is None and e["canary_epsilon"][0]:
            pooled = bound_cell(e, "canary_epsilon")
        if pooled.endswith(")"):
            pooled = pooled.split(" (")[0]
        claim = "∞" if math.isinf(e["claim"]) else ("-" if math.isnan(e["claim"]) else f"{e['claim']:.2f}")
        body.append(
            [
                _eps(e["epsilon"]),
                *([str(e["rank"])] if ranks else []),
                e["lora"],
                e["merge"],
                e["attack"],
                _mean_only(_cell(e["accuracy"], 2)),
                _mean_only(_cell(e["attack_auc"], 2)),
                _mean_only(bound_cell(e, "empirical_epsilon")) if e["empirical_epsilon"][0] else "-",
                pooled,
                ceiling,
                claim,
                e["verdict"],
            ]
        )
    return head, body


def _legend(confidence: float, seeds: int) -> str:
    return (
        f"Mean ± half-width of the {confidence:.0%} Student-t interval across seeds "
        f"(n = {seeds} per cell unless the n column says otherwise; no interval when n = 1). "
        "Utility is on the union of the sites' test sets; membership attacks count members as "
        "the positive class. Two empirical epsilon lower bounds: the threshold-based one "
        "(Clopper-Pearson, threshold chosen on a held-out half of the candidate records, "
        "per attack) and the one-run audit (Steinke, Nasr, Jagielski 2023) on the canaries "
        "(per seed, and pooled over the seeds: independent runs on independent canaries), each at "
        "95% confidence and each beside its ceiling, the largest bound a perfect attack could "
        "show on that sample. 'cannot tell' marks a claim above every seed's ceiling: that "
        "sample could not contradict it. 'canaries memorised' / 'held back right': the share of "
        "inserted / held-back canaries whose random label the model predicts. Verdict: BUG (a "
        "bound above the claim), leaks (no DP, a bound above 0), no leak seen, consistent (the "
        "sample could have contradicted the claim and did not), cannot tell. 'above claim' "
        "counts seeds whose bound exceeds the claimed epsilon (a bug)."
    )


def markdown(summary: Sequence[dict[str, Any]], confidence: float, seeds: int) -> str:
    head, body = table_rows(summary)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return _legend(confidence, seeds) + "\n\n" + "\n".join(lines) + "\n"


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("attacks.bench", "."),
    autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
    undefined=jinja2.StrictUndefined,
)


def _img_src(rel: str, root: Path | None) -> str:
    """A plot's ``src``: the PNG itself as a data: URI when ``root`` holds it (the page then
    shows its plots wherever it is opened or sent), else the relative path."""
    if root is not None and (root / rel).is_file():
        import base64

        return "data:image/png;base64," + base64.b64encode((root / rel).read_bytes()).decode("ascii")
    return rel


def html(
    summary: Sequence[dict[str, Any]],
    confidence: float,
    seeds: int,
    *,
    title: str,
    plots: Sequence[str],
    flagged: Sequence[str],
    meta: dict[str, Any],
    embed_root: Path | None = None,
) -> str:
    """The HTML summary; ``plots`` are paths relative to the output directory, embedded from
    ``embed_root`` (the directory being written) when given."""
    head, body = table_rows(summary)
    figures = [{"name": p, "src": _img_src(p, embed_root)} for p in plots]
    return _ENV.get_template("summary.html.j2").render(
        title=title, legend=_legend(confidence, seeds), head=head, body=body, plots=figures, flagged=list(flagged), meta=meta
    )
