"""`forge keys`, `forge roster`, `forge seal`, `forge verify`, `forge open`.

Thin: each handler parses, calls :mod:`forge_secure.crypto`, prints. Errors are
``BundleError`` (a ``ForgeError``): one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse

from . import _common


def _root_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        metavar="ROOT",
        help="pin the consortium's root first, if this machine has none: a roster file "
        "obtained out of band, or sha256:DIGEST of the --roster given (see 'forge roster pin')",
    )
    p.add_argument(
        "--timestamp",
        metavar="FILE",
        help="a signed timestamp (forge roster timestamp, or the hub's): the roster "
        "must be the one it names as current, and it must not have expired",
    )


def _print_pairs(title: str, pairs: list[tuple[str, object]]) -> None:
    """A bold title and aligned pairs; outside text is printed as itself (the consoles read no markup)."""
    _common.console.print(title, style="bold", soft_wrap=True)
    for k, v in pairs:
        _common.console.print(f"  {k:<14} {v}", soft_wrap=True)


# --------------------------------------------------------------------------- keys


def _keys_new(args) -> int:
    from ..crypto import new_keys

    files = new_keys(args.site, args.out, post_quantum=args.post_quantum, passphrase=_common.passphrase(args))
    pub = files.public_key
    info = {
        "site": pub.site,
        "key_id": pub.key_id,
        "encryption_key_id": pub.encryption_key_id,
        "signing_algorithms": list(pub.signing.algorithms),
        "kem": pub.kem,
        "signing_key": str(files.signing),
        "decryption_key": str(files.decryption),
        "public_key": str(files.public),
    }
    if args.json:
        _common.emit_json(info)
    else:
        _print_pairs(
            f"keys written for {pub.site}",
            [
                ("key id", pub.key_id),
                ("signing", " + ".join(pub.signing.algorithms)),
                ("encryption", pub.kem),
                ("private", f"{files.signing}, {files.decryption} (mode 0600; keep them secret)"),
                ("public", f"{files.public} (send this to the consortium)"),
            ],
        )
    return 0


def _keys_protect(args) -> int:
    from ..crypto import keys

    new = _common.passphrase(args, prefix="new-")
    if new is None:
        from ..crypto import BundleError

        raise BundleError(
            "no new passphrase given", fix="give --new-passphrase-file FILE or --new-passphrase-env VAR", code="key.passphrase_required"
        )
    path = keys.protect_key_file(args.key, _common.passphrase(args), new)
    if args.json:
        _common.emit_json(
            {
                "key": str(path),
                "format": keys.PROTECTED_FORMAT,
                "kdf": {"name": "scrypt", "log_n": keys.SCRYPT_LOG_N, "r": keys.SCRYPT_R, "p": keys.SCRYPT_P},
            }
        )
    else:
        _common.console.print(
            f"{path} rewritten as {keys.PROTECTED_FORMAT} (scrypt N=2^{keys.SCRYPT_LOG_N}, r={keys.SCRYPT_R}, "
            f"p={keys.SCRYPT_P}; AES-256-GCM), mode 0600",
            soft_wrap=True,
        )
    return 0


# --------------------------------------------------------------------------- roster


def _when(text, what, default=None):
    from ..crypto import _time

    return default if text is None else _time.parse_when(text, what)


def _roster_summary(roster, args, action: str) -> int:
    desc = roster.describe()
    if args.json:
        _common.emit_json(desc)
        return 0
    _print_pairs(
        f"roster {action}: {desc['consortium']} version {desc['version']}",
        [
            ("expires", desc["expires"] + (" (EXPIRED)" if desc["expired"] else "")),
            (
                "signatures",
                f"{desc['valid_signatures']} valid of {desc['threshold']} needed"
                + ("" if desc["trusted"] else "  -> sign it with 'forge roster sign'"),
            ),
            ("admins", ", ".join(f"{a['name']} {a['key_id'][:16]}{' (signed)' if a['signed'] else ''}" for a in desc["admins"]) or "none"),
            (
                "sites",
                ", ".join(
                    f"{s['site']} {s['key_id'][:16]} {s['not_before']}..{s['not_after']}{' REVOKED' if s['revoked'] else ''}"
                    for s in desc["sites"]
                )
                or "none",
            ),
            (
                "recipients",
                ", ".join(f"{r['name']} ({r['role']}) {r['key_id'][:16]}{' REVOKED' if r['revoked'] else ''}" for r in desc["recipients"])
                or "none",
            ),
            ("revocations", len(desc["revocations"])),
            ("sha256", desc["sha256"]),
        ],
    )
    return 0


def _roster_init(args) -> int:
    from ..crypto import Recipient, _time, init_roster, load_public_key

    admins = [load_public_key(p) for p in args.admin]
    recipients = [Recipient.from_public(load_public_key(p), "consortium") for p in args.recipient or ()]
    recipients += [Recipient.from_public(load_public_key(p), "auditor") for p in args.auditor or ()]
    roster = init_roster(
        args.out,
        args.consortium,
        admins,
        threshold=args.threshold,
        expires=_time.parse_when(args.expires, "--expires"),
        recipients=recipients,
    )
    return _roster_summary(roster, args, "written (unsigned)")


def _roster_add(args) -> int:
    from ..crypto import _time, add_admin_key, add_recipient, add_site_key, load_public_key

    if sum(bool(x) for x in (args.site_key, args.admin, args.recipient, args.timestamp_key)) != 1:
        from ..crypto import BundleError

        raise BundleError(
            "give exactly one of --site-key, --admin, --recipient or --timestamp-key", fix="add one key per command", code="roster.usage"
        )
    expires = _when(args.expires, "--expires")
    if args.timestamp_key:
        from ..crypto.roster import add_timestamp_key

        roster = add_timestamp_key(args.roster, load_public_key(args.timestamp_key), expires=expires)
    elif args.recipient:
        roster = add_recipient(args.roster, load_public_key(args.recipient), role=args.role, expires=expires)
    elif args.site_key:
        now = _time.now()
        not_before = _when(args.not_before, "--not-before", now)
        roster = add_site_key(
            args.roster,
            load_public_key(args.site_key),
            not_before=not_before,
            not_after=_time.parse_when(args.not_after, "--not-after", reference=now),
            expires=expires,
        )
    else:
        roster = add_admin_key(args.roster, load_public_key(args.admin), threshold=args.threshold, expires=expires)
    return _roster_summary(roster, args, "updated (signatures cleared)")


def _roster_revoke(args) -> int:
    from ..crypto import revoke_key

    roster = revoke_key(args.roster, args.key_id, reason=args.reason, expires=_when(args.expires, "--expires"))
    return _roster_summary(roster, args, "updated (signatures cleared)")


def _roster_sign(args) -> int:
    from ..crypto import load_signing_key, sign_roster

    roster = sign_roster(args.roster, load_signing_key(args.key, _common.passphrase(args)), expires=_when(args.expires, "--expires"))
    return _roster_summary(roster, args, "signed")


def _roster_show(args) -> int:
    from ..crypto import read_roster

    return _roster_summary(read_roster(args.roster), args, "shown")


def _roster_timestamp(args) -> int:
    from ..crypto import _time, load_signing_key
    from ..crypto.timestamp import issue_timestamp

    lifetime = _time.parse_when(args.lifetime, "--lifetime", reference=0)
    ts = issue_timestamp(args.roster, load_signing_key(args.key, _common.passphrase(args)), args.out, lifetime=lifetime)
    info = {"timestamp": str(args.out), **ts.signed_dict()}
    if args.json:
        _common.emit_json(info)
    else:
        _print_pairs(
            f"timestamp written: {args.out}",
            [
                ("consortium", ts.consortium),
                ("roster", f"version {ts.roster_version}"),
                ("issued", info["issued"]),
                ("expires", info["expires"]),
            ],
        )
    return 0


def _roster_pin(args) -> int:
    from ..crypto import pin_root

    roster = pin_root(args.roster, sha256=args.sha256)
    return _roster_summary(roster, args, "pinned as this machine's root of trust")


# --------------------------------------------------------------------------- seal / verify / open


def _short(value: object) -> str:
    """A signed number (the manifest keeps them as exact strings) shown to 4 significant digits;
    ``--json`` prints the exact value."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return str(value) if isinstance(value, int) else f"{number:.4g}"


