"""Fixtures of the hub tests: a consortium at the real clock (keys, a signed roster, small
plugins with a true DP record), hubs on SQLite and on a private PostgreSQL server, and a
uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from forge_secure.crypto import SequenceCounter, add_site_key, init_roster, load_signing_key, new_keys, seal, sign_roster
from forge_secure.privacy.accountants import compute_epsilon

DAY = 86400
SITES = ("site-1", "site-2")


def make_plugin(path: Path, *, site="site-1", rows=16, seed=0, sigma=1.1, q=0.25, steps=40, delta=1e-3, dp=True, accountant="rdp") -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {
            "base_model.model.fc1.lora_A.weight": rng.standard_normal((4, rows)).astype(np.float32),
            "base_model.model.fc1.lora_B.weight": rng.standard_normal((rows, 4)).astype(np.float32),
        },
        str(path / "adapter_model.safetensors"),
    )
    record = {"enabled": False, "epsilon": "inf"}
    if dp:
        eps = compute_epsilon([(sigma, q, steps)], delta, accountant)
        record = {
            "enabled": True,
            "noise_multiplier": sigma,
            "sample_rate": q,
            "steps": steps,
            "max_grad_norm": 1.0,
            "accountant": accountant,
            "epsilon": eps,
            "delta": delta,
            "history": [[sigma, q, steps]],
        }
    meta = {"format": "forge-plugin/1", "kind": "trained", "site": site, "base": {"name": "tabular-mlp", "digest": "ab" * 32}, "dp": record}
    (path / "forge.json").write_text(json.dumps(meta, indent=2))
    return path


@dataclass
class Consortium:
    root: Path
    keys: dict
    roster: Path
    plugins: dict = field(default_factory=dict)
    sites: tuple = SITES
    _signers: dict = field(default_factory=dict)
    n: int = 0

    def signer(self, site="site-1"):
        if site not in self._signers:
            self._signers[site] = load_signing_key(self.keys[site].signing)
        return self._signers[site]

    def plugin(self, site="site-1", **kw) -> Path:
        key = (site, tuple(sorted(kw.items())))
        if key not in self.plugins:
            self.n += 1
            self.plugins[key] = make_plugin(self.root / "plugins" / f"p{self.n}", site=site, **kw)
        return self.plugins[key]

    def seal(self, site="site-1", *, sequence=None, plugin=None, signer=None, **kw) -> Path:
        self.n += 1
        out = self.root / "bundles" / f"{site}-{self.n}.forge"
        out.parent.mkdir(exist_ok=True)
        counter = SequenceCounter(self.root / "sequence")
        return seal(
            plugin or self.plugin(site, **kw),
            signer or self.signer(site),
            self.keys["consortium"].public,
            out,
            sequence=sequence,
            counter=counter,
            chunk_size=4096,
        )


def build_consortium(root: Path, sites=SITES) -> Consortium:
    now = int(time.time())
    keys = {}
    for name in (*sites, "consortium", "admin-1", "stranger"):
        keys[name] = new_keys(name, root / "keys" / name)
    roster = root / "roster.json"
    init_roster(roster, "medforge", [keys["admin-1"].public_key], expires=now + 365 * DAY, recipients=[keys["consortium"].public_key])
    for site in sites:
        add_site_key(roster, keys[site].public_key, not_before=now - DAY, not_after=now + 180 * DAY)
    sign_roster(roster, load_signing_key(keys["admin-1"].signing))
    return Consortium(root, keys, roster, sites=tuple(sites))


@pytest.fixture
def consortium(tmp_path) -> Consortium:
    return build_consortium(tmp_path / "consortium")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster on a loopback port in a temporary directory (as the
    ``postgres`` user when run as root); yields a function making a fresh database URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are absent: apt-get install postgresql (.ci/run does)")
    base = Path(tempfile.mkdtemp(prefix="forge-pg-"))
    data, port = base / "data", _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "forge", "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base} -c max_connections=200 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    counter = [0]

    def new_database() -> str:
        import psycopg

        counter[0] += 1
        name = f"hub{counter[0]}"
        with psycopg.connect(f"host=127.0.0.1 port={port} user=forge dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://forge@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    return request.getfixturevalue("postgres_server")()


# --------------------------------------------------------------------------- servers


def wait_for(url: str, proc=None, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the hub exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/v1/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the hub at {url} did not start")


def start_hub_process(tmp: Path, *, roster: Path | None, db: str, store: Path, keys: Path, extra=(), port=None):
    """``forge hub serve`` in a subprocess on a loopback port; returns (process, url)."""
    port = port or _free_port()
    args = [
        sys.executable,
        "-m",
        "forge_secure.cli",
        "hub",
        "serve",
        "--port",
        str(port),
        "--db",
        db,
        "--store",
        str(store),
        "--key-dir",
        str(keys),
        *extra,
    ]
    if roster is not None:
        args += ["--roster", str(roster)]
    env = dict(os.environ, FORGE_HOME=str(tmp / "hub-home"))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(url, proc)
    return proc, url


# --------------------------------------------------------------------------- in-process hubs


@dataclass
class HubEnv:
    hub: object
    client: object  # starlette TestClient
    consortium: Consortium
    root: Path

    def push(self, path: Path):
        return self.client.post("/v1/push", content=Path(path).read_bytes(), headers={"content-type": "application/octet-stream"})

    def state(self) -> dict:
        """What the hub holds: log size, submissions and stored blobs (for 'nothing stored')."""
        import sqlalchemy as sa

        from forge_secure.hub import db

        with db.read(self.hub.engine) as conn:
            size = conn.execute(sa.select(db.log_head.c.size)).scalar()
            subs = conn.execute(sa.select(sa.func.count()).select_from(db.submissions)).scalar()
        blobs = sorted(p.name for p in (self.hub.store.root / "sha256").rglob("*") if p.is_file())
        incoming = list((self.hub.store.root / "incoming").iterdir())
        return {"log": size, "submissions": subs, "blobs": blobs, "incoming": len(incoming)}


def make_hub(root: Path, consortium: Consortium, db_url: str, **kw):
    from forge_secure.hub.service import Hub, HubConfig

    budgets = kw.pop("budgets", None)
    default_budget = kw.pop("default_budget", None)
    config = HubConfig(store=root / "store", db_url=db_url, key_dir=root / "hub-keys", **kw)
    return Hub(config, roster=consortium.roster, budgets=budgets, default_budget=default_budget)


@pytest.fixture
def hub_factory(tmp_path, consortium, db_url):
    from starlette.testclient import TestClient

    from forge_secure.hub.app import create_app

    made = []

    def factory(**kw) -> HubEnv:
        hub = make_hub(tmp_path / f"hub{len(made)}", consortium, db_url, **kw)
        client = TestClient(create_app(hub), raise_server_exceptions=True)
        made.append((hub, client))
        return HubEnv(hub, client, consortium, tmp_path)

    yield factory
    for hub, client in made:
        client.close()
        hub.engine.dispose()


@pytest.fixture
def hub_env(hub_factory) -> HubEnv:
    return hub_factory()


class LiveServer:
    """uvicorn serving ``app`` on a loopback port in a background thread."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_hub(hub_factory):
    """A hub served over real HTTP on loopback: (HubEnv, url); the client's FORGE_HOME is the test's."""
    from forge_secure.hub.app import create_app

    servers = []

    def start(**kw):
        env = hub_factory(**kw)
        srv = LiveServer(create_app(env.hub))
        servers.append(srv)
        return env, srv.url

    yield start
    for s in servers:
        s.stop()


