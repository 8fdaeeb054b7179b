"""The hub's part of ``forge demo``: an embedded hub on loopback and one full asynchronous
cycle through it (the sites push, the maintainer pulls, publishes the merged version with its
audit report, and every site fetches it through TUF and checks the log).

``forge demo`` calls :func:`run_hub_cycle` after its merge and audit stages, with the bundles
it sealed, its roster, the admin key that publishes, the merged plugin and the audit report.
:class:`EmbeddedHub` is the same hub for callers that want the steps one by one.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ForgeError
from . import client, client_release
from .service import Hub, HubConfig

if TYPE_CHECKING:
    import uvicorn


class EmbeddedHub:
    """A hub (SQLite, content store and keys under ``root``) served by uvicorn on 127.0.0.1
    in a background thread; use it as a context manager."""

    def __init__(self, root: str | Path, roster: str | Path, *, budgets: dict | None = None, ledger_delta: float | None = None):
        from .ledger import DEFAULT_DELTA

        self.root = Path(root)
        self.hub = Hub(
            HubConfig(
                store=self.root / "store",
                db_url=f"sqlite:///{self.root / 'hub.sqlite3'}",
                key_dir=self.root / "keys",
                ledger_delta=ledger_delta or DEFAULT_DELTA,
            ),
            roster=roster,
            budgets=budgets,
        )
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EmbeddedHub:
        import uvicorn

        from .app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = self._server = uvicorn.Server(uvicorn.Config(create_app(self.hub), host="127.0.0.1", port=port, log_level="error"))
        thread = self._thread = threading.Thread(target=server.run, name="forge-hub", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise ForgeError("the embedded hub did not start", fix="rerun; check that loopback networking works", code="hub.start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self.hub.engine.dispose()


def run_hub_cycle(
    work: str | Path,
    roster: str | Path,
    bundles: dict[str, list[str | Path]],
    publisher_key,
    merged: str | Path,
    *,
    audit: str | Path | None = None,
    budgets: dict | None = None,
    ledger_delta: float | None = None,
    fetch_sites: list[str] | None = None,
) -> dict:
    """One cycle through an embedded hub under ``work``:

    1. each site pushes its bundles (``bundles``: site -> .forge paths); receipts go to
       ``work/receipts/<site>-<n>.json``;
    2. the maintainer pulls the accepted bundles into ``work/maintainer/inbox`` (each checked
       against its log entry);
    3. the maintainer publishes ``merged`` (a plugin directory) as version 1, signed with
       ``publisher_key`` (a roster admin's signing key), with lineage to the pulled submissions
       and the ``audit`` report attached;
    4. every site in ``fetch_sites`` (default: those that pushed) fetches version 1 through TUF
       into ``work/sites/<site>/v1``, checks the maintainer's signature against ``roster``, and
       checks its receipts' inclusion and the log's consistency (``verify-log``).

    ``budgets`` (site -> epsilon) and ``ledger_delta`` (default 1e-5) configure the consortium
    ledger; a push past a budget is refused. Returns a summary (log size, submissions, version, what each site verified) for printing.
    Raises a :class:`ForgeError` when any step is refused.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"pushed": [], "fetched": []}
    with EmbeddedHub(work / "hub", roster, budgets=budgets, ledger_delta=ledger_delta) as eh:
        summary["url"], summary["hub_key"] = eh.url, eh.hub.keys.verifier
        receipts: dict[str, list[Path]] = {}
        for site, paths in sorted(bundles.items()):
            for n, path in enumerate(paths, 1):
                out = work / "receipts" / f"{site}-{n}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                res = client.push(path, eh.url, receipt_out=out)
                receipts.setdefault(site, []).append(out)
                summary["pushed"].append(
                    {"site": site, "bundle": Path(path).name, "log_index": res["index"], "epsilon": res["entry"]["dp"]["epsilon"]}
                )
        pulled = client.pull(eh.url, work / "maintainer" / "inbox")
        summary["pulled"] = len(pulled["submissions"])
        release = client_release.publish(
            eh.url, merged, publisher_key, pulled=work / "maintainer" / "inbox" / "pulled.json", audit=audit, notes="forge demo"
        )
        summary["version"], summary["release_log_index"] = release["version"], release["log_index"]
        for site in fetch_sites or sorted(bundles):
            got = client_release.fetch(eh.url, release["version"], work / "sites" / site / f"v{release['version']}", roster)
            checks = [client.verify_log(eh.url, receipt=r)["receipt"]["index"] for r in receipts.get(site, [])]
            if not checks:
                client.verify_log(eh.url)
            summary["fetched"].append(
                {"site": site, "version": got["version"], "out": got["out"], "lineage": len(got["lineage"]), "receipts_in_log": checks}
            )
        summary["log_size"] = client.verify_log(eh.url)["size"]
        summary["ledger"] = client._request("GET", f"{eh.url}/v1/ledger").json()["sites"]
    return summary
