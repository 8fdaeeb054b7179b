"""Sealed bundles end to end with real cryptography: round trips and every bad input of issue 3."""

from __future__ import annotations

import base64
import dataclasses
import filecmp
import hashlib
import json
import os

import pytest

from forge_secure.crypto import BundleError, ReplayStore, SequenceCounter, load_signing_key, revoke_key, sign_roster
from forge_secure.crypto import _primitives as P
from forge_secure.crypto.bundle import INFO_LABEL, PAYLOAD_TYPE
from forge_secure.errors import ForgeDataError, ForgeFileError
from forge_secure.fileio import canonical_json


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d)) for d in cmp.common_dirs)


def resign(world, data: bytes, kit, *, site="site-1", header_edit=None, rewrap_key=None, recipient="consortium", chunks=None) -> bytes:
    """What a trusted signer could do: change the bundle and sign again (with its own key).

    ``header_edit`` edits header and manifest consistently; ``rewrap_key`` (the data key,
    known to the sealer) wraps it again under the new header's info."""
    parts = kit.split(data)
    header, wrapped = dict(parts.header), parts.wrapped
    statement = json.loads(base64.b64decode(json.loads(parts.envelope)["payload"]))
    manifest = statement["predicate"]
    if header_edit:
        header_edit(header, manifest)
        header["manifest_sha256"] = hashlib.sha256(canonical_json(manifest)).hexdigest()
    header_bytes = canonical_json(header)
    if rewrap_key is not None:
        pre = b"FORGEBDL" + len(header_bytes).to_bytes(4, "big") + header_bytes
        kem = P.KEMS.get(header["algorithms"]["kem"])
        wrapped = P.hpke_wrap(kem, world.keys[recipient].public_key.encryption_key, rewrap_key, INFO_LABEL + hashlib.sha256(pre).digest())
    chunks = parts.chunks if chunks is None else chunks
    body = kit.join(header_bytes, wrapped, chunks, b"x")[: -(4 + 1)]
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(body).hexdigest()
    head = kit.join(header_bytes, wrapped, [], b"x")[: -(4 + 1)]
    for item, suffix in zip(statement["subject"], ("payload", "header"), strict=True):
        item["name"] = f"{manifest['submission_id']}.{suffix}"
    statement["subject"][1]["digest"]["sha256"] = hashlib.sha256(head).hexdigest()
    statement["predicate"] = manifest
    payload = canonical_json(statement)
    signer = world.signer(site)
    sigs = signer.sign_all(P.pae(PAYLOAD_TYPE, payload))
    envelope = canonical_json(
        {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": f"{a}:{signer.key_id}", "sig": base64.b64encode(s).decode()} for a, s in sigs.items()],
        }
    )
    return kit.join(header_bytes, wrapped, chunks, envelope)


def expect(code_or_codes, fn, *args, **kw) -> BundleError:
    codes = (code_or_codes,) if isinstance(code_or_codes, str) else code_or_codes
    with pytest.raises(BundleError) as info:
        fn(*args, **kw)
    assert info.value.code in codes, (info.value.code, str(info.value))
    assert "\n" not in str(info.value)
    return info.value


def no_output(world, out="opened"):
    leftovers = [p.name for p in world.root.iterdir() if p.name.startswith(f".{out}.")]
    return not (world.root / out).exists() and not leftovers


# --------------------------------------------------------------------------- round trips


def test_round_trip_classic(world):
    path = world.seal()
    v = world.verify(path)
    assert (v.site, v.sequence, v.base_digest) == ("site-1", 1, "ab" * 32)
    assert v.dp["epsilon"] == "3.2" and v.dp["delta"] == "0.001" and v.dp["enabled"] is True
    assert v.algorithms["kem"] == "x25519" and v.algorithms["signature"] == ["ed25519"]
    assert v.signer == world.keys["site-1"].public_key.key_id
    opened = world.open(path)
    assert same_tree(world.plugin, opened.out)
    assert set(opened.files) == {"adapter_config.json", "adapter_model.safetensors", "forge.json"}


def test_clear_part_holds_no_plaintext_hashes_or_weights(world):
    data = world.seal().read_bytes()
    weights = (world.plugin / "adapter_model.safetensors").read_bytes()
    for f in world.plugin.iterdir():
        digest = hashlib.sha256(f.read_bytes())
        assert digest.hexdigest().encode() not in data
        assert base64.b64encode(digest.digest()) not in data
    assert weights[-64:] not in data  # the weights themselves are not in the clear


