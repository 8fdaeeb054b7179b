"""Key unlock time per passphrase guess: scrypt key files (format 2) against the old PKCS#8 ones (issue 16).

Claim: a passphrase-protected key file costs an attacker about as much per guess as age's
scrypt recipe (N = 2**18, r = 8, p = 1: age's default work factor 18, "about one second"),
some thousand times more than the PKCS#8 ``BestAvailableEncryption`` files forge-secure wrote
before (PBKDF2-HMAC-SHA256, 2,048 iterations).

Measured, in this process: the time of one wrong-passphrase ``load_signing_key`` on a format-2
file (one scrypt derivation + one AES-GCM tag check: exactly an attacker's work per guess,
less only the file parsing), and the same on a format-1 PKCS#8-encrypted file (baseline).
Also the raw scrypt derivation alone. Medians and interquartile ranges over the repeats;
the ratio is of medians. The memory scrypt needs per guess is 128 * r * N bytes = 256 MiB.

Run:  .venv/bin/python benchmarks/bench_key_unlock.py [--repeats 7] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed guesses on the scrypt file (the PKCS#8 one gets 100x)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()

    from forge_secure.crypto import BundleError, keys
    from forge_secure.crypto import _primitives as P

    with tempfile.TemporaryDirectory(prefix="bench-unlock-") as tmp:
        root = Path(tmp)
        files = keys.new_keys("site-1", root / "k", passphrase=b"correct horse battery staple")
        key = keys.load_signing_key(files.signing, b"correct horse battery staple")
        legacy = root / "legacy.key"
        legacy.write_text(
            json.dumps(
                {
                    "format": keys.PRIVATE_FORMAT,
                    "role": "signing",
                    "site": key.site,
                    "key_id": key.key_id,
                    "algorithms": list(key.algorithms),
                    "encrypted": True,
                    "pkcs8": {a: P.private_to_pem(k, b"correct horse battery staple") for a, k in key.keys.items()},
                }
            )
        )
        legacy.chmod(0o600)

        def guess(path):
            def run():
                try:
                    keys.load_signing_key(path, b"wrong guess 123")
                except BundleError as e:
                    assert e.code == "key.bad_passphrase", e.code
                else:  # pragma: no cover
                    raise AssertionError("a wrong passphrase unlocked the key")

            return run

        doc = json.loads(files.signing.read_text())
        salt = keys.b64d(doc["kdf"]["salt"], "salt")
        t_scrypt = timed(guess(files.signing), args.repeats)
        t_kdf = timed(lambda: keys._scrypt(b"wrong guess 123", salt, keys.SCRYPT_LOG_N, keys.SCRYPT_R, keys.SCRYPT_P), args.repeats)
        t_legacy = timed(guess(legacy), 100 * args.repeats)

    ms = lambda v: statistics.median(v) * 1e3  # noqa: E731
    ratio = statistics.median(t_scrypt) / statistics.median(t_legacy)
    rows = [
        (f"format 2: scrypt N=2^{keys.SCRYPT_LOG_N}, r={keys.SCRYPT_R}, p={keys.SCRYPT_P} + AES-256-GCM (a wrong guess)", t_scrypt),
        ("scrypt derivation alone", t_kdf),
        ("format 1 (old): PKCS#8 PBKDF2-SHA256, 2,048 iterations (a wrong guess)", t_legacy),
    ]
    lines = ["| key file | ms per guess (median) | IQR (ms) | guesses timed |", "|---|---:|---:|---:|"]
    for name, v in rows:
        lo, hi = quartiles(v)
        lines.append(f"| {name} | {ms(v):.1f} | {lo * 1e3:.1f}-{hi * 1e3:.1f} | {len(v)} |")
    body = "\n".join(lines) + (
        f"\n\nA guess against a format-2 key file costs **{ratio:,.0f}x** a guess against the old PKCS#8 file, "
        f"and needs {128 * keys.SCRYPT_R * (1 << keys.SCRYPT_LOG_N) >> 20} MiB of memory (age uses the same scrypt "
        "parameters by default). Times are on this shared 2-core machine; a dedicated attacker's GPU changes the "
        "absolute figures, not the memory each guess needs. The fastest scrypt guess timed: "
        f"{min(t_scrypt) * 1e3:.0f} ms. Load average during the run: "
        + " / ".join(f"{x:.1f}" for x in os.getloadavg())
        + " on 2 cores (times rise with it).\n"
    )
    print(body)
    if not args.no_write:
        write_section("bench_key_unlock", "Key files: passphrase unlock time per guess", "python benchmarks/bench_key_unlock.py", body)


if __name__ == "__main__":
    main()
