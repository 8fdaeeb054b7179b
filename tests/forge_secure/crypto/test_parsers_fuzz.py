"""Property-based fuzzing of every parser of outside bytes (issue 16, item 1).

Each parser gets inputs from three families, mixed by hypothesis: the valid document with
one JSON value replaced by an arbitrary (deep, huge, wrongly typed) value; the valid bytes
damaged (flips, cuts, inserts, splices of hostile tokens such as 60,000 ``[`` or a 5,000-digit
integer); and arbitrary bytes. The property: the parser returns, or raises its module's one
error type (``BundleError`` for bundles, rosters, key files and timestamps; ``ValueError`` for
the bounded JSON reader that policy, evidence and results files go through). Anything else
(RecursionError, TypeError, a plain ValueError from ``int()``) fails the test.

The default run tries a few hundred inputs per parser; the slow run (``-m slow``) tries at
least 100,000 per parser.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from forge_secure.crypto import BundleError
from forge_secure.crypto import bundle as bundle_mod
from forge_secure.crypto import keys as keys_mod
from forge_secure.crypto import timestamp as ts_mod
from forge_secure.crypto.roster import roster_from_bytes
from forge_secure.fileio import loads_bounded

QUICK, SLOW = 200, 100_000
TOKENS = [b"[" * 60_000, b"{\"a\":" * 3000, b"1" * 5000, b"-" + b"9" * 400, b"1e999", b"NaN", b"-Infinity", b"\"\\ud800\"",
          b"[\"x25519\"]", b"null", b"true", b"{}", b"[]", b"\xff\xfe", b"\"" + b"a" * 5000 + b"\"", b"0.5", b"\x00"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["x25519", "ed25519", "ml-dsa-65", "forge-bundle/1", "forge-roster/2", "2026-06-01T12:00:00Z", "[/x]"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, new):
    if not path:
        return new
    out = json.loads(json.dumps(doc))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


@st.composite
def json_mutation(draw, doc: dict, compact: bool) -> bytes:
    paths = list(_paths(doc))
    path = paths[draw(st.integers(0, len(paths) - 1))]
    new = _replace(doc, path, draw(json_values))
    text = json.dumps(new, sort_keys=True, separators=(",", ":") if compact else None)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def byte_mutation(draw, raw: bytes) -> bytes:
    data = raw
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(len(data), 1)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "token", "delete"]))
        if op == "flip" and data:
            i %= len(data)
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
        elif op == "cut":
            data = data[:i]
        elif op == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
        elif op == "token":
            data = data[:i] + draw(st.sampled_from(TOKENS)) + data[i + draw(st.integers(0, 8)):]
        else:
            data = data[:i] + data[i + draw(st.integers(1, 64)):]
    return data


def inputs(raw: bytes, doc: dict | None, compact: bool = True):
    families = [byte_mutation(raw), st.binary(max_size=256), st.sampled_from(TOKENS)]
    if doc is not None:
        families.insert(0, json_mutation(doc, compact))
    return st.one_of(*families)


def fuzz(parse, strategy, n: int, expected=BundleError) -> int:
    """Run ``parse`` on ``n`` hypothesis inputs; only ``expected`` may come out. Returns the count."""
    count = [0]

    @settings(max_examples=n, derandomize=True, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(data=strategy)
    def prop(data):
        count[0] += 1
        try:
            parse(data)
        except expected:
            pass

    prop()
    return count[0]


# --------------------------------------------------------------------------- the parsers


@pytest.fixture
def seeds(world, kit):
    """Valid inputs of every parser, from one small world."""
    bundle = world.seal("seed.forge").read_bytes()
    parts = kit.split(bundle)
    return {
        "bundle": bundle, "parts": parts, "header": json.loads(parts.header_bytes), "envelope": json.loads(parts.envelope),
        "roster": world.roster.read_bytes(), "public": world.keys["consortium"].public.read_bytes(),
        "private": world.keys["site-1"].signing.read_bytes(), "decryption": world.keys["consortium"].decryption.read_bytes(),
    }


def _bundle_header_parser(world, kit, parts):
    trusted = world.trusted()

    def parse(header: bytes) -> None:
        bundle_mod._verify(io.BytesIO(kit.join(header, parts.wrapped, parts.chunks, parts.envelope)), "<fuzz>", trusted, kit.NOW)

    return parse


def _bundle_envelope_parser(world, kit, parts):
    trusted = world.trusted()

    def parse(envelope: bytes) -> None:
        bundle_mod._verify(io.BytesIO(kit.join(parts.header_bytes, parts.wrapped, parts.chunks, envelope)), "<fuzz>", trusted,
                           kit.NOW)

    return parse


def _whole_bundle_parser(world, kit):
    trusted = world.trusted()

    def parse(data: bytes) -> None:
        bundle_mod._verify(io.BytesIO(data), "<fuzz>", trusted, kit.NOW)

    return parse


def _cases(world, kit, seeds):
    p = seeds["parts"]
    return {
        "bundle-header": (_bundle_header_parser(world, kit, p), inputs(p.header_bytes, seeds["header"]), BundleError),
        "bundle-envelope": (_bundle_envelope_parser(world, kit, p), inputs(p.envelope, seeds["envelope"]), BundleError),
        "bundle-bytes": (_whole_bundle_parser(world, kit), inputs(seeds["bundle"], None), BundleError),
        "roster": (roster_from_bytes, inputs(seeds["roster"], json.loads(seeds["roster"]), compact=False), BundleError),
        "public-key": (keys_mod.public_key_from_bytes, inputs(seeds["public"], json.loads(seeds["public"])), BundleError),
        "private-key": (keys_mod.private_key_from_bytes, inputs(seeds["private"], json.loads(seeds["private"]), compact=False),
                        BundleError),
        "decryption-key": (lambda raw: keys_mod.private_key_from_bytes(raw, role="decryption"),
                           inputs(seeds["decryption"], json.loads(seeds["decryption"]), compact=False), BundleError),
        "timestamp": (ts_mod.timestamp_from_bytes, inputs(ts_seed(world, kit), json.loads(ts_seed(world, kit))), BundleError),
        "json-reader": (loads_bounded, inputs(seeds["roster"], json.loads(seeds["roster"])), ValueError),
    }


def ts_seed(world, kit) -> bytes:
    if not hasattr(world, "_ts_seed"):
        from forge_secure.crypto import load_signing_key

        path = world.root / "timestamp.json"
        ts_mod.issue_timestamp(world.roster, load_signing_key(world.keys["admin-1"].signing), path, now=kit.NOW)
        world._ts_seed = path.read_bytes()
    return world._ts_seed


PARSERS = ["bundle-header", "bundle-envelope", "bundle-bytes", "roster", "public-key", "private-key", "decryption-key",
           "timestamp", "json-reader"]


@pytest.mark.parametrize("name", PARSERS)
def test_parser_is_total_quick(name, world, kit, seeds):
    parse, strategy, expected = _cases(world, kit, seeds)[name]
    assert fuzz(parse, strategy, QUICK, expected) >= QUICK


@pytest.mark.slow
@pytest.mark.parametrize("name", PARSERS)
def test_parser_is_total_100k(name, world, kit, seeds):
    parse, strategy, expected = _cases(world, kit, seeds)[name]
    assert fuzz(parse, strategy, SLOW, expected) >= SLOW