def test_post_quantum_round_trip(tmp_path, kit):
    world = kit.build_world(tmp_path, post_quantum=True)
    path = world.seal()
    v = world.verify(path)
    assert v.post_quantum and v.algorithms["kem"] == "ml-kem-768+x25519"
    assert v.algorithms["signature"] == ["ed25519", "ml-dsa-65"]
    env = json.loads(kit.split(path.read_bytes()).envelope)
    assert [s["keyid"].split(":")[0] for s in env["signatures"]] == ["ed25519", "ml-dsa-65"]
    assert same_tree(world.plugin, world.open(path).out)


def test_post_quantum_needs_both_signatures(tmp_path, kit):
    world = kit.build_world(tmp_path, post_quantum=True)
    data = world.seal().read_bytes()
    parts = kit.split(data)
    env = json.loads(parts.envelope)
    for keep in ("ed25519", "ml-dsa-65"):
        stripped = dict(env, signatures=[s for s in env["signatures"] if s["keyid"].startswith(keep)])
        bad = tmp_path / f"only-{keep}.forge"
        bad.write_bytes(kit.join(parts.header_bytes, parts.wrapped, parts.chunks, canonical_json(stripped)))
        expect("bundle.signature", world.verify, bad)


def test_sequence_counter_and_explicit_sequence(world):
    assert world.verify(world.seal("1.forge")).sequence == 1
    assert world.verify(world.seal("2.forge")).sequence == 2
    assert world.verify(world.seal("10.forge", sequence=10)).sequence == 10
    assert world.verify(world.seal("11.forge")).sequence == 11
    assert SequenceCounter().last("site-1") == 11


def test_large_multi_chunk_round_trip(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=20_000)  # ~640 KB of weights, 157 chunks of 4 KiB
    path = world.seal()
    assert world.verify(path).chunks > 100
    assert same_tree(world.plugin, world.open(path).out)


# --------------------------------------------------------------------------- tampering


def test_every_flipped_byte_is_refused(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=8)  # a small bundle, so every one of its bytes can be flipped
    data = world.seal().read_bytes()
    for i in range(len(data)):
        mutated = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        expect(
            (
                "bundle.format",
                "bundle.truncated",
                "bundle.trailing",
                "bundle.signature",
                "bundle.envelope",
                "bundle.digest",
                "bundle.version",
                "bundle.algorithm",
                "bundle.untrusted_signer",
                "bundle.statement",
            ),
            world.verify_bytes,
            mutated,
        )


def test_flipped_bytes_fail_open_and_leave_nothing(world):
    data = world.seal().read_bytes()
    bad = world.root / "bad.forge"
    for i in (0, 20, len(data) // 2, len(data) - 200, len(data) - 1):
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1 :])
        with pytest.raises(BundleError):
            world.open(bad)
        assert no_output(world)


