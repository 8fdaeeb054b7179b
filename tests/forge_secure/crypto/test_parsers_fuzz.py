"""Property-based fuzzing of every parser of outside bytes in the crypto area (issue 16, item 1).

Parsers: the bundle header, the bundle envelope, whole bundles, rosters, public key files,
secret key files (signing, decryption, and passphrase-protected format 2), timestamps, the
pinned-root state file and a pin digest, the replay store, the sequence counter, and the
bounded JSON reader that policy, evidence and results files go through.

Inputs are structure-aware mutations of valid files (the machinery is in this directory's
conftest.py): one to three JSON values replaced by hostile ones (60,000 ``[``, 5,000-digit
integers, floats, lists where a name belongs, every wrong type), fields dropped, added or
swapped; the valid bytes flipped, cut, extended, spliced with another valid file, or given
hostile tokens; and random bytes. The property: the parser returns, or raises its module's
one error type with a dotted code (``BundleError`` for everything here; ``ValueError`` for
``loads_bounded``, which has no codes and is wrapped by its callers). Any other exception is
counted as a crash.

Counts: the default run tries ``forge-fuzz-quick`` (200) inputs per parser; the slow run
(``-m slow``) ``forge-fuzz-slow`` (100,000). ``FORGE_FUZZ_EXAMPLES=N`` overrides both;
``FORGE_FUZZ_REPORT=FILE`` appends one JSON line per parser (inputs, refusals, crashes).

Measured: the slow run, once, 2026-12-03, on the shared 2-core machine (load 7-12), each
parser 100,000 inputs (10,000 hypothesis examples of 10 seeded mutations):

    parser              refused   accepted  crashes
    bundle-header        99,948         52        0   (accepted: unchanged seeds only)
    bundle-envelope      99,912         88        0   (accepted: unchanged seeds only)
    bundle-bytes         99,985         15        0   (accepted: unchanged seeds only)
    roster               98,794      1,206        0
    public-key           97,585      2,415        0
    signing-key          97,558      2,442        0   (first run: 4, fixed)
    decryption-key       97,567      2,433        0
    protected-key        99,769        231        0
    timestamp            97,180      2,820        0
    trust-state          96,289      3,711        0
    pin-digest           94,612      5,388        0
    replay-store         88,781     11,219        0
    sequence-counter     82,919     17,081        0
    json-reader          49,840     50,160        0

Crashes found and fixed: a PKCS#8 key whose algorithm identifier was damaged raised
cryptography's ``UnsupportedAlgorithm`` (4 in the first signing-key run); a protected key with a
lone surrogate in a field raised ``ForgeDataError`` from canonical JSON. Both are regression
tests at the end of this module. ("Accepted" for the JSON parsers are mutations that keep the
document valid, e.g. another serialisation; for bundles only the unchanged seeds are accepted,
which the harness checks.)

Reproduce: ``FORGE_FUZZ_REPORT=fuzz.jsonl pytest -m slow -n 0 tests/forge_secure/crypto/test_parsers_fuzz.py``
"""

from __future__ import annotations

import functools
import io
import json

import pytest

from forge_secure.crypto import BundleError, load_signing_key
from forge_secure.crypto import bundle as bundle_mod
from forge_secure.crypto import keys as keys_mod
from forge_secure.crypto import replay as replay_mod
from forge_secure.crypto import timestamp as ts_mod
from forge_secure.crypto import trust as trust_mod
from forge_secure.crypto.roster import read_roster, roster_from_bytes
from forge_secure.fileio import loads_bounded

PASSPHRASE = b"correct horse battery staple"
PARSERS = [
    "bundle-header",
    "bundle-envelope",
    "bundle-bytes",
    "roster",
    "public-key",
    "signing-key",
    "decryption-key",
    "protected-key",
    "timestamp",
    "trust-state",
    "pin-digest",
    "replay-store",
    "sequence-counter",
    "json-reader",
]