def _verified_pairs(v) -> list[tuple[str, object]]:
    dp = v.dp or {}
    if dp and dp.get("enabled", True) is False:
        dp_text = "trained without DP (epsilon inf)"
    elif dp:
        dp_text = ", ".join(
            f"{k} {_short(dp[k])}"
            for k in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "accountant")
            if k in dp
        ) or str(dp)
    else:
        dp_text = "no DP claim in forge.json"
    return [
        ("site", f"{v.site} (sequence {v.sequence})"),
        ("signer", v.signer),
        ("signed with", " + ".join(v.algorithms["signature"])),
        ("submission", v.submission_id),
        ("created", v.created),
        ("base digest", v.base_digest or "none"),
        ("DP claim", dp_text),
        ("content", f"{v.content.get('format')} ({v.content.get('kind')}, {v.content.get('files')} files)"),
        ("sizes", f"payload {v.payload_size} bytes in {v.chunks} chunks of {v.chunk_size}; bundle {v.bundle_size} bytes"),
        ("recipient", f"{v.recipient} ({v.algorithms['kem']})"),
        ("roster", f"{v.roster_consortium} version {v.roster_version}"),
    ]


def _seal(args) -> int:
    from ..crypto import load_signing_key, seal

    out = seal(
        args.plugin_dir,
        load_signing_key(args.signer, _common.passphrase(args)),
        args.recipient,
        args.out,
        sequence=args.sequence,
        roster=args.roster,
        root=args.root,
        timestamp=args.timestamp,
    )
    if args.json:
        _common.emit_json({"bundle": str(out), "size": out.stat().st_size})
    else:
        _common.console.print(f"sealed {args.plugin_dir} -> {out} ({out.stat().st_size} bytes)", soft_wrap=True)
    return 0


