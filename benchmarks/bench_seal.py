"""Seal and open throughput, and peak memory, of sealed bundles (issue 3).

Claim: sealing and opening each run at >= 0.7 of the least work any signed, encrypted
format must do on the same bytes -- one AES-256-GCM pass plus one SHA-256 pass, timed in
the same run -- and peak resident memory stays <= 128 MB while sealing or opening 1 GB.

For each payload size the script writes a plugin directory (forge.json + one weight file of
seeded random bytes), then times, in this process:
  * the baseline: AES-256-GCM (1 MiB chunks, ``encrypt_into``) + SHA-256 over the same number
    of bytes from memory;
  * ``seal`` (read the files, encrypt, hash, write the bundle with fsync);
  * ``open_bundle`` (verify the signature and header, then one pass that hashes the ciphertext,
    authenticates and decrypts each chunk and writes the files; the payload digest is compared
    before the output directory is renamed into place).
Peak RSS is measured in fresh child processes (``resource.getrusage(RUSAGE_CHILDREN)``
after each child exits) that seal and open the 1 GB payload. Files live in a tmpfs
(/dev/shm when present) so the disk of this shared machine does not dominate.

Run:  .venv/bin/python benchmarks/bench_seal.py [--sizes 16,256,1024] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

MB = 1 << 20
CHUNK = 1 << 20


def make_plugin(root: Path, size: int, seed: int) -> Path:
    plugin = root / f"plugin-{size // MB}MB"
    plugin.mkdir()
    (plugin / "forge.json").write_text(json.dumps({"format": "forge-plugin/1", "kind": "trained",
                                                   "base": {"name": "bench", "digest": "00" * 32},
                                                   "dp": {"enabled": True, "epsilon": 3.0, "delta": 1e-5}}))
    rng = np.random.default_rng(seed)
    left = size
    with open(plugin / "adapter_model.safetensors", "wb") as f:
        while left:
            n = min(left, 64 * MB)
            f.write(rng.bytes(n))
            left -= n
    return plugin


def baseline(size: int, seed: int) -> tuple[float, float, float]:
    """Wall seconds for one AES-256-GCM pass and one SHA-256 pass over ``size`` bytes (1 MiB
    chunks), and the CPU seconds of both together."""
    rng = np.random.default_rng(seed)
    block = bytearray(rng.bytes(CHUNK))
    out = bytearray(CHUNK + 16)
    aead = AESGCM(rng.bytes(32))
    nonce, aad = rng.bytes(12), rng.bytes(41)
    chunks = -(-size // CHUNK)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(chunks):
        aead.encrypt_into(nonce, block, aad, out)
    t1 = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(chunks):
        h.update(out)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, time.process_time() - c0


CHILD = r"""
import json, os, resource, sys, time
from forge_secure.crypto import open_bundle, seal
mode, plugin, signer, recipient, bundle, key, roster, out = sys.argv[1:9]
t = time.perf_counter()
if mode == "seal":
    seal(plugin, signer, recipient, bundle, sequence=int(sys.argv[9]))
else:
    open_bundle(bundle, key, roster, out)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "vmhwm_kb": hwm}))
