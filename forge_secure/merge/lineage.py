"""Lineage: which contributions a plugin, mixture or encrypted aggregate contains.

Merged plugins carry their parents recursively in ``forge.json`` (digest, site, kind, DP
record, and the parents' own parents), so :func:`lineage_tree` needs no other files;
encrypted contributions made with ``hide_digest`` appear by their salted commitment only.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ForgeDataError, ForgeFileError
from ..plugins.record import read_manifest, read_plugin


def _eps(dp) -> str:
    if not isinstance(dp, dict):
        return "?"
    if dp.get("enabled") is False:
        return "inf (no DP)"
    e = dp.get("epsilon")
    if isinstance(e, (int, float)):
        return f"{e:.3g}"
    return str(e)


def _node(entry: dict) -> dict:
    node = {
        "site": entry.get("site"),
        "kind": entry.get("kind", "trained"),
        "digest": entry.get("digest"),
        "commitment": entry.get("commitment"),
        "epsilon": _eps(entry.get("dp")),
        "rows": entry.get("rows"),
    }
    merge = entry.get("merge")
    if isinstance(merge, dict):
        node["method"] = merge.get("method")
        node["weights"] = merge.get("weights")
    if "weight" in entry:
        node["weight"] = entry["weight"]
    node["parents"] = [_node(p) for p in entry.get("parents") or [] if isinstance(p, dict)]
    return node


def lineage_tree(path: str | os.PathLike) -> dict:
    """The lineage of a plugin directory, a mixture directory or a CKKS aggregate."""
    p = Path(path)
    if not p.exists():
        raise ForgeFileError(f"{p} does not exist", fix="give a plugin, mixture or aggregate directory", code="file.missing")
    if not p.is_dir():
        raise ForgeFileError(
            f"{p} is not a directory",
            fix="give a plugin, mixture or aggregate directory (open sealed bundles first)",
            code="file.not_a_directory",
        )
    if (p / "mixture.json").exists():
        from .mixture import read_mixture_meta

        meta = read_mixture_meta(p)
        children = [lineage_tree(p / entry["path"]) for entry in meta["plugins"]]
        return {
            "site": "mixture",
            "kind": "mixture",
            "digest": None,
            "epsilon": "per plugin",
            "method": meta.get("router"),
            "weights": meta.get("weights"),
            "parents": children,
            "path": str(p),
        }
    meta = read_manifest(p)  # the one parse of a forge.json (plugin.no_meta, file.not_json, plugin.wrong_type, ...)
    fmt = meta.get("format")
    if fmt == "forge-he-aggregate/1":
        parents = [dict(c.get("parent") or {}, weight=c.get("weight")) for c in meta.get("contributions") or []]
        return {
            "site": "aggregate",
            "kind": "he-aggregate (encrypted)",
            "digest": None,
            "epsilon": "per site",
            "method": "ffa-ckks",
            "parents": [_node(x) for x in parents],
            "path": str(p),
        }
    if fmt == "forge-he-contribution/1":
        node = _node(dict(meta.get("parent") or {}, weight=meta.get("weight")))
        node["kind"] = "he-contribution (encrypted)"
        return dict(node, path=str(p))
    if fmt != "forge-plugin/1":
        raise ForgeDataError(
            f"{p} holds a forge.json of format {fmt!r}", fix="give a plugin, mixture or aggregate directory", code="lineage.bad_meta"
        )
    record = read_plugin(p, weights=False, adapter_digest=True)  # the gateway: schema, adapter digest, base
    entry = dict(record.meta, digest=record.adapter_sha256, rows=record.rows)
    return dict(_node(entry), path=str(p))


def lineage_lines(tree: dict, indent: str = "") -> list[str]:
    """A plain-text rendering, one line per node."""

    def label(n: dict) -> str:
        ident = (n.get("digest") or "")[:12] or ("commit " + (n.get("commitment") or "")[:12] if n.get("commitment") else "")
        bits = [f"{n.get('site')}", f"[{n.get('kind')}]", ident]
        if n.get("method"):
            bits.append(f"method={n['method']}")
        if n.get("weight") is not None:
            bits.append(f"weight={n['weight']:.4g}" if isinstance(n["weight"], (int, float)) else f"weight={n['weight']}")
        bits.append(f"eps={n.get('epsilon')}")
        if n.get("rows") is not None:
            bits.append(f"rows={n['rows']}")
        return " ".join(b for b in bits if b)

    lines = [indent + label(tree)]
    kids = tree.get("parents") or []
    for i, child in enumerate(kids):
        sub = lineage_lines(child, "")
        last = i == len(kids) - 1
        lines.append(indent + ("└── " if last else "├── ") + sub[0])
        for s in sub[1:]:
            lines.append(indent + ("    " if last else "│   ") + s)
    return lines