def _targets(world, kit, fuzzing, monkeypatch) -> dict:
    T = fuzzing.Target
    trusted = world.trusted()  # pins the roster: FORGE_HOME/roster/medforge.json is the state file
    b1, b2 = world.seal("seed-1.forge").read_bytes(), world.seal("seed-2.forge").read_bytes()
    p1, p2 = kit.split(b1), kit.split(b2)

    def header(raw: bytes) -> None:
        bundle_mod._verify(io.BytesIO(kit.join(raw, p1.wrapped, p1.chunks, p1.envelope)), "<fuzz>", trusted, kit.NOW)

    def envelope(raw: bytes) -> None:
        bundle_mod._verify(io.BytesIO(kit.join(p1.header_bytes, p1.wrapped, p1.chunks, raw)), "<fuzz>", trusted, kit.NOW)

    def whole(raw: bytes) -> None:
        bundle_mod._verify(io.BytesIO(raw), "<fuzz>", trusted, kit.NOW)

    # a second roster version (a revocation) for splices
    roster2 = world.root / "roster-2.json"
    roster2.write_bytes(world.roster.read_bytes())
    kit_revoke = __import__("forge_secure.crypto", fromlist=["revoke_key"]).revoke_key
    kit_revoke(roster2, world.keys["site-2"].public_key.key_id, reason="fuzz seed", at=kit.NOW)

    # a format-2 (scrypt) key at the lowest accepted work factor; scrypt results are memoised
    # so mutations that keep the parameters do not pay ~50 ms each (the parser is unchanged)
    protected = world.root / "protected.key"
    protected.write_bytes(world.keys["site-2"].signing.read_bytes())
    protected.chmod(0o600)
    keys_mod.protect_key_file(protected, None, PASSPHRASE, log_n=14, random=kit.Drbg("fuzz protect"))
    monkeypatch.setattr(keys_mod, "_scrypt", functools.lru_cache(maxsize=4096)(keys_mod._scrypt))

    ts_path = world.root / "timestamp.json"
    ts_mod.issue_timestamp(world.roster, load_signing_key(world.keys["admin-1"].signing), ts_path, now=kit.NOW)

    state_file = trust_mod._state_path("medforge", None)
    roster_obj = read_roster(world.roster)

    def state(raw: bytes) -> None:
        s = trust_mod.state_from_bytes(raw, "<fuzz state>")
        trust_mod._check_chain(roster_obj, s, state_file)
        if s.document is not None:
            from forge_secure.crypto.roster import parse_roster

            parse_roster(s.document, "<fuzz state>")

    def pin_digest(raw: bytes) -> None:
        trust_mod._digest_text(raw.decode("utf-8", "replace"))

    world.open(world.root / "seed-1.forge", out="opened-seed")  # writes the replay store
    store = replay_mod.ReplayStore()
    v1_store = json.dumps({"sites": {"site-1": 3}, "submissions": {"ab" * 16: {"site": "site-1", "sequence": 3}}}).encode()
    counter = replay_mod.SequenceCounter()
    counter_bytes = (counter.root / "site-1.json").read_bytes()

    return {
        "bundle-header": T("bundle-header", header, [p1.header_bytes, p2.header_bytes], expected=BundleError, only_seeds_valid=True),
        "bundle-envelope": T("bundle-envelope", envelope, [p1.envelope, p2.envelope], expected=BundleError, only_seeds_valid=True),
        "bundle-bytes": T("bundle-bytes", whole, [b1, b2], expected=BundleError, json_doc=False, only_seeds_valid=True),
        "roster": T("roster", roster_from_bytes, [world.roster.read_bytes(), roster2.read_bytes()], expected=BundleError),
        "public-key": T(
            "public-key",
            keys_mod.public_key_from_bytes,
            [world.keys["consortium"].public.read_bytes(), world.keys["site-1"].public.read_bytes()],
            expected=BundleError,
        ),
        "signing-key": T(
            "signing-key",
            lambda raw: keys_mod.private_key_from_bytes(raw, role="signing"),
            [world.keys["site-1"].signing.read_bytes(), world.keys["admin-1"].signing.read_bytes()],
            expected=BundleError,
        ),
        "decryption-key": T(
            "decryption-key",
            lambda raw: keys_mod.private_key_from_bytes(raw, role="decryption"),
            [world.keys["consortium"].decryption.read_bytes(), world.keys["other"].decryption.read_bytes()],
            expected=BundleError,
        ),
        "protected-key": T(
            "protected-key", lambda raw: keys_mod.private_key_from_bytes(raw, PASSPHRASE), [protected.read_bytes()], expected=BundleError
        ),
        "timestamp": T("timestamp", ts_mod.timestamp_from_bytes, [ts_path.read_bytes()], expected=BundleError),
        "trust-state": T("trust-state", state, [state_file.read_bytes()], expected=BundleError),
        "pin-digest": T(
            "pin-digest",
            pin_digest,
            [b"sha256:" + roster_obj.digest.encode(), roster_obj.digest.encode()],
            expected=BundleError,
            json_doc=False,
        ),
        "replay-store": T("replay-store", replay_mod.store_from_bytes, [store.path.read_bytes(), v1_store], expected=BundleError),
        "sequence-counter": T("sequence-counter", replay_mod.counter_from_bytes, [counter_bytes], expected=BundleError),
        "json-reader": T("json-reader", loads_bounded, [world.roster.read_bytes(), ts_path.read_bytes()], expected=ValueError, coded=False),
    }


