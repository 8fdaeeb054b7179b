"""Checkpoints in the C2SP tlog-checkpoint / signed-note form (Ed25519)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from forge_secure.hub.note import NoteError, NoteSigner, NoteVerifier, sign_checkpoint, verify_checkpoint


@pytest.fixture
def signer():
    return NoteSigner("example.org-log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def test_checkpoint_layout_follows_c2sp(signer):
    root = hashlib.sha256(b"root").digest()
    cp = sign_checkpoint(signer, "example.org/log", 42, root)
    text, sigs = cp.note.split("\n\n")
    assert text == f"example.org/log\n42\n{base64.b64encode(root).decode()}"
    line = sigs.rstrip("\n")
    assert line.startswith("\u2014 example.org-log ")
    blob = base64.b64decode(line.split(" ")[2])
    pub = signer.key.public_key().public_bytes_raw()
    # key hash: SHA-256(name || "\n" || 0x01 || public key)[:4]; then the Ed25519 signature of the text
    assert blob[:4] == hashlib.sha256(b"example.org-log\n\x01" + pub).digest()[:4]
    signer.key.public_key().verify(blob[4:], (text + "\n").encode())
    vkey = signer.verifier.encode()
    assert vkey.split("+")[0] == "example.org-log" and NoteVerifier.decode(vkey) == signer.verifier
    back = verify_checkpoint(cp.note, signer.verifier, "example.org/log")
    assert (back.size, back.root) == (42, root)


def test_tampered_or_foreign_checkpoints_refused(signer):
    cp = sign_checkpoint(signer, "example.org/log", 7, bytes(32))
    with pytest.raises(NoteError):
        verify_checkpoint(cp.note.replace("\n7\n", "\n8\n"), signer.verifier)
    other = NoteSigner("example.org-log", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError) as e:
        verify_checkpoint(sign_checkpoint(other, "example.org/log", 7, bytes(32)).note, signer.verifier)
    assert e.value.code == "log.unsigned"
    with pytest.raises(NoteError):
        verify_checkpoint(cp.note, signer.verifier, "another/log")
    for junk in ("", "no signature\n", cp.note.split("\n\n")[0] + "\n\nnot a dash line\n", "x" * 70000):
        with pytest.raises(NoteError):
            verify_checkpoint(junk, signer.verifier)
    with pytest.raises(NoteError):
        NoteVerifier.decode(signer.verifier.encode().replace("+", "+0", 1))