def test_truncation_at_every_length_is_refused(world):
    data = world.seal().read_bytes()
    for n in range(len(data)):
        err = expect(("bundle.empty", "bundle.truncated", "bundle.format"), world.verify_bytes, data[:n])
        if n == 0:
            assert err.code == "bundle.empty"
        elif n > 12:
            assert err.code in ("bundle.truncated", "bundle.format")
    cut = world.root / "cut.forge"
    cut.write_bytes(data[: len(data) // 2])
    expect("bundle.truncated", world.verify, cut)
    expect("bundle.truncated", world.open, cut)
    assert no_output(world)


def test_reordered_chunks_are_refused(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=1024)
    data = world.seal().read_bytes()
    p = kit.split(data)
    assert len(p.chunks) >= 3
    swapped = p.chunks[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    bad = tmp_path / "swapped.forge"
    bad.write_bytes(kit.join(p.header_bytes, p.wrapped, swapped, p.envelope))
    expect("bundle.digest", world.verify, bad)
    # even re-signed by the trusted site itself, the chunk counter in the nonce catches it
    bad.write_bytes(resign(world, kit.join(p.header_bytes, p.wrapped, swapped, p.envelope), kit))
    world.verify(bad)
    expect("bundle.chunk", world.open, bad)
    assert no_output(world)
    # a chunk dropped from the end (with the header still claiming it) and one dropped in the middle
    bad.write_bytes(resign(world, data, kit, chunks=[p.chunks[0], p.chunks[2]] + p.chunks[2:]))
    expect("bundle.chunk", world.open, bad)  # chunk 1 replaced by a copy of chunk 2


def test_last_chunk_flag_is_authenticated(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=1024)
    p = kit.split(world.seal().read_bytes())
    # claim one chunk fewer: the (full-size) second-to-last chunk becomes "last"
    cut = p.header["payload_size"] - (p.header["payload_size"] - 1) % p.header["chunk_size"] - 1

    def shorten(header, manifest):
        for d in (header, manifest):
            d["payload_size"], d["chunks"] = cut, d["chunks"] - 1

    bad = tmp_path / "short.forge"
    data = kit.join(p.header_bytes, p.wrapped, p.chunks, p.envelope)
    drbg = kit.Drbg("flag")
    drbg(16)
    bad.write_bytes(resign(world, data, kit, chunks=p.chunks[:-1], header_edit=shorten))
    world.verify(bad)
    expect("bundle.key_unwrap", world.open, bad)


def test_spliced_chunk_from_another_bundle_is_refused(tmp_path, kit):
    world = kit.build_world(tmp_path, rows=1024)
    a = kit.split(world.seal("a.forge").read_bytes())
    b = kit.split(world.seal("b.forge").read_bytes())
    spliced = a.chunks[:1] + b.chunks[1:2] + a.chunks[2:]
    bad = tmp_path / "spliced.forge"
    bad.write_bytes(kit.join(a.header_bytes, a.wrapped, spliced, a.envelope))
    expect("bundle.digest", world.verify, bad)
    bad.write_bytes(resign(world, kit.join(a.header_bytes, a.wrapped, spliced, a.envelope), kit))
    expect("bundle.chunk", world.open, bad)
    assert no_output(world)


def test_swapped_payloads_between_two_valid_bundles_are_refused(world, kit):
    a = kit.split(world.seal("a.forge").read_bytes())
    b = kit.split(world.seal("b.forge").read_bytes())
    bad = world.root / "swap.forge"
    for candidate in (
        kit.join(a.header_bytes, a.wrapped, b.chunks, a.envelope),  # A's header, B's ciphertext
        kit.join(a.header_bytes, b.wrapped, b.chunks, a.envelope),  # B's key and ciphertext
        kit.join(b.header_bytes, b.wrapped, b.chunks, a.envelope),
    ):  # B's body, A's signature
        bad.write_bytes(candidate)
        expect(("bundle.digest", "bundle.format"), world.verify, bad)
    bad.write_bytes(resign(world, kit.join(a.header_bytes, a.wrapped, b.chunks, a.envelope), kit))
    expect("bundle.chunk", world.open, bad)
    bad.write_bytes(resign(world, kit.join(a.header_bytes, b.wrapped, a.chunks, a.envelope), kit))
    expect("bundle.key_unwrap", world.open, bad)
    assert no_output(world)


@pytest.mark.parametrize(
    "field,value,codes",
    [
        ("format", "forge-bundle/2", ("bundle.version",)),
        ("kem", "ml-kem-768+x25519", ("bundle.format",)),
        ("kem", "x448", ("bundle.algorithm",)),
        ("aead", "aes-128-gcm", ("bundle.algorithm",)),
        ("stream", "aes-256-gcm-chunked/0", ("bundle.algorithm",)),
        ("signature", ["ed25519", "ml-dsa-65"], ("bundle.signature", "bundle.format")),
        ("chunk_size", 8192, ("bundle.format",)),
    ],
)
def test_changed_algorithm_or_version_fields_are_refused(world, kit, field, value, codes):
    p = kit.split(world.seal().read_bytes())
    header = dict(p.header)
    if field in ("format", "chunk_size"):
        header[field] = value
    else:
        header["algorithms"] = dict(header["algorithms"], **{field: value})
    bad = world.root / "changed.forge"
    bad.write_bytes(kit.join(canonical_json(header), p.wrapped, p.chunks, p.envelope))
    expect(codes, world.verify, bad)


def test_header_is_bound_into_hpke_info_and_chunk_aad(world, kit):
    """A sealer that changes its own header after encryption and signs again still fails:
    the old wrapped key no longer unwraps (HPKE info), and a re-wrapped key no longer
    authenticates the chunks (AES-GCM associated data)."""
    drbg = kit.Drbg("bound")
    path = world.seal(random=drbg)
    data_key = kit.Drbg("bound")
    data_key(16)
    key = data_key(32)  # the same data key the sealer drew

    def edit(header, manifest):
        header["nonce_prefix"] = "00" * 8

    bad = world.root / "edited.forge"
    bad.write_bytes(resign(world, path.read_bytes(), kit))
    assert world.open(bad, out="control").files  # control: re-signing alone changes nothing
    bad.write_bytes(resign(world, path.read_bytes(), kit, header_edit=edit))
    world.verify(bad)
    expect("bundle.key_unwrap", world.open, bad, out="edited")

    def edit_seq(header, manifest):
        manifest["sequence"], manifest["submission_id"] = 99, "ff" * 16

    bad.write_bytes(resign(world, path.read_bytes(), kit, header_edit=edit_seq, rewrap_key=key))
    world.verify(bad)
    expect("bundle.chunk", world.open, bad, out="edited")
    assert no_output(world, "edited")


def test_trailing_bytes_are_refused(world):
    path = world.seal()
    bad = world.root / "long.forge"
    bad.write_bytes(path.read_bytes() + b"\x00")
    expect("bundle.trailing", world.verify, bad)


# --------------------------------------------------------------------------- trust


def test_signer_not_in_roster(world):
    path = seal_as(world, "stranger")
    expect("bundle.untrusted_signer", world.verify, path)
    expect("bundle.untrusted_signer", world.open, path)
    assert no_output(world)


def seal_as(world, who, **kw):
    from forge_secure.crypto import seal

    return seal(
        world.plugin,
        world.signer(who),
        world.keys["consortium"].public,
        world.root / f"{who}.forge",
        now=kw.pop("now", world_now()),
        chunk_size=4096,
        **kw,
    )


def world_now():
    from forge_secure.crypto import _time

    return _time.parse_time("2026-06-01T12:00:00Z", "now")


def test_signer_claiming_another_site(world):
    impostor = dataclasses.replace(world.signer("site-2"), site="site-1")
    from forge_secure.crypto import seal

    path = seal(world.plugin, impostor, world.keys["consortium"].public, world.root / "imp.forge", now=world_now())
    err = expect("bundle.untrusted_signer", world.verify, path)
    assert "site-2" in str(err)


def test_revoked_signer(world, kit):
    path = world.seal()
    revoke_key(world.roster, world.keys["site-1"].public_key.key_id, reason="laptop stolen", at=kit.NOW)
    sign_roster(world.roster, load_signing_key(world.keys["admin-1"].signing))
    err = expect("bundle.revoked", world.verify, path)
    assert "laptop stolen" in str(err)


def test_expired_signer_key(world, kit):
    path = world.seal()
    expect("bundle.expired_key", world.verify, path, now=kit.NOW + 200 * kit.DAY)
    early = world.seal("early.forge", now=kit.NOW - 60 * kit.DAY)  # before the key's not_before
    expect("bundle.expired_key", world.verify, early)


def test_expired_roster_and_rollback(world, kit):
    path = world.seal()
    expect("roster.expired", world.verify, path, now=kit.NOW + 400 * kit.DAY)
    old = world.root / "old-roster.json"
    old.write_bytes(world.roster.read_bytes())
    world.verify(path)  # remembers version 3
    revoke_key(world.roster, world.keys["site-2"].public_key.key_id, reason="left the consortium", at=kit.NOW)
    sign_roster(world.roster, load_signing_key(world.keys["admin-1"].signing))
    world.verify(path)  # now version 4 is remembered
    expect("roster.rollback", world.verify, path, roster=old)
    expect("roster.rollback", world.open, path, roster=old)
    assert no_output(world)


def test_future_bundle_is_refused(world, kit):
    path = world.seal(now=kit.NOW + 3600)
    expect("bundle.future", world.verify, path)


# --------------------------------------------------------------------------- open


def test_wrong_recipient(world):
    path = world.seal()
    expect("bundle.wrong_recipient", world.open, path, key="other")
    assert no_output(world)


def test_replay_by_id_and_by_sequence(world):
    first = world.seal("1.forge")
    second = world.seal("2.forge")
    world.open(second, out="o2")
    expect("bundle.replay", world.open, second, out="o2b")  # same submission id
    # with a window of 1, sequence 1 is too old once 2 was accepted
    expect("bundle.replay", world.open, first, out="o1", replay=ReplayStore(window=1))
    assert no_output(world, "o1") and no_output(world, "o2b")
    # with the default window (64), bundles may arrive out of order, each accepted once
    assert world.open(first, out="o1").verified.sequence == 1
    expect("bundle.replay", world.open, first, out="o1b")
    third = world.seal("3.forge")
    assert world.open(third, out="o3").verified.sequence == 3
    assert ReplayStore().last_sequence("site-1") == 3


def test_empty_file_directory_and_garbage(world):
    empty = world.root / "empty.forge"
    empty.write_bytes(b"")
    expect("bundle.empty", world.verify, empty)
    expect("file.is_directory", world.verify, world.root)
    expect("file.missing", world.verify, world.root / "nope.forge")
    garbage = world.root / "garbage.forge"
    garbage.write_bytes(os.urandom(0) + b"not a bundle at all" * 10)
    expect("bundle.format", world.verify, garbage)
    expect("bundle.format", world.verify, world.roster)  # a roster where a bundle was expected


def test_open_refuses_existing_output(world):
    path = world.seal()
    (world.root / "busy").mkdir()
    (world.root / "busy" / "x").write_text("keep me")
    expect("file.exists", world.open, path, out="busy")
    assert (world.root / "busy" / "x").read_text() == "keep me"
    expect("file.not_a_directory", world.open, path, out="roster.json")


def test_open_refuses_a_symlink_as_output_and_consumes_nothing(world):
    """--out pointing through a symbolic link would be replaced (or written through) after
    the whole payload was decrypted; it is refused up front, and the bundle stays unopened."""
    path = world.seal()
    (world.root / "elsewhere").mkdir()
    (world.root / "link").symlink_to(world.root / "elsewhere")
    expect("file.symlink", world.open, path, out="link")
    assert (world.root / "link").is_symlink() and not any((world.root / "elsewhere").iterdir())
    assert world.open(path, out="real").files  # not recorded as seen by the failed attempt


# --------------------------------------------------------------------------- seal input


def test_seal_refuses_bad_inputs(world, kit):
    for plugin, code in ((world.plugin / "forge.json", "plugin.not_directory"), (world.root / "missing", "plugin.missing")):
        with pytest.raises(ForgeFileError) as info:  # the plugins' gateway's codes, as when loading or merging
            world.seal("x.forge", plugin=plugin)
        assert info.value.code == code
    bare = world.root / "bare"
    bare.mkdir()
    (bare / "w.bin").write_bytes(b"1")
    # the folder is read by the plugins' gateway: the same codes as loading, merging or auditing it
    with pytest.raises(ForgeFileError) as info:
        world.seal("x.forge", plugin=bare)
    assert info.value.code == "plugin.no_meta"
    (bare / "forge.json").write_text("[1, 2]")
    with pytest.raises(ForgeDataError) as info:
        world.seal("x.forge", plugin=bare)
    assert info.value.code == "plugin.wrong_type"
    link = kit.make_plugin(world.root / "linked")
    os.symlink(world.root / "roster.json", link / "extra.json")
    expect("bundle.symlink", world.seal, "x.forge", plugin=link)
    world.seal("x.forge")
    expect("file.exists", world.seal, "x.forge")
    expect("bundle.sequence", world.seal, "y.forge", sequence=0)
    expect("bundle.chunk_size", world.seal, "y.forge", chunk_size=1000)
    assert not (world.root / "y.forge").exists()
    assert not [p for p in world.root.iterdir() if p.name.endswith(".part")]


def test_seal_refuses_wrong_key_types(world):
    from forge_secure.crypto import seal

    with pytest.raises(BundleError) as e:
        seal(world.plugin, world.keys["site-1"].public, world.keys["consortium"].public, world.root / "x.forge")
    assert e.value.code == "key.wrong_type"
    with pytest.raises(BundleError) as e:
        seal(world.plugin, world.keys["site-1"].signing, world.keys["consortium"].signing, world.root / "x.forge")
    assert e.value.code in ("key.wrong_type", "key.invalid")
    assert not (world.root / "x.forge").exists()