class Proxy:
    """A man in the middle between a site and the hub that can replay old metadata."""

    def __init__(self, upstream: str):
        self.upstream, self.overrides = upstream, {}

        async def handle(request):
            path = request.url.path
            if path in self.overrides:
                return Response(self.overrides[path], media_type="application/json")
            r = httpx.get(self.upstream + path, params=dict(request.query_params))
            return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))

        self.server = LiveServer(Starlette(routes=[Route("/{path:path}", handle)]))
        self.url = self.server.url

    def snapshot(self, *names):
        return {f"/tuf/metadata/{n}": httpx.get(f"{self.upstream}/tuf/metadata/{n}").content for n in names}


@pytest.fixture
def make_proxy():
    made = []

    def make(upstream: str) -> Proxy:
        made.append(Proxy(upstream))
        return made[-1]

    yield make
    for p in made:
        p.server.stop()


@pytest.fixture
def hubkit():
    """Helpers for test modules (conftest is not importable under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        build_consortium=build_consortium,
        start_hub_process=start_hub_process,
        make_plugin=make_plugin,
        free_port=_free_port,
        LiveServer=LiveServer,
        make_hub=make_hub,
    )


@pytest.fixture(scope="module")
def hub_env_once(tmp_path_factory):
    """One SQLite hub for a module's property tests (many examples, one hub)."""
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from forge_secure.hub.app import create_app
    from forge_secure.hub.service import Hub, HubConfig

    root = tmp_path_factory.mktemp("hub-once")
    c = build_consortium(root / "c")
    hub = Hub(HubConfig(store=root / "store", db_url=f"sqlite:///{root / 'hub.sqlite3'}", key_dir=root / "keys"), roster=c.roster)
    client = TestClient(create_app(hub))
    yield SimpleNamespace(hub=hub, client=client, consortium=c)
    client.close()
    hub.engine.dispose()
