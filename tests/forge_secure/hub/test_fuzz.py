"""Malformed HTTP: broken request lines and headers on the wire, random bodies, headers and
query strings on every write and query endpoint. The hub answers 4xx (or closes the
connection), never 5xx, stores nothing, and keeps serving."""

from __future__ import annotations

import base64
import json
import socket

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RAW = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n",
    b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\nForge-Request: \x00\x01\r\nContent-Length: 1\r\n\r\nx",
    b"GET /v1/log/consistency?old=%ff%fe&new=-1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/push HTTP/9.9\r\nHost: x\r\n\r\n",
]


def _status(raw: bytes, port: int) -> int | None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            return None
    if not data:
        return None  # the server closed the connection
    return int(data.split(b" ", 2)[1])


def test_malformed_requests_on_the_wire(live_hub):
    env, url = live_hub()
    port = int(url.rsplit(":", 1)[1])
    before = env.state()
    for raw in RAW:
        status = _status(raw, port)
        assert status is None or 400 <= status < 500, (raw[:80], status)
        assert httpx.get(f"{url}/v1/info").status_code == 200
    assert env.state() == before


ENDPOINTS = ["/v1/push", "/v1/budgets", "/v1/releases", "/v1/roster", "/v1/blobs"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({"payload": st.text(max_size=40), "signatures": json_values}).map(lambda v: json.dumps(v).encode()),
    ),
    header=st.one_of(
        st.none(),
        st.text(max_size=40).map(lambda t: base64.b64encode(t.encode()).decode()),
        st.text(alphabet="abcdefABCDEF0123456789+/=", max_size=60),
    ),
)
def test_random_bodies_and_headers(hub_env_once, endpoint, body, header):
    env = hub_env_once
    headers = {"forge-request": header} if header is not None else {}
    resp = env.client.post(endpoint, content=body, headers=headers)
    assert 400 <= resp.status_code < 500, (endpoint, body[:80], resp.status_code, resp.text[:300])
    err = resp.json()["error"]
    assert err["code"] and err["message"] and err["fix"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(
        [
            "/v1/log/consistency",
            "/v1/log/entries",
            "/v1/submissions/x/receipt",
            "/v1/receipt",
            "/audit/x",
            "/v1/bundles/zz",
            "/tuf/metadata/../../x",
            "/tuf/targets/x.y",
        ]
    ),
    params=st.dictionaries(st.sampled_from(["old", "new", "start", "limit", "size", "bundle", "site"]), st.text(max_size=12), max_size=3),
)
def test_random_queries(hub_env_once, path, params):
    resp = hub_env_once.client.get(path, params=params)
    assert resp.status_code < 500, (path, params, resp.text[:300])
