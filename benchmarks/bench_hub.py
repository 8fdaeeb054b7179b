"""The consortium hub on loopback: push throughput against in-process verify, latency under
8 concurrent clients, and peak server memory under 16 concurrent 256 MiB uploads (issue 13).

Claims: pushes of 16 MiB bundles run at >= 0.5 of the throughput of ``verify`` on the same
bundles in this process; the hub's peak resident memory stays <= 256 MB while 16 clients
upload 256 MiB bundles at once.

The hub is a real ``forge hub serve`` process (SQLite, content store and keys in a temporary
directory, in a tmpfs -- /dev/shm when present -- so the disk of this shared machine does not
dominate; its fsyncs are issued but cost nothing there) on 127.0.0.1. One more row pushes the
16 MiB bundles to a hub whose database, store and keys are on the disk (the default temporary
directory), where the fsyncs that make an accepted bundle durable are real. Bundles hold
seeded random bytes and a plugin without DP (no budget is set, so the hub's accountant is not
involved; ``verify`` does not run it either).

1. Throughput: for 64 KiB, 1 MiB and 16 MiB bundles, each repeat times ``verify`` (the
   project's own check, in this process, roster already trusted) and then ``forge push``'s
   library call (``client.push``: stream the file, keeping its header and envelope as they
   are sent; the hub receives the bytes on its event loop and hashes and writes each batch on
   two pool threads -- one SHA-256 pass gives both the content address and the signed payload
   digest -- then runs every other check of ``verify`` on the file (header, envelope,
   signature, roster), stores it, appends the log entry and returns a signed receipt; the
   client checks the receipt's signature and inclusion proof and that its entry names the
   bundle sent by its signed payload digest and envelope digest). Reported: medians,
   pushes/s and MB/s, the ratio of the medians with the interquartile range of the
   per-repeat ratios, the CPU time per operation (verify: this process; push: client process
   + hub process, from /proc) and the machine's load.
2. Latency: 8 client threads, one site each, push their 64 KiB bundles at once; p50 and p99
   of the per-push latency with 95% bootstrap intervals (seeded resampling of the latencies).
3. Memory: a fresh hub process; 16 client threads each upload a different 256 MiB bundle at
   once; the hub's VmHWM (peak RSS, from /proc/PID/status) after all are accepted, and its RSS
   before the uploads.

Run:  .venv/bin/python benchmarks/bench_hub.py [--repeats 9] [--big-mb 256] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

KB, MB = 1 << 10, 1 << 20
DAY = 86400


def consortium(root: Path, n_sites: int):
    from forge_secure.crypto import add_site_key, init_roster, load_signing_key, new_keys, sign_roster

    now = int(time.time())
    keys = {name: new_keys(name, root / "keys" / name) for name in ["admin", "consortium", *[f"site-{i}" for i in range(1, n_sites + 1)]]}
    roster = root / "roster.json"
    init_roster(roster, "bench", [keys["admin"].public_key], expires=now + 30 * DAY, recipients=[keys["consortium"].public_key])
    for i in range(1, n_sites + 1):
        add_site_key(roster, keys[f"site-{i}"].public_key, not_before=now - DAY, not_after=now + 30 * DAY)
    sign_roster(roster, load_signing_key(keys["admin"].signing))
    return keys, roster


def plugin(root: Path, size: int, seed: int) -> Path:
    p = root / f"plugin-{size}-{seed}"
    p.mkdir(parents=True)
    (p / "forge.json").write_text(
        json.dumps(
            {
                "format": "forge-plugin/1",
                "kind": "trained",
                "base": {"name": "bench", "digest": "00" * 32},
                "dp": {"enabled": False, "epsilon": "inf"},
            }
        )
    )
    rng = np.random.default_rng(seed)
    with open(p / "adapter_model.safetensors", "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MB)
            f.write(rng.bytes(n))
            left -= n
    return p


class Sealer:
    def __init__(self, root: Path, keys):
        from forge_secure.crypto import SequenceCounter, load_signing_key

        self.root, self.keys, self.n = root, keys, 0
        self.counter = SequenceCounter(root / "sequence")
        self.signers = {k: load_signing_key(v.signing) for k, v in keys.items() if k.startswith("site-")}

    def seal(self, site: str, plug: Path) -> Path:
        from forge_secure.crypto import seal

        self.n += 1
        out = self.root / "bundles" / f"{site}-{self.n}.forge"
        out.parent.mkdir(exist_ok=True)
        return seal(plug, self.signers[site], self.keys["consortium"].public, out, counter=self.counter)


def start_hub(root: Path, roster: Path, tag: str):
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, FORGE_HOME=str(root / f"home-{tag}"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forge_secure.cli",
            "hub",
            "serve",
            "--port",
            str(port),
            "--roster",
            str(roster),
            "--db",
            f"sqlite:///{root / f'hub-{tag}.sqlite3'}",
            "--store",
            str(root / f"store-{tag}"),
            "--key-dir",
            str(root / f"keys-{tag}"),
            "--max-bundle",
            "1G",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/info", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the hub did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def iqr(v: list[float]) -> tuple[float, float]:
    if len(v) < 4:
        return min(v), max(v)
    q = statistics.quantiles(v, n=4)
    return q[0], q[2]


def boot_ci(values: list[float], q: float, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    arr = np.asarray(values)
    stats = [np.quantile(rng.choice(arr, arr.size), q) for _ in range(n)]
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def floors(root: Path, size: int = 16 * MB, repeats: int = 5) -> tuple[float, float]:
    """CPU seconds (this thread, median) of what a push cannot avoid at the hub for ``size``
    bytes: one SHA-256 pass, and writing them as a new file in ``root`` (the store's filesystem)."""
    import hashlib

    data = np.random.default_rng(7).bytes(size)
    view = memoryview(data)
    hashing, writing = [], []
    for i in range(repeats):
        c = time.thread_time()
        hashlib.sha256(data).digest()
        hashing.append(time.thread_time() - c)
        path = root / f"floor-{i}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        c = time.thread_time()
        for j in range(0, size, MB):
            os.write(fd, view[j : j + MB])
        writing.append(time.thread_time() - c)
        os.close(fd)
        path.unlink()
    return statistics.median(hashing), statistics.median(writing)


def transfer_floor(root: Path, size: int = 16 * MB, repeats: int = 5) -> float:
    """CPU seconds (this process, median) of moving ``size`` bytes of a file over a loopback TCP
    connection in 1 MiB blocks, as a push does: read and send on one thread, receive into a
    buffer on another (no HTTP, no hashing, no storing)."""
    import socket

    path = root / "transfer-floor"
    path.write_bytes(np.random.default_rng(11).bytes(size))
    spent = []
    try:
        for _ in range(repeats):
            with socket.create_server(("127.0.0.1", 0)) as server:
                sender = socket.create_connection(server.getsockname())
                receiver, _ = server.accept()

                def drain(conn=receiver) -> None:
                    buf, left = bytearray(256 * KB), size
                    while left:
                        n = conn.recv_into(buf)
                        if not n:
                            break
                        left -= n

                t = threading.Thread(target=drain)
                c0 = time.process_time()
                t.start()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(MB), b""):
                        sender.sendall(block)
                t.join()
                spent.append(time.process_time() - c0)
                sender.close()
                receiver.close()
    finally:
        path.unlink()
    return statistics.median(spent)


