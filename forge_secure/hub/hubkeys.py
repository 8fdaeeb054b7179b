"""The hub's own signing keys (it holds no decryption key): one Ed25519 key for the log's
checkpoints and receipts, and one Ed25519 key per TUF role (root, targets, snapshot,
timestamp). They live in ``--key-dir`` (default ``$FORGE_HOME/hub/keys``), PKCS#8 PEM files
of mode 0600, made on first start; every hub process of one deployment is given the same
directory (a read-only mount is enough once they exist).

The root key signs the TUF trust anchor (``1.root.json``) that sites pin; an operator who
wants it offline makes the keys once, copies ``tuf-root.key`` away, and keeps ``1.root.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from filelock import FileLock

from ..errors import ForgeFileError
from ..fileio import atomic_write_bytes
from ..home import forge_home
from .note import NoteSigner

TUF_ROLES = ("root", "targets", "snapshot", "timestamp")


@dataclass
class HubKeys:
    log: NoteSigner
    tuf: dict  # role -> securesystemslib CryptoSigner

    @property
    def verifier(self) -> str:
        return self.log.verifier.encode()


def _load_or_make(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise ForgeFileError(
                f"hub key {path} cannot be read", fix="restore the hub's key directory from its backup", code="hub.key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ForgeFileError(
                f"hub key {path} is not an Ed25519 key", fix="restore the hub's key directory from its backup", code="hub.key"
            )
        return key
    key = Ed25519PrivateKey.generate()
    atomic_write_bytes(
        path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600
    )
    return key


def load_hub_keys(key_dir: str | os.PathLike | None, name: str) -> HubKeys:
    """The hub's keys in ``key_dir`` (made when absent); ``name`` is the log's key name."""
    from securesystemslib.signer import CryptoSigner

    root = Path(key_dir) if key_dir is not None else forge_home() / "hub" / "keys"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock"), timeout=60):
        log = _load_or_make(root / "log.key")
        tuf = {role: CryptoSigner(_load_or_make(root / f"tuf-{role}.key")) for role in TUF_ROLES}
    return HubKeys(NoteSigner(name, log), tuf)
