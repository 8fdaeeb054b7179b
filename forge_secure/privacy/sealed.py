"""Small sealed documents of the privacy layer (replay envelopes, canary grants) on the project's
own bundle format: a few named files sealed to one recipient, and opened into a private
temporary directory (nothing decrypted outlives the ``with`` block)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path


def seal_files(
    files: dict[str, bytes],
    manifest: dict,
    *,
    signer,
    recipient,
    out: str | Path,
    counter: str,
    roster=None,
    passphrase: bytes | None = None,
) -> Path:
    """Seal ``files`` (name -> bytes) with ``manifest`` as their forge.json (what the bundle's
    signed manifest copies), signed by ``signer``, to ``recipient`` (listed in the trusted
    ``roster``); sequence numbers come from the counter ``counter`` under ``forge_home()``."""
    from ..crypto.bundle import seal
    from ..crypto.replay import SequenceCounter
    from ..fileio import scratch_directory
    from ..home import forge_home

    with scratch_directory("seal") as tmp:  # swept if a killed process leaves it
        d = Path(tmp) / "payload"
        d.mkdir(mode=0o700)
        (d / "forge.json").write_text(json.dumps(manifest, sort_keys=True))
        for name, data in files.items():
            (d / name).write_bytes(data)
        return seal(d, signer, recipient, out, passphrase=passphrase, counter=SequenceCounter(forge_home() / counter), roster=roster)


@contextlib.contextmanager
def opened_files(bundle: str | Path, *, key, roster, passphrase: bytes | None = None, root=None) -> Iterator[Path]:
    """Verify and open ``bundle`` into a private temporary directory, yielded for the block; the
    bundle is not recorded in any replay store (the caller's document is not a submission)."""
    from ..crypto.bundle import open_bundle
    from ..crypto.replay import ReplayStore
    from ..fileio import scratch_directory

    with scratch_directory("open") as tmp:  # decrypted content: private, swept if a killed process leaves it
        out = Path(tmp) / "out"
        open_bundle(bundle, key, roster, out, passphrase=passphrase, replay=ReplayStore(Path(tmp) / "seen"), root=root)
        yield out