def throughput(label: str, size: int, repeats: int, url: str, hub_pid: int, sealer, tmp: Path, trusted, seed: int | None = None):
    """One table row: ``repeats`` times verify then push of a fresh bundle of ``size`` bytes;
    returns the row and (ratio of the medians, (verify CPU, push CPU))."""
    from forge_secure.crypto import verify
    from forge_secure.hub import client

    plug = plugin(tmp, size, size if seed is None else seed)
    bundles = [sealer.seal("site-1", plug) for _ in range(repeats)]
    t_verify, t_push, ratios, c_verify, c_push = [], [], [], [], []
    for b in bundles:
        c0 = time.process_time()
        t0 = time.perf_counter()
        verify(b, trusted)
        t1 = time.perf_counter()
        c1, h1 = time.process_time(), cpu_seconds(hub_pid)
        client.push(b, url)
        t2 = time.perf_counter()
        c_verify.append(c1 - c0)
        c_push.append(time.process_time() - c1 + cpu_seconds(hub_pid) - h1)
        t_verify.append(t1 - t0)
        t_push.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    nbytes = bundles[0].stat().st_size
    for b in bundles:
        b.unlink()  # keep the tmpfs small
    mv, mp = statistics.median(t_verify), statistics.median(t_push)
    lo, hi = iqr(ratios)
    row = (
        f"| {label} | {mv * 1e3:.1f} | {nbytes / mv / MB:.0f} | {mp * 1e3:.1f} | {1 / mp:.1f} | {nbytes / mp / MB:.0f} "
        f"| {mv / mp:.2f} ({lo:.2f}-{hi:.2f}) | {statistics.median(c_verify) * 1e3:.0f} / "
        f"{statistics.median(c_push) * 1e3:.0f} |"
    )
    print(row, flush=True)
    return row, (mv / mp, (statistics.median(c_verify), statistics.median(c_push)), mv, mp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--latency-pushes", type=int, default=25, help="pushes per client in the latency run")
    ap.add_argument("--big-mb", type=int, default=256, help="bundle size of the memory run (MiB)")
    ap.add_argument("--big-clients", type=int, default=16)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from forge_secure.crypto import load_roster
    from forge_secure.hub import client

    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="bench-hub-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    os.environ["FORGE_HOME"] = str(tmp / "client-home")
    n_sites = max(8, args.big_clients)
    keys, roster = consortium(tmp, n_sites)
    sealer = Sealer(tmp, keys)
    trusted = load_roster(roster)
    rows, lat_md, mem_md = [], "", ""
    r16, cpu16, verify16 = float("nan"), (float("nan"), float("nan")), float("nan")

    floor_hash, floor_write = floors(tmp)
    floor_transfer = transfer_floor(tmp)
    fixed = float("nan")

    # 1. throughput
    load_before = os.getloadavg()[0]
    proc, url = start_hub(tmp, roster, "throughput")
    try:
        client.push(sealer.seal("site-1", plugin(tmp, 4 * KB, 0)), url)  # warm-up: connection, imports, caches
        for size, label in ((64 * KB, "64 KiB"), (MB, "1 MiB"), (16 * MB, "16 MiB")):
            row, stats = throughput(label, size, args.repeats, url, proc.pid, sealer, tmp, trusted)
            rows.append(row)
            if size == 64 * KB:
                fixed = stats[3]  # a 64 KiB push: what each push costs besides its bytes
            if size == 16 * MB:
                r16, cpu16, verify16 = stats[0], stats[1], stats[2]
        # the same 16 MiB pushes to a hub whose database, store and keys are on the disk
        disk_root = Path(tempfile.mkdtemp(prefix="bench-hub-disk-"))
        dproc, durl = start_hub(disk_root, roster, "disk")
        try:
            client.push(sealer.seal("site-1", plugin(tmp, 4 * KB, 2)), durl)
            row, _disk16 = throughput("16 MiB, hub on disk", 16 * MB, args.repeats, durl, dproc.pid, sealer, tmp, trusted, seed=17)
            rows.append(row)
        finally:
            dproc.kill()
            dproc.wait()
            shutil.rmtree(disk_root, ignore_errors=True)

        load_after = os.getloadavg()[0]

        # 2. latency with 8 concurrent clients
        small = {
            f"site-{i}": [sealer.seal(f"site-{i}", plugin(tmp, 64 * KB, 1000 + i * 100 + j)) for j in range(args.latency_pushes)]
            for i in range(1, 9)
        }
        lat: list[float] = []
        lock = threading.Lock()

        def run(site):
            for b in small[site]:
                t = time.perf_counter()
                client.push(b, url)
                with lock:
                    lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, sorted(small)))
        wall = time.perf_counter() - t0
        p50, p99 = float(np.quantile(lat, 0.5)), float(np.quantile(lat, 0.99))
        c50, c99 = boot_ci(lat, 0.5), boot_ci(lat, 0.99)
        lat_md = (
            f"8 clients x {args.latency_pushes} pushes of 64 KiB bundles: p50 **{p50 * 1e3:.0f} ms** "
            f"(95% CI {c50[0] * 1e3:.0f}-{c50[1] * 1e3:.0f}), p99 **{p99 * 1e3:.0f} ms** (95% CI {c99[0] * 1e3:.0f}-"
            f"{c99[1] * 1e3:.0f}); {len(lat) / wall:.1f} pushes/s in all."
        )
        print(lat_md, flush=True)
    finally:
        proc.kill()
        proc.wait()

    # 3. peak server memory under concurrent big uploads (on disk: gigabytes of bundles and store)
    shutil.rmtree(tmp / "bundles", ignore_errors=True)
    disk = Path(tempfile.mkdtemp(prefix="bench-hub-big-"))
    sealer.root = disk
    warm = sealer.seal("site-1", plugin(disk, 4 * KB, 1))
    big = []
    for i in range(1, args.big_clients + 1):
        plug = plugin(disk, args.big_mb * MB, 5000 + i)
        big.append(sealer.seal(f"site-{i}", plug))
        shutil.rmtree(plug)  # keep the disk use down
    proc, url = start_hub(disk, roster, "memory")
    try:
        client.push(warm, url)  # warm-up, as above
        idle = status_kb(proc.pid, "VmRSS")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.big_clients) as pool:
            list(pool.map(lambda b: client.push(b, url), big))
        wall = time.perf_counter() - t0
        peak = status_kb(proc.pid, "VmHWM")
        total = sum(b.stat().st_size for b in big)
        mem_md = (
            f"{args.big_clients} clients upload {args.big_mb} MiB bundles at once ({total / MB:.0f} MiB in {wall:.1f} s, "
            f"{total / wall / MB:.0f} MB/s, all accepted): hub peak RSS **{peak / 1024:.0f} MB** (target <= 256 MB; "
            f"{idle / 1024:.0f} MB before the uploads)."
        )
        print(mem_md, flush=True)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)

    bound_ms = (fixed + (floor_hash + floor_write + floor_transfer) / (os.cpu_count() or 1)) * 1e3
    bound = verify16 * 1e3 / bound_ms
    print(f"two-core bound at 16 MiB: {bound:.2f} (push >= {bound_ms:.1f} ms, verify {verify16 * 1e3:.1f} ms)", flush=True)
    if not args.no_write:
        body = (
            "Push (``client.push``: stream, hash on arrival, verify, store, log, signed receipt, receipt checked) "
            "against the project's in-process ``verify`` of the same bundles; medians of "
            f"{args.repeats} repeats, ratio = verify time / push time (interquartile range of the per-repeat ratios). "
            "Target: >= 0.5 at 16 MiB.\n\n"
            f"Machine load while measuring the throughput: load average {load_before:.1f} before, {load_after:.1f} after "
            f"(`os.getloadavg`, {os.cpu_count()} cores shared with other jobs); the figures move with it.\n\n"
            "Where a push's time goes: the client reads the file and sends it, keeping only the header and the "
            "envelope of the bytes it sends: the receipt's entry must name that bundle by its signed payload digest "
            "and envelope digest (which fix every byte of it), so the client hashes nothing. The hub's event loop "
            "receives the bytes (uvicorn on uvloop with httptools; the hub's protocol hands each body piece on without "
            "uvicorn's two accumulation copies) and two pool threads hash and write each batch, one SHA-256 pass "
            "giving both the content address and the signed payload digest, so the hub's verification (every check "
            "of `verify`, on the file) reads only the header and the envelope. What no push can avoid is the hub's "
            f"SHA-256 pass over every byte ({floor_hash * 1e3:.0f} ms of CPU for 16 MiB on one core here, the work of "
            f"`verify` itself) and writing the bytes into the store ({floor_write * 1e3:.0f} ms for a new 16 MiB file "
            "in this tmpfs, which allocates every page), plus the transfer over loopback; `verify` only reads and "
            "hashes. The CPU column shows the total work per operation (10 ms clock ticks, medians). On the disk "
            "(last row) the fsync that makes an accepted bundle durable before its receipt is sent is real.\n\n"
            + (
                f"**Target met** at 16 MiB: ratio {r16:.2f} (CPU {cpu16[0] * 1e3:.0f} ms for verify, "
                f"{cpu16[1] * 1e3:.0f} ms for a push, client + hub).\n\n"
                if r16 >= 0.5
                else f"**Target not met** at 16 MiB: ratio {r16:.2f}. "
            )
            + (
                f"The best a push could do on this machine, were its work shared out perfectly over the "
                f"{os.cpu_count()} cores: {fixed * 1e3:.1f} ms that every push costs besides its bytes (a 64 KiB push) "
                f"+ ({floor_hash * 1e3:.1f} ms hashing + {floor_write * 1e3:.1f} ms writing the store file + "
                f"{floor_transfer * 1e3:.1f} ms moving 16 MiB of a file over loopback TCP, reader and sender, with no "
                f"HTTP) / {os.cpu_count()} cores = {bound_ms:.1f} ms, against {verify16 * 1e3:.1f} ms for `verify`: "
                f"a two-core bound of **{bound:.2f}** (each pass timed alone in the same run). "
                "When other jobs keep the cores busy, each process gets a share of a core and the wall-time ratio "
                f"follows the CPU-time ratio ({cpu16[0] * 1e3:.0f} / {cpu16[1] * 1e3:.0f} ms = "
                f"{cpu16[0] / cpu16[1]:.2f}).\n\n"
            )
            + "| bundle | verify ms | verify MB/s | push ms | pushes/s | push MB/s | ratio (IQR) | CPU ms: verify / push (client + hub) |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + lat_md + "\n\n" + mem_md + "\n"
        )
        write_section(
            "bench_hub",
            "Consortium hub: push throughput, latency and server memory",
            f"python benchmarks/bench_hub.py --repeats {args.repeats} --big-mb {args.big_mb}",
            body,
        )


if __name__ == "__main__":
    main()
