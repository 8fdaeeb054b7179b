"""Run the hub: build the :class:`~.service.Hub` and serve its app with uvicorn.

The hub listens on 127.0.0.1 by default. To reach it from other machines, put it behind a
TLS-terminating reverse proxy (README: "Running the hub behind TLS") or give uvicorn a
certificate (``--tls-cert``/``--tls-key``); plain HTTP on a public interface is refused
unless ``--insecure-bind`` says so.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ..errors import ForgeValueError
from ..home import forge_home
from .service import Hub, HubConfig


def build_hub(*, store: str | Path | None = None, db_url: str | None = None, key_dir: str | Path | None = None,
              roster: str | Path | None = None, origin: str | None = None, max_bundle: int | None = None,
              budgets: dict | None = None, default_budget: float | None = None, ledger_delta: float | None = None,
              timestamp_key=None, timestamp_lifetime: int | None = None) -> Hub:
    from .service import DEFAULT_MAX_BUNDLE
    from ..crypto.timestamp import DEFAULT_LIFETIME
    from .freshness import check_lifetime
    from .ledger import DEFAULT_DELTA

    config = HubConfig(store=Path(store) if store else forge_home() / "hub" / "store", db_url=db_url,
                       key_dir=Path(key_dir) if key_dir else None, origin=origin, max_bundle=max_bundle or DEFAULT_MAX_BUNDLE,
                       ledger_delta=ledger_delta or DEFAULT_DELTA, timestamp_key=timestamp_key,
                       timestamp_lifetime=check_lifetime(timestamp_lifetime or DEFAULT_LIFETIME))
    return Hub(config, roster=roster, budgets=budgets, default_budget=default_budget)


def check_bind(host: str, tls_cert: str | None, insecure_bind: bool) -> None:
    """Refuse plain HTTP on a non-loopback address (before anything is built)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not tls_cert and not insecure_bind:
        raise ForgeValueError(f"--host {host} is not a loopback address and no TLS certificate is given",
                              fix="serve on 127.0.0.1 behind a TLS reverse proxy, or give --tls-cert and --tls-key",
                              code="hub.insecure")


def serve(hub: Hub, *, host: str = "127.0.0.1", port: int = 8613, tls_cert: str | None = None, tls_key: str | None = None,
          insecure_bind: bool = False, log_level: str = "warning") -> None:
    import uvicorn

    from .app import create_app

    check_bind(host, tls_cert, insecure_bind)
    uvicorn.run(create_app(hub), host=host, port=port, log_level=log_level, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                h11_max_incomplete_event_size=64 * 1024, timeout_keep_alive=30)
