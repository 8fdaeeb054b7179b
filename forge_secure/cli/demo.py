"""`forge demo`: the whole forge-secure path on the bundled data, in stages.

1. ``keys``: every party makes its keys (consortium admin, the three sites, the maintainer
   who receives submissions, the auditor), the CKKS key holder makes the consortium's
   homomorphic context, and the admin signs a trust roster listing the site and auditor keys;
2. ``sites``: the auditor issues each site 256 canaries (half held back, sealed grant); three
   simulated hospitals (the bundled breast-cancer shards, non-IID) each train a DP FFA-LoRA
   plugin on their coin-flip training set plus the canaries at epsilon 8, with noise from a
   fresh OS secret and their own budget ledger, seal the secret and recipe to the auditor
   (replay envelope), and are evaluated on their test split;
3. ``seal``: each site seals its plugin, and its CKKS-encrypted contribution (``w_i * B_i``
   under the public context), into ``.forge`` bundles for the maintainer;
4. ``open``: the maintainer verifies every bundle against the roster and opens it (replay
   store and roster state of the maintainer's own);
5. ``merge``: homomorphic Fusion (the maintainer, as aggregator, adds the ciphertexts with the
   public context only; the key holder decrypts the one aggregate, k-of-n) checked against
   the plaintext FFA merge, and a static Mixture; all evaluated on the pooled test splits;
6. ``attacks``: membership inference (RMIA with a few reference models) and reconstruction
   (the informed adversary) on a site plugin and on the merged model;
7. ``audit``: the evidence directory (``audits/README.md`` layout) is judged by the default
   policy on site: the auditor replays every site's training from its envelope and runs the
   one-run audit on its canaries; the signed report (JSON, HTML, PDF) is written.
8. ``hub``: the same submissions go through the consortium hub embedded on loopback (push,
   pull, publish the merged version with the report, fetch through TUF, verify the log).

Each stage is a function ``stage(ctx) -> None`` that reads and extends the context dict; its
printer (if any) shows a short summary as soon as it ends. A library piece that fails with a
:class:`ForgeError` in the attack stages is reported as *skipped*, with the reason; nothing
is made up in its place.

The demo writes only inside ``--out`` (default ``./forge-demo``): it is built in a temporary
sibling and renamed into place at the end, so a failed run leaves nothing. A rerun replaces
its own previous output, recognised by the marker file ``.forge-demo.json``; any other
non-empty directory is refused. Keys, the roster and its remembered state, replay stores,
sequence counters, ledgers and the CKKS release log live inside the demo directory; for the
duration of the run ``FORGE_HOME`` points at ``<out>/home`` (restored afterwards), so
nothing lands in the user's own forge home (caches too, unless ``FORGE_CACHE`` is set).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import ForgeFileError
from ..fileio import atomic_directory, atomic_write_json
from . import _common
from .demo_release import _print_attacks, _print_audit, _print_hub, stage_attacks, stage_audit, stage_hub
from .demo_stages import (  # noqa: F401 (re-exported)
    ATTACKED_SITE,
    DEMO_EPSILON,
    DEMO_RECON_TRIALS,
    DEMO_REFERENCES,
    DEMO_SITES,
    _print_keys,
    _print_merge,
    _print_open,
    _print_seal,
    _print_sites,
    stage_keys,
    stage_merge,
    stage_open,
    stage_seal,
    stage_sites,
)

MARKER = ".forge-demo.json"

STAGES: list[tuple[str, Callable[[dict], None]]] = [
    ("keys", stage_keys),
    ("sites", stage_sites),
    ("seal", stage_seal),
    ("open", stage_open),
    ("merge", stage_merge),
    ("attacks", stage_attacks),
    ("audit", stage_audit),
    ("hub", stage_hub),
]

PRINTERS: dict[str, Callable[[dict], None]] = {
    "sites": _print_sites,
    "keys": _print_keys,
    "seal": _print_seal,
    "open": _print_open,
    "merge": _print_merge,
    "attacks": _print_attacks,
    "audit": _print_audit,
    "hub": _print_hub,
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the `forge` parser."""
    p = sub.add_parser(
        "demo",
        help="run the whole forge-secure path on the bundled data (three simulated hospitals)",
        description="Three simulated hospitals train DP plugins on the bundled breast-cancer data, seal them, "
        "the maintainer verifies, opens and merges them (homomorphic Fusion and Mixture), both "
        "attack suites stress-test a site plugin and the merged model, and an audit writes a "
        "signed report. Prints what each stage did and where the report is.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("forge-demo"), help="output directory (default ./forge-demo); a previous demo there is replaced"
    )
    p.add_argument("--epsilon", type=float, default=DEMO_EPSILON, help=f"each site's target epsilon (default {DEMO_EPSILON:g})")
    p.add_argument(
        "--references", type=int, default=DEMO_REFERENCES, help=f"reference models of the membership attack (default {DEMO_REFERENCES})"
    )
    p.add_argument(
        "--recon-trials",
        type=int,
        default=DEMO_RECON_TRIALS,
        help=f"games of the informed-adversary reconstruction attack (default {DEMO_RECON_TRIALS})",
    )
    p.add_argument(
        "--stop-after", choices=[n for n, _ in STAGES], default=None, help="run the stages up to and including this one (default: all)"
    )
    _common.add_json_flag(p)
    p.set_defaults(func=cmd_demo)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ForgeFileError(f"{out} exists and is not a directory", fix="choose another --out", code="demo.out_exists")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ForgeFileError(
            f"{out} is not empty and was not written by forge demo",
            fix="choose another --out, or remove the directory yourself",
            code="demo.out_exists",
        )


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (reference-model workers)."""
    try:
        import resource
    except ImportError:  # not on POSIX: this process only
        return time.process_time()
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


@contextlib.contextmanager
def _demo_environment(home: Path):
    """FORGE_HOME inside the demo and one torch thread (tiny models: threads only add
    overhead), both restored afterwards."""
    import torch

    old_home, old_threads = os.environ.get("FORGE_HOME"), torch.get_num_threads()
    os.environ["FORGE_HOME"] = str(home)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        if old_home is None:
            os.environ.pop("FORGE_HOME", None)
        else:
            os.environ["FORGE_HOME"] = old_home
        torch.set_num_threads(old_threads)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..errors import ForgeValueError

    out = Path(args.out)
    _check_target(out)
    if args.references < 1 or args.recon_trials < 1:
        raise ForgeValueError(
            "--references and --recon-trials must be at least 1", fix="e.g. --references 4 --recon-trials 20", code="demo.settings"
        )
    stages = STAGES
    if args.stop_after:
        names = [n for n, _ in STAGES]
        stages = STAGES[: names.index(args.stop_after) + 1]
    ctx: dict = {
        "out": out.resolve(),
        "epsilon": float(args.epsilon),
        "references": int(args.references),
        "recon_trials": int(args.recon_trials),
        "skipped": [],
    }
    show = not args.json
    t0, c0 = time.perf_counter(), _cpu_seconds()
    if show:
        _common.console.print(
            f"forge demo: three simulated hospitals, from DP training to a signed audit report, in {out}/ "
            f"({len(stages)} stages; a few minutes)",
            highlight=False,
            soft_wrap=True,
        )
    timings = {}
    with atomic_directory(out, overwrite=True) as work, _demo_environment(work / "home"):
        ctx["work"] = work
        for name, stage in stages:
            s0, sc0 = time.perf_counter(), _cpu_seconds()
            stage(ctx)
            timings[name] = {"wall_seconds": round(time.perf_counter() - s0, 1), "cpu_seconds": round(_cpu_seconds() - sc0, 1)}
            if show and name in PRINTERS:
                PRINTERS[name](ctx)
                _common.console.print(f"  ({timings[name]['wall_seconds']:.0f} s)", style="dim")
        ctx["stages"] = [n for n, _ in stages]
        ctx["stage_seconds"] = timings
        ctx["seconds"] = round(time.perf_counter() - t0, 2)
        ctx["cpu_seconds"] = round(_cpu_seconds() - c0, 1)
        summary = {k: v for k, v in ctx.items() if k not in ("work", "out") and not k.startswith("_")}
        summary["out"] = str(ctx["out"])
        atomic_write_json(work / "summary.json", _common._jsonable(summary))
        atomic_write_json(work / MARKER, {"forge_demo": __version__, "stages": [n for n, _ in stages]})
    if args.json:
        _common.emit_json(summary)
        return 0
    c = _common.console
    c.print(
        f"Done in {ctx['seconds']:.0f} s ({ctx['cpu_seconds']:.0f} s of CPU). Everything is in {out}/ (summary: {out}/summary.json).",
        highlight=False,
        soft_wrap=True,
    )
    for s in ctx["skipped"]:
        c.print(_common.styled(("skipped", "yellow"), f" {s['what']}: {s['reason']}"), highlight=False, soft_wrap=True)
    audit = ctx.get("audit")
    if audit and not audit.get("skipped"):
        colour = "green" if audit["verdict"].upper() == "PASS" else "red"
        c.print(
            _common.styled(
                "Audit verdict: ",
                (audit["verdict"].upper(), f"bold {colour}"),
                f". Report: {audit['report_dir']}/report.html (also report.json, report.pdf; signed: report.sig.json). "
                f"Check the signature with: forge verify-report {audit['report_dir']} --key {audit['auditor_public_key']}",
            ),
            highlight=False,
            soft_wrap=True,
        )
    elif "sites" in ctx:
        c.print(f"Inspect a plugin with: forge plugin show {out}/plugins/site-1", highlight=False, soft_wrap=True)
    return 0
