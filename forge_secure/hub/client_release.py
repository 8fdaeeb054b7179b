"""The maintainer's and sites' side of releases and administration: publish a merged plugin
(signed by a roster admin key), fetch a version through TUF, change a budget, send a roster.

``fetch`` runs ``tuf.ngclient.Updater`` against the hub's ``/tuf/`` repository with the root
pinned in ``$FORGE_HOME/hub/tuf/<host>/`` (given with ``--root`` or taken on first use), so
rolled-back, frozen (expired) or mixed-and-matched metadata is refused; then it checks the
maintainer's signature on ``release.json`` against the site's own trusted roster and the
archive's sha256 against the signed statement before unpacking it.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path
from urllib.parse import urlparse

from ..crypto.keys import PrivateKey, load_signing_key
from ..crypto.roster import load_roster
from ..errors import ForgeError, ForgeFileError, ForgeIntegrityError
from ..fileio import atomic_directory, canonical_json, sha256_file
from ..home import forge_home
from .auth import AuthError, sign_request, verify_request
from .client import _check_url, _file_chunks, _request, pinned

MEDIA = {".json": "application/json", ".html": "text/html", ".pdf": "application/pdf"}


def _signer(key) -> PrivateKey:
    return key if isinstance(key, PrivateKey) else load_signing_key(key)


def plugin_archive(plugin_dir: Path) -> bytes:
    """A reproducible tar of a plugin directory (sorted names, no owners or times)."""
    plugin_dir = Path(plugin_dir)
    if not (plugin_dir / "forge.json").is_file():
        raise ForgeFileError(
            f"{plugin_dir} is not a plugin directory (no forge.json)", fix="give the merged plugin's directory", code="file.not_plugin"
        )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(plugin_dir.rglob("*")):
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                continue
            info = tar.gettarinfo(str(p), arcname=p.relative_to(plugin_dir).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if p.is_dir() else 0o644
            if p.is_file():
                with open(p, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def _upload(url: str, origin: str, key: PrivateKey, data: bytes | Path, media_type: str) -> dict:
    if isinstance(data, Path):
        sha, size, content = sha256_file(data), data.stat().st_size, _file_chunks(data)
    else:
        import hashlib

        sha, size, content = hashlib.sha256(data).hexdigest(), len(data), data
    req = sign_request(key, "blob", {"sha256": sha, "size": size, "media_type": media_type}, origin)
    header = base64.b64encode(canonical_json(req)).decode()
    _request(
        "POST",
        f"{url}/v1/blobs",
        content=content,
        headers={"forge-request": header, "content-type": "application/octet-stream", "content-length": str(size)},
    )
    return {"sha256": sha, "size": size}


def publish(
    url: str,
    plugin_dir: str | Path,
    key,
    *,
    version: int | None = None,
    pulled: str | Path | None = None,
    lineage: list[dict] | None = None,
    audit: str | Path | None = None,
    notes: str = "",
) -> dict:
    """Publish the merged plugin at ``plugin_dir`` as the next version (or ``version``)."""
    url = _check_url(url)
    key = _signer(key)
    origin = pinned(url)["origin"]
    if lineage is None:
        if pulled is None:
            raise ForgeError("no lineage given", fix="give --pulled DIR/pulled.json (written by 'forge hub pull')", code="hub.lineage")
        try:
            doc = json.loads(Path(pulled).read_text())
            lineage = [{k: s[k] for k in ("submission_id", "site", "bundle_sha256", "log_index")} for s in doc["submissions"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise ForgeFileError(
                f"{pulled} is not a pulled.json written by 'forge hub pull'", fix="pull again", code="hub.lineage"
            ) from None
    plugin = _upload(url, origin, key, plugin_archive(Path(plugin_dir)), "application/x-tar")
    audit_ref = None
    if audit is not None:
        audit = Path(audit)
        if not audit.is_file():
            raise ForgeFileError(
                f"audit report {audit} does not exist", fix="give the report file (JSON, HTML or PDF)", code="file.missing"
            )
        media = MEDIA.get(audit.suffix.lower())
        if media is None:
            raise ForgeError(
                f"audit report {audit} is not .json, .html or .pdf", fix="attach the report written by 'forge audit'", code="hub.audit_type"
            )
        audit_ref = {**_upload(url, origin, key, audit, media), "media_type": media}
    if version is None:
        version = len(_request("GET", f"{url}/v1/releases").json()["releases"]) + 1
    params = {"version": version, "plugin": plugin, "audit": audit_ref, "lineage": lineage, "notes": notes}
    return _request("POST", f"{url}/v1/releases", json=sign_request(key, "publish", params, origin)).json()


def set_budget(url: str, site: str, epsilon: float, key) -> dict:
    url = _check_url(url)
    origin = pinned(url)["origin"]
    return _request(
        "POST", f"{url}/v1/budgets", json=sign_request(_signer(key), "set-budget", {"site": site, "epsilon": repr(float(epsilon))}, origin)
    ).json()


def send_roster(url: str, roster: str | Path) -> dict:
    url = _check_url(url)
    from ..crypto.roster import read_roster

    return _request("POST", f"{url}/v1/roster", json=read_roster(roster).to_document()).json()


# --------------------------------------------------------------------------- fetch


def _tuf_dir(url: str) -> Path:
    d = forge_home() / "hub" / "tuf" / urlparse(url).netloc.replace(":", "_")
    (d / "metadata").mkdir(parents=True, exist_ok=True)
    (d / "targets").mkdir(parents=True, exist_ok=True)
    return d


def _tuf_error(e: Exception) -> ForgeIntegrityError:
    from tuf.api import exceptions as tx

    kind = {
        tx.ExpiredMetadataError: ("tuf.expired", "the hub's release metadata has expired (a frozen or stale hub)"),
        tx.BadVersionNumberError: ("tuf.rollback", "the hub's release metadata is older than what this site saw before"),
        tx.LengthOrHashMismatchError: ("tuf.mismatch", "a release file does not match its signed metadata"),
        tx.UnsignedMetadataError: ("tuf.signature", "the hub's release metadata is not signed by the trusted keys"),
        tx.DownloadError: ("tuf.download", "a release file could not be downloaded"),
    }
    for cls, (code, msg) in kind.items():
        if isinstance(e, cls):
            return ForgeIntegrityError(
                f"{msg} ({e.__class__.__name__}: {e})",
                fix="do not use this release; check the hub URL and report the hub to the consortium",
                code=code,
            )
    return ForgeIntegrityError(
        f"the release metadata does not verify ({e.__class__.__name__}: {e})",
        fix="do not use this release; report the hub to the consortium",
        code="tuf.invalid",
    )


def _updater(url: str, root: str | Path | None):
    from tuf.ngclient import Updater

    d = _tuf_dir(url)
    if root is not None:
        bootstrap = Path(root).read_bytes()
    elif (d / "metadata" / "root.json").exists():
        bootstrap = None
    else:  # trust on first use: the hub's version 1 root
        resp = _request("GET", f"{url}/tuf/metadata/1.root.json")
        bootstrap = resp.content
    return Updater(str(d / "metadata"), f"{url}/tuf/metadata/", str(d / "targets"), f"{url}/tuf/targets/", bootstrap=bootstrap)


def fetch(url: str, version: int, out: str | Path, roster: str | Path, *, root: str | Path | None = None) -> dict:
    """Fetch release ``version`` through TUF, check the maintainer's signature and the
    lineage statement, and unpack the plugin into ``out`` (atomically)."""
    from tuf.api import exceptions as tx

    url, out = _check_url(url), Path(out)
    if out.exists():
        raise ForgeFileError(f"--out {out} already exists", fix="give a new directory", code="file.exists")
    trusted = load_roster(roster)
    origin = pinned(url)["origin"]
    base = f"releases/{int(version)}/"
    try:
        updater = _updater(url, root)
        updater.refresh()
        info = updater.get_targetinfo(base + "release.json")
        if info is None:
            raise ForgeError(
                f"release {version} is not published on the hub", fix="list the versions on the hub's page", code="hub.no_release"
            )
        statement_path = updater.download_target(info)
        pinfo = updater.get_targetinfo(base + "plugin.tar")
        if pinfo is None:
            raise ForgeIntegrityError(f"release {version} has no plugin archive", fix="report the hub", code="tuf.invalid")
        plugin_path = updater.download_target(pinfo)
    except (tx.RepositoryError, tx.DownloadError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, (ConnectionError, TimeoutError)):
            raise
        raise _tuf_error(e) from None
    doc = json.loads(Path(statement_path).read_text())
    try:
        st = verify_request(doc, trusted, action="publish", origin=origin, now=None, admins_only=True)
    except AuthError as e:
        raise ForgeIntegrityError(
            f"release {version} is not signed by an admin of your roster ({e.message})",
            fix="do not use this release; report it to the consortium",
            code="hub.release_signature",
        ) from None
    p = st["params"]
    if p.get("version") != int(version) or p.get("plugin", {}).get("sha256") != sha256_file(plugin_path):
        raise ForgeIntegrityError(
            f"release {version}'s archive or version does not match the maintainer's signed statement",
            fix="do not use this release; report the hub",
            code="hub.release_mismatch",
        )
    with atomic_directory(out) as tmp:
        with tarfile.open(plugin_path, "r:") as tar:
            tar.extractall(tmp, filter="data")
    return {
        "version": int(version),
        "out": str(out),
        "plugin_sha256": p["plugin"]["sha256"],
        "lineage": p.get("lineage", []),
        "audit": p.get("audit"),
        "publisher": st["key_id"],
        "notes": p.get("notes", ""),
    }


__all__ = ["fetch", "plugin_archive", "publish", "send_roster", "set_budget"]