def _verify(args) -> int:
    from ..crypto import verify

    v = verify(args.bundle, args.roster, root=args.root, timestamp=args.timestamp)
    if args.json:
        _common.emit_json({"verified": True, **v.to_dict()})
    else:
        _print_pairs(f"OK: {args.bundle} verifies", _verified_pairs(v))
    return 0


def _open(args) -> int:
    from ..crypto import load_decryption_key, open_bundle

    opened = open_bundle(
        args.bundle,
        load_decryption_key(args.key, _common.passphrase(args)),
        args.roster,
        args.out,
        root=args.root,
        timestamp=args.timestamp,
    )
    if args.json:
        _common.emit_json(opened.to_dict())
    else:
        _print_pairs(f"opened {args.bundle} -> {opened.out}", _verified_pairs(opened.verified) + [("files", ", ".join(opened.files))])
    return 0


# --------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the `forge` parser."""
    keys = sub.add_parser("keys", help="make signing and encryption keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("new", help="write signing.key, decryption.key (mode 0600) and public.json into --out")
    p.add_argument("--site", required=True, help="site (or admin / consortium) name the keys belong to")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the key files (existing keys are never overwritten)")
    p.add_argument("--post-quantum", action="store_true", help="add ML-DSA-65 signatures and use ML-KEM-768+X25519 encryption")
    _common.add_passphrase_flags(p, "the new private keys")
    _common.add_json_flag(p)
    p.set_defaults(func=_keys_new)

    p = ksub.add_parser("protect", help="(re)protect a private key file with a passphrase (scrypt, format 2)")
    p.add_argument("key", metavar="KEY", help="signing.key or decryption.key")
    _common.add_passphrase_flags(p, "the key as it is protected now (if it is)")
    _common.add_passphrase_flags(p, "the key from now on", prefix="new-")
    _common.add_json_flag(p)
    p.set_defaults(func=_keys_protect)

    roster = sub.add_parser("roster", help="the consortium's signed trust roster")
    rsub = roster.add_subparsers(dest="roster_command", metavar="ACTION", required=True)
    p = rsub.add_parser("init", help="write a new, unsigned roster (version 1)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--consortium", required=True, help="consortium name (the roster's identity)")
    p.add_argument("--admin", required=True, action="append", metavar="PUB", help="an admin's public.json (repeat for more)")
    p.add_argument("--threshold", type=int, default=1, help="admin signatures needed (default 1)")
    p.add_argument(
        "--recipient", action="append", metavar="PUB", help="the consortium's public.json: bundles may be sealed to it (repeatable)"
    )
    p.add_argument("--auditor", action="append", metavar="PUB", help="an auditor's public.json, listed as a recipient (repeatable)")
    p.add_argument("--expires", default="365d", help="expiry: a UTC time 2027-01-31T00:00:00Z or a duration like 365d")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_init)

    p = rsub.add_parser("add", help="add a site key (or an admin key); a new version, to be signed again")
    p.add_argument("roster", metavar="ROSTER")
    p.add_argument("--site-key", metavar="PUB", help="the site's public.json")
    p.add_argument("--admin", metavar="PUB", help="add an admin instead")
    p.add_argument("--recipient", metavar="PUB", help="add a recipient's encryption key instead (bundles may be sealed to it)")
    p.add_argument(
        "--role", choices=("consortium", "auditor", "site"), default="consortium", help="the recipient's role (with --recipient)"
    )
    p.add_argument("--timestamp-key", metavar="PUB", help="add a key that may sign timestamps instead (a hub's online key)")
    p.add_argument("--threshold", type=int, help="new admin threshold (with --admin)")
    p.add_argument("--not-before", help="start of the key's validity (default now)")
    p.add_argument("--not-after", default="365d", help="end of the key's validity (default 365d)")
    p.add_argument("--expires", help="new roster expiry (default: unchanged)")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_add)

    p = rsub.add_parser("revoke", help="revoke a site key; a new version, to be signed again")
    p.add_argument("roster", metavar="ROSTER")
    p.add_argument("--key-id", required=True, help="the full key id (see 'forge roster show')")
    p.add_argument("--reason", required=True, help="why (kept in the roster)")
    p.add_argument("--expires", help="new roster expiry (default: unchanged)")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_revoke)

    p = rsub.add_parser("sign", help="sign the roster with an admin key")
    p.add_argument("roster", metavar="ROSTER")
    p.add_argument("--key", required=True, metavar="KEY", help="the admin's signing.key")
    p.add_argument("--expires", help="renew: make a new version with this expiry (other admins sign it again)")
    _common.add_passphrase_flags(p, "the admin key")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_sign)

    p = rsub.add_parser("timestamp", help="sign a short-lived timestamp naming this roster as current (offline file; a hub serves it)")
    p.add_argument("roster", metavar="ROSTER")
    p.add_argument("--key", required=True, metavar="KEY", help="a timestamp key's (or an admin's) signing.key")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--lifetime", default="6h", help="how long it is valid (default 6h, at most 7d)")
    _common.add_passphrase_flags(p, "the key")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_timestamp)

    p = rsub.add_parser("pin", help="pin the consortium's root of trust on this machine (once, from a roster obtained out of band)")
    p.add_argument("roster", metavar="ROSTER")
    p.add_argument("--sha256", metavar="DIGEST", help="the roster's digest obtained out of band (as 'forge roster show' prints it)")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_pin)

    p = rsub.add_parser("show", help="print a roster and whether it is signed and current")
    p.add_argument("roster", metavar="ROSTER")
    _common.add_json_flag(p)
    p.set_defaults(func=_roster_show)

    p = sub.add_parser("seal", help="sign and encrypt a plugin directory into one .forge bundle")
    p.add_argument("plugin_dir", metavar="PLUGIN_DIR")
    p.add_argument("--signer", required=True, metavar="KEY", help="the site's signing.key")
    p.add_argument("--recipient", required=True, metavar="PUB", help="the consortium's public.json (must be listed in the roster)")
    p.add_argument("--roster", metavar="ROSTER", help="the consortium's roster (default: the latest one trusted on this machine)")
    _root_flag(p)
    p.add_argument("--out", required=True, metavar="FILE.forge")
    p.add_argument("--sequence", type=int, help="sequence number (default: the site's counter under FORGE_HOME, plus one)")
    _common.add_passphrase_flags(p, "the signing key")
    _common.add_json_flag(p)
    p.set_defaults(func=_seal)

    p = sub.add_parser("verify", help="check a bundle's signature and signer against the roster (no secret needed)")
    p.add_argument("bundle", metavar="FILE.forge")
    p.add_argument("--roster", required=True, metavar="ROSTER")
    _root_flag(p)
    _common.add_json_flag(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser("open", help="verify, refuse replays, and decrypt a bundle into --out")
    p.add_argument("bundle", metavar="FILE.forge")
    p.add_argument("--key", required=True, metavar="KEY", help="the consortium's decryption.key")
    p.add_argument("--roster", required=True, metavar="ROSTER")
    p.add_argument("--out", required=True, metavar="DIR")
    _root_flag(p)
    _common.add_passphrase_flags(p, "the decryption key")
    _common.add_json_flag(p)
    p.set_defaults(func=_open)
