"""Signed checkpoints of the transparency log, in the C2SP forms.

* tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the note text is three lines, the
  log's origin, the tree size in decimal and the base64 RFC 9162 root hash, each ending in
  a newline.
* signed-note (https://c2sp.org/signed-note): the text, an empty line, then one line per
  signature ``— <key name> <base64(key hash (4 bytes) || signature)>``. For Ed25519 the
  key hash is the first 4 bytes of ``SHA-256(name || "\\n" || 0x01 || public key)`` and the
  signature is over the note text; a verifier key is written
  ``<name>+<key hash hex>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ForgeIntegrityError

ED25519 = b"\x01"
DASH = "\u2014 "
NAME_RE = re.compile(r"^[^\s+]+$")
MAX_NOTE = 1 << 16


class NoteError(ForgeIntegrityError):
    default_code = "log.checkpoint"


def _bad(why: str) -> NoteError:
    return NoteError(
        f"the checkpoint is not a valid signed note ({why})",
        fix="fetch the checkpoint again from the hub; if it stays invalid, the hub or the path to it is faulty",
    )


def key_hash(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_raw).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    public_raw: bytes

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.public_raw)

    def encode(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{base64.b64encode(ED25519 + self.public_raw).decode()}"

    @classmethod
    def decode(cls, text: str) -> NoteVerifier:
        try:
            name, h, key = text.strip().split("+", 2)
            raw = base64.b64decode(key, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError(f"{text[:80]!r} is not a signed-note verifier key", fix="give the key printed by 'forge hub info'") from None
        if not NAME_RE.match(name) or raw[:1] != ED25519 or len(raw) != 33:
            raise NoteError(f"{text[:80]!r} is not an Ed25519 signed-note verifier key", fix="give the key printed by 'forge hub info'")
        v = cls(name, raw[1:])
        if v.hash.hex() != h:
            raise NoteError(f"verifier key {name}: its key hash does not match the key", fix="copy the key again, unchanged")
        return v


class NoteSigner:
    def __init__(self, name: str, key: Ed25519PrivateKey):
        if not NAME_RE.match(name):
            raise ValueError(f"bad key name {name!r}")
        self.name, self.key = name, key
        self.verifier = NoteVerifier(name, key.public_key().public_bytes_raw())

    def sign(self, text: str) -> str:
        if not text.endswith("\n") or "\n\n" in text:
            raise ValueError("note text must end with one newline and hold no empty line")
        sig = self.key.sign(text.encode())
        return text + "\n" + DASH + self.name + " " + base64.b64encode(self.verifier.hash + sig).decode() + "\n"


def open_note(note: str, verifier: NoteVerifier) -> str:
    """The text of ``note`` when ``verifier`` signed it; raises :class:`NoteError`."""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise _bad("not text, or too long")
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise _bad("no signature block")
    text += "\n"
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH):
            raise _bad("a signature line does not start with an em dash")
        try:
            name, b64 = line[len(DASH) :].split(" ")
            blob = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise _bad("a signature line is malformed") from None
        if name != verifier.name or blob[:4] != verifier.hash:
            continue  # another key's signature: allowed, ignored
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public_raw).verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError(
                f"the checkpoint's signature by {verifier.name} does not verify",
                fix="the checkpoint was changed or forged; do not trust it",
            ) from None
        return text
    raise NoteError(
        f"the checkpoint carries no signature by {verifier.name}",
        fix="check that you pinned the right hub key (forge hub info shows it)",
        code="log.unsigned",
    )


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str = ""

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def to_dict(self) -> dict:
        return {"origin": self.origin, "size": self.size, "root": self.root.hex(), "note": self.note}


def sign_checkpoint(signer: NoteSigner, origin: str, size: int, root: bytes) -> Checkpoint:
    cp = Checkpoint(origin, size, root)
    return Checkpoint(origin, size, root, signer.sign(cp.text()))


def verify_checkpoint(note: str, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
    text = open_note(note, verifier)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _bad("fewer than three lines")
    try:
        size = int(lines[1])
        root = base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise _bad("the size or root hash line is malformed") from None
    if size < 0 or str(size) != lines[1] or len(root) != 32:
        raise _bad("the size or root hash is out of range")
    if origin is not None and lines[0] != origin:
        raise NoteError(f"the checkpoint is of log {lines[0]!r}, not {origin!r}", fix="check the hub URL and the pinned hub key")
    return Checkpoint(lines[0], size, root, note)