"""
# Linux carries the RSS high-water mark of the forking process into a child's ru_maxrss
# across exec; a tiny launcher process in between keeps that inherited floor small.
LAUNCH = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def child(args: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,256,1024", help="payload sizes in MiB")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per size (median reported)")
    ap.add_argument("--rss-size", type=int, default=1024, help="payload MiB for the peak-memory children")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args()
    sizes = [int(s) * MB for s in args.sizes.split(",")]
    base_dir = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="bench-seal-", dir=base_dir))
    os.environ["FORGE_HOME"] = str(root / "home")
    from forge_secure.crypto import _time, add_site_key, init_roster, load_decryption_key, load_signing_key, new_keys
    from forge_secure.crypto import open_bundle, seal, sign_roster

    try:
        site, cons, admin = (new_keys(n, root / "keys" / n) for n in ("site-1", "consortium", "admin-1"))
        roster = root / "roster.json"
        now = _time.now()
        init_roster(roster, "bench", [admin.public_key], expires=now + 86400)
        add_site_key(roster, site.public_key, not_before=now - 60, not_after=now + 86400)
        sign_roster(roster, load_signing_key(admin.signing))
        signer, key = load_signing_key(site.signing), load_decryption_key(cons.decryption)
        rows, seq = [], 0
        for size in sizes:
            plugin = make_plugin(root, size, seed=size)
            b_aes, b_sha, b_cpu, t_seal, t_open, c_seal, c_open = [], [], [], [], [], [], []
            for r in range(args.repeats):
                a, s, c = baseline(size, seed=r)
                b_aes.append(a)
                b_sha.append(s)
                b_cpu.append(c)
                seq += 1
                bundle = root / f"b{seq}.forge"
                c0, t0 = time.process_time(), time.perf_counter()
                seal(plugin, signer, cons.public, bundle, sequence=seq)
                t_seal.append(time.perf_counter() - t0)
                c_seal.append(time.process_time() - c0)
                out = root / f"o{seq}"
                c0, t0 = time.process_time(), time.perf_counter()
                open_bundle(bundle, key, roster, out)
                t_open.append(time.perf_counter() - t0)
                c_open.append(time.process_time() - c0)
                bundle.unlink()
                shutil.rmtree(out)
            aes, sha = statistics.median(b_aes), statistics.median(b_sha)
            limit = aes + sha
            ts, to = statistics.median(t_seal), statistics.median(t_open)
            rows.append({"size_mb": size // MB, "aes_gbps": size / aes / 1e9, "sha_gbps": size / sha / 1e9,
                         "limit_gbps": size / limit / 1e9, "seal_gbps": size / ts / 1e9, "open_gbps": size / to / 1e9,
                         "seal_ratio": limit / ts, "open_ratio": limit / to, "both_ratio": 2 * limit / (ts + to),
                         "seal_cpu_ratio": statistics.median(b_cpu) / statistics.median(c_seal),
                         "open_cpu_ratio": statistics.median(b_cpu) / statistics.median(c_open),
                         "repeats": len(t_seal), "seal_spread": (min(t_seal), max(t_seal)), "open_spread": (min(t_open), max(t_open))})
            print(json.dumps(rows[-1]), flush=True)
            if size != args.rss_size * MB:
                shutil.rmtree(plugin)
        # peak memory in fresh processes
        rss_plugin = root / f"plugin-{args.rss_size}MB"
        if not rss_plugin.exists():
            rss_plugin = make_plugin(root, args.rss_size * MB, seed=7)
        env = dict(os.environ)
        bundle, out = root / "rss.forge", root / "rss-out"
        seq += 1
        rs = child(["seal", str(rss_plugin), str(site.signing), str(cons.public), str(bundle), "", "", "", str(seq)], env)
        ro = child(["open", "", "", "", str(bundle), str(cons.decryption), str(roster), str(out)], env)
        idle = child_idle(env)
        mem = {"seal_mb": rs["maxrss_kb"] / 1024, "open_mb": ro["maxrss_kb"] / 1024, "import_only_mb": idle / 1024,
               "seal_hwm_mb": rs["vmhwm_kb"] / 1024, "open_hwm_mb": ro["vmhwm_kb"] / 1024, "size_mb": args.rss_size,
               "seal_s": rs["seconds"], "open_s": ro["seconds"]}
        print(json.dumps(mem), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()
    md = render(rows, mem, load)
    print(md)
    if not args.no_write:
        write_section("bench_seal", "Sealed bundles: seal / open throughput and peak memory",
                      f".venv/bin/python benchmarks/bench_seal.py --sizes {args.sizes} --repeats {args.repeats}", md)


def child_idle(env) -> int:
    code = "import resource, forge_secure.crypto; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    return int(subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True).stdout)


def render(rows, mem, load) -> str:
    lines = [
        "Baseline (\"limit\"): one AES-256-GCM pass (1 MiB chunks) plus one SHA-256 pass over the same number of bytes,",
        "timed in the same run; ratio = limit time / measured time (target >= 0.7). Seal includes reading the files",
        "and an fsync of the bundle; open includes verification and writing the files. Files on tmpfs. Wall-time ratios",
        "are the claim; the CPU ratios (process CPU seconds, all threads, against the baseline's) show the extra work",
        "(reading and writing the bytes) independently of how busy the machine is. Medians over the repeats.",
        "",
        "| payload | AES-GCM GB/s | SHA-256 GB/s | limit GB/s | seal GB/s | seal ratio | open GB/s | open ratio | seal+open ratio "
        "| seal CPU ratio | open CPU ratio | repeats |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['size_mb']} MiB | {r['aes_gbps']:.2f} | {r['sha_gbps']:.2f} | {r['limit_gbps']:.2f} | "
                     f"{r['seal_gbps']:.2f} | **{r['seal_ratio']:.2f}** | {r['open_gbps']:.2f} | **{r['open_ratio']:.2f}** | "
                     f"{r['both_ratio']:.2f} | {r['seal_cpu_ratio']:.2f} | {r['open_cpu_ratio']:.2f} | {r['repeats']} |")
    lines += [
        "",
        f"Peak resident memory (fresh child process, `ru_maxrss`) for a {mem['size_mb']} MiB payload: "
        f"seal **{mem['seal_mb']:.0f} MB**, open **{mem['open_mb']:.0f} MB** (target <= 128 MB; "
        f"`VmHWM` of the same processes: {mem['seal_hwm_mb']:.0f} / {mem['open_hwm_mb']:.0f} MB); "
        f"importing `forge_secure.crypto` alone: {mem['import_only_mb']:.0f} MB. "
        f"Those children took {mem['seal_s']:.1f} s to seal and {mem['open_s']:.1f} s to open.",
        "",
        f"Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores "
        "(the machine is shared; ratios are within one run, absolute GB/s are not comparable across runs).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