@pytest.mark.parametrize("name", PARSERS)
def test_parser_is_total_quick(name, world, kit, fuzzing, monkeypatch):
    target = _targets(world, kit, fuzzing, monkeypatch)[name]
    run = fuzzing.run(target, "quick")
    fuzzing.assert_total(run, fuzzing.count("quick"))


@pytest.mark.slow
@pytest.mark.parametrize("name", PARSERS)
def test_parser_is_total_100k(name, world, kit, fuzzing, monkeypatch):
    target = _targets(world, kit, fuzzing, monkeypatch)[name]
    run = fuzzing.run(target, "slow")
    fuzzing.assert_total(run, fuzzing.count("slow"))


def test_seeds_parse(world, kit, fuzzing, monkeypatch):
    """The first seed of each parser is accepted (the others are there to be spliced in): the fuzz
    starts from valid files, so its refusals are refusals of damage."""
    for target in _targets(world, kit, fuzzing, monkeypatch).values():
        target.parse(target.seeds[0])


# --------------------------------------------------------------------------- crashes the fuzz found (regressions)


def test_pkcs8_with_a_damaged_algorithm_identifier_is_key_invalid(world):
    """Found by the slow fuzz: a byte flip inside the PKCS#8 algorithm OID made cryptography
    raise UnsupportedAlgorithm (neither ValueError nor TypeError), which escaped as a crash."""
    raw = world.keys["site-1"].signing.read_bytes()
    doc = json.loads(raw)
    pem = doc["pkcs8"]["ed25519"]
    doc["pkcs8"]["ed25519"] = pem.replace("MC4CAQAwBQYDK2Vw", "MC4CAQAwBQYDq2Vw")  # OID 1.3.101.112 -> another arc
    assert doc["pkcs8"]["ed25519"] != pem
    with pytest.raises(BundleError) as e:
        keys_mod.private_key_from_bytes(json.dumps(doc).encode(), role="signing")
    assert e.value.code == "key.invalid"


def test_protected_key_with_a_lone_surrogate_is_key_invalid(world, kit):
    """Found by the fuzz: a field holding a lone surrogate made the associated data's
    canonical JSON raise ForgeDataError instead of the key's BundleError."""
    path = world.root / "p.key"
    path.write_bytes(world.keys["site-2"].signing.read_bytes())
    path.chmod(0o600)
    keys_mod.protect_key_file(path, None, PASSPHRASE, log_n=14, random=kit.Drbg("surrogate"))
    doc = json.loads(path.read_bytes())
    doc["aead"] = "aes-256-gcm"
    doc["extra"] = "\ud800"
    raw = json.dumps(doc).encode()
    with pytest.raises(BundleError) as e:
        keys_mod.private_key_from_bytes(raw, PASSPHRASE)
    assert e.value.code == "key.invalid"
