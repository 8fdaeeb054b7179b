"""The protocol `forge hub serve` runs (server._protocol: uvicorn's httptools protocol that
hands body pieces on without copying them into a bytearray): uploads sent in pieces of every
size, with pauses and all at once, and requests on one kept-alive connection arrive whole."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest
import uvicorn

from forge_secure.hub.app import create_app
from forge_secure.hub.server import _protocol


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):  # the protocol does not depend on the database
    return f"sqlite:///{tmp_path / 'hub.sqlite3'}"


@pytest.fixture
def served(hub_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(hub_env.hub), host="127.0.0.1", port=port, log_level="warning", http=_protocol()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield hub_env, port
    server.should_exit = True
    thread.join(10)


def _response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body[:length]


@pytest.mark.parametrize("piece", [1, 1000, 65536, 300_000, None])
def test_uploads_in_any_pieces_arrive_whole(served, piece):
    import json

    env, port = served
    data = env.consortium.seal("site-1", rows=4096).read_bytes()
    head = f"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if piece is None:
            sock.sendall(head.encode() + data)  # everything at once
        else:
            sock.sendall(head.encode())
            for i in range(0, len(data), piece):
                sock.sendall(data[i : i + piece])
                if i // piece % 7 == 0:
                    time.sleep(0.001)  # let some pieces be read alone, others pile up
        status, body = _response(sock)
        assert status == 200, body
        entry = json.loads(json.loads(body)["entry"])
        assert entry["bundle_sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
        # the same connection, kept alive: a bad upload is refused cleanly, then another one accepted
        bad = data[: len(data) // 2]
        sock.sendall(f"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: {len(bad)}\r\n\r\n".encode() + bad)
        status, body = _response(sock)
        assert status == 400 and json.loads(body)["error"]["code"].startswith("bundle.")
        again = env.consortium.seal("site-1").read_bytes()
        sock.sendall(f"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: {len(again)}\r\n\r\n".encode() + again)
        status, body = _response(sock)
        assert status == 200 and json.loads(json.loads(body)["entry"])["bundle_sha256"] == hashlib.sha256(again).hexdigest()
