"""The evidence directory: what an audit reads, and how. Nothing here ever writes.

Layout (every part optional, but at least one must be present)::

    EVIDENCE/
      roster.json          the signed trust roster (``forge roster ...``)
      bundles/*.forge      sealed submissions as the sites sent them (``forge seal``)
      plugins/<name>/      plugin directories opened from those bundles (``forge open``):
                           adapter_config.json, adapter_model.safetensors, forge.json
      merged/<name>/       merged model versions (``forge merge``); forge.json has
                           kind "merged", parents [{digest, site}] and merge {method, ...}
      attacks/*.json       results files of ``forge attack mia`` and ``forge attack recon``
                           as the *site* supplied them: unsigned, so they count only when
                           they carry per-record signals the audit re-derives every score
                           from (see audits.checks.leakage)
      ledgers/             per-site privacy budget ledgers (``forge ledger``), as written
                           by forge_secure.privacy.Ledger under its root

Attack results the auditor produced (``AuditOptions.attack_results``, ``forge audit
--attack-results FILE``) live outside the evidence directory (inside it they would be
indistinguishable from the site's); they are hashed into the inventory as ``auditor:<path>``.

A file that is present but unreadable (truncated, not JSON, wrong type) is not a reason to
stop: it is loaded as an :class:`Item` with its ``error`` set, and the check that needs it
reports a FAIL finding naming the file and the reason code. The audit only refuses to run
(exit 2) when the evidence directory itself is missing, not a directory, or holds none of
the parts above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_secure.errors import ForgeDataError, ForgeError, ForgeFileError
from forge_secure.fileio import read_json_file, sha256_file

PARTS = ("roster.json", "bundles", "plugins", "merged", "attacks", "ledgers")
AUDITOR_PREFIX = "auditor:"


@dataclass(frozen=True)
class Item:
    """One piece of evidence: its path relative to the evidence root, its parsed content
    (``data``), or the error that kept it from loading."""

    rel: str
    path: Path
    data: Any = None
    error: ForgeError | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def _load_json(path: Path, rel: str, what: str, expect_type: type = dict) -> Item:
    try:
        data = read_json_file(path, what)
    except ForgeError as e:
        return Item(rel, path, error=e)
    if not isinstance(data, expect_type):
        return Item(
            rel,
            path,
            error=ForgeDataError(
                f"{what} {rel} holds a JSON {type(data).__name__}, not an object",
                fix="restore the file from the tool that wrote it",
                code="evidence.wrong_type",
            ),
        )
    return Item(rel, path, data=data)


def _load_plugin_dir(path: Path, rel: str) -> Item:
    """A plugin (or merged version) folder through the plugins' one gateway
    (:func:`forge_secure.plugins.read_plugin`: forge.json schema, adapter digest, finite
    weights, base digest), so a fault here has the code it has everywhere else."""
    from forge_secure.plugins.record import read_plugin

    try:
        record = read_plugin(path)
    except ForgeError as e:
        return Item(rel, path, error=e)
    return Item(rel, path, data=record.meta, extra={"adapter_digest": record.adapter_sha256, "record": record})


@dataclass(frozen=True)
class AuditOptions:
    """What the auditor brings besides the evidence: optionally the recipient's decryption key
    (so provenance can open each bundle and bind its weights to plugins/), and the time the
    audit judges validity at (integer UTC seconds; default now)."""

    decryption_key: Path | None = None
    passphrase: bytes | None = field(default=None, repr=False)
    now: int | None = None
    attack_results: tuple[Path, ...] = ()  # results files of attacks the auditor ran itself (outside the evidence)
    #: the auditor's decryption key for the replay envelopes beside each plugin (on-site audit)
    replay_key: Path | None = None
    replay_passphrase: bytes | None = field(default=None, repr=False)
    #: the auditor's private canary records (``forge audit canaries issue``), never the site's files
    canary_records: tuple[Path, ...] = ()
    #: ``(site, data spec)`` pairs: the data the auditor replays each site's training on
    #: (default: the source the envelope names)
    site_data: tuple[tuple[str, str], ...] = ()


class Evidence:
    """Read-only view of an evidence directory. Loads everything once, on construction."""

    def __init__(self, root: str | os.PathLike, options: AuditOptions | None = None):
        self.options = options or AuditOptions()
        root = Path(root)
        if not root.exists():
            raise ForgeFileError(f"evidence directory {root} does not exist", fix="check --evidence", code="evidence.missing")
        if not root.is_dir():
            raise ForgeFileError(
                f"evidence {root} is not a directory",
                fix="give the evidence directory (roster.json, bundles/, plugins/ and the rest, as in audits/README.md)",
                code="evidence.not_directory",
            )
        present = [p for p in PARTS if (root / p).exists()]
        if not present:
            raise ForgeFileError(
                f"evidence directory {root} holds none of {', '.join(PARTS)}",
                fix="lay out the evidence as described in audits/README.md",
                code="evidence.empty",
            )
        self.root = root
        self.roster_path: Path | None = root / "roster.json" if (root / "roster.json").exists() else None
        self.bundles: list[Item] = [Item(self._rel(p), p) for p in self._files("bundles", ".forge")]
        self.plugins: list[Item] = [_load_plugin_dir(p, self._rel(p)) for p in self._dirs("plugins")]
        self.merged: list[Item] = [_load_plugin_dir(p, self._rel(p)) for p in self._dirs("merged")]
        self.attacks: list[Item] = [_load_json(p, self._rel(p), "attack results") for p in self._files("attacks", ".json")]
        self.auditor_attacks: list[Item] = [_load_auditor_results(Path(p), root) for p in self.options.attack_results]
        self.ledger_root: Path | None = root / "ledgers" if (root / "ledgers").is_dir() else None

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    def _files(self, sub: str, suffix: str) -> list[Path]:
        d = self.root / sub
        return sorted(p for p in d.glob(f"*{suffix}") if p.is_file()) if d.is_dir() else []

    def _dirs(self, sub: str) -> list[Path]:
        d = self.root / sub
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []

    def all_plugins(self) -> list[Item]:
        return self.plugins + self.merged

    def find_plugin(self, ref: str) -> Item | None:
        """A plugin or merged version by relative path, directory name or adapter digest."""
        for item in self.all_plugins():
            if ref in (item.rel, item.path.name, item.extra.get("adapter_digest")):
                return item
            if ref and Path(ref).name == item.path.name:
                return item
        return None

    def inventory(self) -> dict[str, str]:
        return self.snapshot()

    def snapshot(self) -> dict[str, str]:
        """:func:`snapshot` of the evidence directory plus the auditor's own attack results files."""
        out = snapshot(self.root)
        for item in self.auditor_attacks:
            out[item.rel] = sha256_file(item.path)
        return out


def _load_auditor_results(path: Path, root: Path) -> Item:
    """An attack results file the auditor gives: it must exist, lie outside the evidence
    directory and be a JSON object; anything else stops the audit (exit 2), since it is the
    auditor's own input."""
    if not path.is_file():
        raise ForgeFileError(
            f"attack results {path} do not exist",
            fix="give the results file your forge attack mia / recon run wrote",
            code="evidence.attack_results_missing",
        )
    if path.resolve().is_relative_to(root.resolve()):
        raise ForgeFileError(
            f"attack results {path} are inside the evidence directory {root}, where they cannot be told from the site's",
            fix="keep the results of attacks you ran yourself outside the evidence directory and pass them with --attack-results",
            code="evidence.attack_results_inside",
        )
    item = _load_json(path, f"{AUDITOR_PREFIX}{path}", "attack results")
    if item.error is not None:
        raise item.error
    return Item(item.rel, item.path, data=item.data, extra={"origin": "auditor"})


def snapshot(root: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (the audit's inventory, and
    the test that the audit changed nothing)."""
    root = Path(root)
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file():
                out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out
