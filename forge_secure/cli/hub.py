"""`forge push` and `forge hub ...`: the consortium hub. Thin: parse, call
:mod:`forge_secure.hub`, print."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from . import _common


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 512M or 2G") from None


def _budget(text: str) -> tuple[str, float]:
    site, sep, eps = text.partition("=")
    try:
        if not sep or not site:
            raise ValueError
        return site, float(eps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SITE=EPSILON") from None


def _out(args, obj, lines: list[tuple[str, object]], title: str) -> int:
    if args.json:
        _common.emit_json(obj)
        return 0
    _common.console.print(str(title), style="bold", highlight=False)
    for k, v in lines:
        _common.console.print(f"  {k:<14} {escape(str(v))}", highlight=False, soft_wrap=True)
    return 0


def _serve(args) -> int:
    from ..hub.server import build_hub, check_bind, serve

    check_bind(args.host, args.tls_cert, args.insecure_bind)
    ts_key = None
    if args.timestamp_key:
        from ..crypto import load_signing_key, read_passphrase

        ts_key = load_signing_key(args.timestamp_key, read_passphrase(None, args.timestamp_passphrase_env))
    lifetime = None
    if args.timestamp_lifetime:
        from ..crypto import _time

        lifetime = _time.parse_when(args.timestamp_lifetime, "--timestamp-lifetime", reference=0)
    hub = build_hub(
        store=args.store,
        db_url=args.db,
        key_dir=args.key_dir,
        roster=args.roster,
        origin=args.origin,
        max_bundle=args.max_bundle,
        budgets=dict(args.budget or []),
        default_budget=args.default_budget,
        timestamp_key=ts_key,
        timestamp_lifetime=lifetime,
    )
    _common.console_err.print(
        f"forge hub {escape(hub.origin)} on http://{args.host}:{args.port} (hub key {escape(hub.keys.verifier)})",
        highlight=False,
        soft_wrap=True,
    )
    serve(hub, host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key, insecure_bind=args.insecure_bind)
    return 0


def _push(args) -> int:
    from ..hub.client import push

    res = push(args.bundle, args.hub, receipt_out=args.receipt, hub_key=args.hub_key)
    e = res["entry"]
    return _out(
        args,
        res,
        [
            ("site", e["site"]),
            ("sequence", e["sequence"]),
            ("submission", e["submission_id"]),
            ("log entry", f"{res['index']} of {res['log_size']}"),
            ("receipt", args.receipt or "(not saved: give --receipt)"),
        ],
        "accepted by the hub",
    )


def _verify_log(args) -> int:
    from ..hub.client import verify_log

    res = verify_log(args.hub, receipt=args.receipt, hub_key=args.hub_key)
    lines = [
        ("log", res["origin"]),
        ("size", res["size"]),
        ("root", res["root"]),
        (
            "consistent",
            f"with the checkpoint of size {res['previous']} saved before" if res["previous"] is not None else "first checkpoint saved",
        ),
    ]
    if res["receipt"]:
        lines.append(("receipt", f"entry {res['receipt']['index']} ({res['receipt']['kind']}) is in the log"))
    return _out(args, res, lines, "the hub's log checks out")


def _pull(args) -> int:
    from ..hub.client import pull

    res = pull(args.hub, args.out, site=args.site)
    return _out(
        args,
        res,
        [("bundles", len(res["submissions"])), ("into", res["out"]), ("lineage", f"{res['out']}/pulled.json")],
        "pulled accepted submissions",
    )


def _publish(args) -> int:
    from ..hub.client_release import publish

    res = publish(args.hub, args.plugin, args.key, version=args.version, pulled=args.pulled, audit=args.audit, notes=args.notes)
    return _out(
        args,
        res,
        [("version", res["version"]), ("log entry", res["log_index"]), ("targets", ", ".join(res["targets"]))],
        "release published",
    )


def _fetch(args) -> int:
    from ..hub.client_release import fetch

    res = fetch(args.hub, args.version, args.out, args.roster, root=args.root)
    return _out(
        args,
        res,
        [
            ("version", res["version"]),
            ("into", res["out"]),
            ("plugin sha256", res["plugin_sha256"]),
            ("lineage", ", ".join(f"{x['site']}#{x['log_index']}" for x in res["lineage"])),
            ("audit", (res["audit"] or {}).get("sha256", "none")),
        ],
        "release fetched and verified",
    )


def _budget_cmd(args) -> int:
    from ..hub.client_release import set_budget

    res = set_budget(args.hub, args.site, args.epsilon, args.key)
    return _out(args, res, [("site", res["site"]), ("epsilon", res["epsilon"]), ("log entry", res["log_index"])], "budget set")


def _roster_cmd(args) -> int:
    from ..hub.client_release import send_roster

    res = send_roster(args.hub, args.roster)
    return _out(args, res, [("version", res["version"]), ("changed", res["changed"])], "roster sent")


def _timestamp(args) -> int:
    from ..hub.client import fetch_timestamp

    res = fetch_timestamp(args.hub, args.out, roster=args.roster, root=args.root)
    return _out(
        args,
        res,
        [
            ("written", res["out"]),
            ("consortium", res["consortium"]),
            ("roster", f"version {res['roster_version']}"),
            ("issued", res["issued"]),
            ("expires", res["expires"]),
        ],
        "timestamp fetched and verified",
    )


def _info(args) -> int:
    from ..hub.client import _check_url, _request

    res = _request("GET", f"{_check_url(args.hub)}/v1/info").json()
    return _out(args, res, sorted(res.items()), "hub")


def _hub_flag(p, required=True):
    p.add_argument("--hub", required=required, metavar="URL", help="the hub's URL, e.g. https://hub.example.org")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="send a sealed bundle to the consortium hub (verified there before it is stored)")
    p.add_argument("bundle", type=Path, help="the .forge bundle written by 'forge seal'")
    _hub_flag(p)
    p.add_argument("--receipt", type=Path, help="write the hub's signed receipt here")
    p.add_argument("--hub-key", help="pin the hub's log key (signed-note verifier key); default: trust on first use")
    _common.add_json_flag(p)
    p.set_defaults(func=_push)

    hub = sub.add_parser("hub", help="the consortium hub: serve, verify its log, pull, publish and fetch releases")
    hs = hub.add_subparsers(dest="hub_command", metavar="COMMAND")

    s = hs.add_parser("serve", help="run the hub (ASGI, uvicorn) on 127.0.0.1")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; see README for TLS)")
    s.add_argument("--port", type=int, default=8613)
    s.add_argument("--db", help="database URL (default: SQLite under $FORGE_HOME/hub; or postgresql://USER@HOST:PORT/DB)")
    s.add_argument("--store", type=Path, help="content-addressed bundle store (default $FORGE_HOME/hub/store)")
    s.add_argument("--key-dir", type=Path, help="the hub's signing keys (default $FORGE_HOME/hub/keys; made on first start)")
    s.add_argument("--roster", type=Path, help="the consortium roster (needed on first start; a newer one updates the hub)")
    s.add_argument("--origin", help="the log's origin line (default forge-hub.local/CONSORTIUM)")
    s.add_argument("--max-bundle", type=_size, default=None, help="largest accepted upload (default 1G)")
    s.add_argument("--budget", type=_budget, action="append", metavar="SITE=EPS", help="a site's consortium epsilon budget")
    s.add_argument("--default-budget", type=float, help="the budget of sites without their own")
    s.add_argument(
        "--timestamp-key",
        type=Path,
        metavar="KEY",
        help="serve signed timestamps (GET /v1/timestamp) with this "
        "signing.key, listed in the roster's timestamp_keys ('forge roster add --timestamp-key PUBLIC.json')",
    )
    s.add_argument("--timestamp-passphrase-env", metavar="VAR", help="the timestamp key's passphrase, from environment variable VAR")
    s.add_argument(
        "--timestamp-lifetime",
        metavar="DURATION",
        help="how long a served timestamp is valid (default 6h, at most 7d); it is re-issued when older than half of it",
    )
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--insecure-bind", action="store_true", help="allow plain HTTP on a non-loopback address")
    _common.add_json_flag(s)
    s.set_defaults(func=_serve)

    v = hs.add_parser("verify-log", help="check the hub's log: consistency with the checkpoint saved before, and a receipt")
    _hub_flag(v)
    v.add_argument("--receipt", type=Path, help="a receipt from 'forge push' to check for inclusion")
    v.add_argument("--hub-key", help="pin the hub's log key")
    _common.add_json_flag(v)
    v.set_defaults(func=_verify_log)

    pl = hs.add_parser("pull", help="download the accepted bundles (maintainer)")
    _hub_flag(pl)
    pl.add_argument("--out", type=Path, required=True, help="directory for the bundles and pulled.json")
    pl.add_argument("--site", help="only this site's submissions")
    _common.add_json_flag(pl)
    pl.set_defaults(func=_pull)

    pb = hs.add_parser("publish", help="publish a merged plugin as the next version (signed by a roster admin key)")
    _hub_flag(pb)
    pb.add_argument("--plugin", type=Path, required=True, help="the merged plugin directory")
    pb.add_argument("--key", type=Path, required=True, help="a roster admin's signing.key")
    pb.add_argument("--pulled", type=Path, required=True, help="pulled.json from 'forge hub pull': the lineage")
    pb.add_argument("--audit", type=Path, help="the audit report to attach (JSON, HTML or PDF)")
    pb.add_argument("--version", type=int, help="the version (default: the next one)")
    pb.add_argument("--notes", default="")
    _common.add_json_flag(pb)
    pb.set_defaults(func=_publish)

    f = hs.add_parser("fetch", help="fetch and verify a released version through TUF")
    f.add_argument("version", type=int)
    _hub_flag(f)
    f.add_argument("--out", type=Path, required=True, help="new directory for the plugin")
    f.add_argument("--roster", type=Path, required=True, help="your trusted roster (the release must be signed by its admin)")
    f.add_argument("--root", type=Path, help="the hub's TUF 1.root.json to pin (default: trust on first use)")
    _common.add_json_flag(f)
    f.set_defaults(func=_fetch)

    b = hs.add_parser("budget", help="set a site's consortium budget (signed by a roster admin key)")
    _hub_flag(b)
    b.add_argument("--site", required=True)
    b.add_argument("--epsilon", type=float, required=True)
    b.add_argument("--key", type=Path, required=True, help="a roster admin's signing.key")
    _common.add_json_flag(b)
    b.set_defaults(func=_budget_cmd)

    r = hs.add_parser("roster", help="send a newer roster (signed by its admins) to the hub")
    _hub_flag(r)
    r.add_argument("roster", type=Path)
    _common.add_json_flag(r)
    r.set_defaults(func=_roster_cmd)

    t = hs.add_parser("timestamp", help="fetch the hub's signed timestamp (bounds freeze attacks), check it, write it to a file")
    _hub_flag(t)
    t.add_argument("--out", type=Path, required=True, help="where to write the timestamp (give it to seal/verify/open --timestamp)")
    t.add_argument("--roster", type=Path, help="your roster (default: the hub's current one, which must chain to your pinned root)")
    t.add_argument("--root", help="pin the consortium's root first, if this machine has none (a roster file obtained out of band)")
    _common.add_json_flag(t)
    t.set_defaults(func=_timestamp)

    i = hs.add_parser("info", help="the hub's origin, log key, roster version and log size")
    _hub_flag(i)
    _common.add_json_flag(i)
    i.set_defaults(func=_info)
    hub.set_defaults(func=lambda a: (hub.print_help(), 2)[1])
