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


def build_hub(
    *,
    store: str | Path | None = None,
    db_url: str | None = None,
    key_dir: str | Path | None = None,
    roster: str | Path | None = None,
    origin: str | None = None,
    max_bundle: int | None = None,
    budgets: dict | None = None,
    default_budget: float | None = None,
    ledger_delta: float | None = None,
    timestamp_key=None,
    timestamp_lifetime: int | None = None,
) -> Hub:
    from ..crypto.timestamp import DEFAULT_LIFETIME
    from .freshness import check_lifetime
    from .ledger import DEFAULT_DELTA
    from .service import DEFAULT_MAX_BUNDLE

    config = HubConfig(
        store=Path(store) if store else forge_home() / "hub" / "store",
        db_url=db_url,
        key_dir=Path(key_dir) if key_dir else None,
        origin=origin,
        max_bundle=max_bundle or DEFAULT_MAX_BUNDLE,
        ledger_delta=ledger_delta or DEFAULT_DELTA,
        timestamp_key=timestamp_key,
        timestamp_lifetime=check_lifetime(timestamp_lifetime or DEFAULT_LIFETIME),
    )
    return Hub(config, roster=roster, budgets=budgets, default_budget=default_budget)


def check_bind(host: str, tls_cert: str | None, insecure_bind: bool) -> None:
    """Refuse plain HTTP on a non-loopback address (before anything is built)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not tls_cert and not insecure_bind:
        raise ForgeValueError(
            f"--host {host} is not a loopback address and no TLS certificate is given",
            fix="serve on 127.0.0.1 behind a TLS reverse proxy, or give --tls-cert and --tls-key",
            code="hub.insecure",
        )


def tune_malloc(mmap_threshold: int = 4 << 20, trim_threshold: int = 64 << 20, top_pad: int = 16 << 20) -> bool:
    """Keep the allocator from returning and re-faulting pages for every upload chunk (glibc).

    An upload arrives in chunks of about 256 kB, each copied into fresh ``bytes`` by uvicorn;
    above glibc's default thresholds (128 kB, adjusted at run time) such buffers are mapped
    and unmapped, or the heap top is trimmed, chunk after chunk, and touching fresh pages
    costs more than the copying itself (measured here: uvicorn alone took 30 ms of CPU per
    16 MiB received, 10 ms with these settings). ``mallopt(3)``: buffers below
    ``mmap_threshold`` come from the heap, which keeps up to ``trim_threshold`` free bytes.
    A no-op returning False where glibc's ``mallopt`` is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    return all(
        mallopt(opt, value) == 1
        for opt, value in ((M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold), (M_TOP_PAD, top_pad))
    )


def _protocol():
    """uvicorn's httptools protocol, handing a request's body on without two of its copies.

    uvicorn appends each received body piece to a ``bytearray`` and gives the application
    ``bytes(...)`` of it: two copies of every uploaded byte on the event loop. When the
    request holds no unread body yet (the case while an upload streams: each piece is read
    before the next arrives), this keeps the piece itself, and ``bytes()`` of a ``bytes`` is
    the same object. Everything else (flow control, a second piece before the first is
    read, upgrades, a finished response) is uvicorn's own code."""
    from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if cycle.body or cycle.response_complete or self.parser.should_upgrade():
                return super().on_body(body)
            cycle.body = body  # type: ignore[assignment]  # read by bytes(cycle.body): the same object
            if len(body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()

    return Protocol


def serve(
    hub: Hub,
    *,
    host: str = "127.0.0.1",
    port: int = 8613,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    insecure_bind: bool = False,
    log_level: str = "warning",
) -> None:
    import uvicorn

    from .app import create_app

    check_bind(host, tls_cert, insecure_bind)
    tune_malloc()
    uvicorn.run(
        create_app(hub),
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        http=_protocol(),
        h11_max_incomplete_event_size=64 * 1024,
        timeout_keep_alive=30,
    )
