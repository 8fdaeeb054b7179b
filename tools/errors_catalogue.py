"""Generate ``docs/errors.md``: every error code the toolkit raises, from the code itself.

Every ``ForgeError`` carries a dotted ``code`` (``bundle.truncated``, ``ledger.corrupt``); the CLI
prints it with the message and the fix, and ``--json`` output carries it. This script reads the
source (``forge_secure/``, ``attacks/``, ``audits/``) with :mod:`ast` and lists, for each code, the
error class, the message and the fix written at the place that raises it, and the files that raise
it. Nothing is imported or run, so the catalogue cannot drift from what a raise site says.

    python tools/errors_catalogue.py            # rewrite docs/errors.md
    python tools/errors_catalogue.py --check    # exit 1 when docs/errors.md is out of date

``tests/test_errors_catalogue.py`` runs the check, so a new code without a regenerated catalogue
fails the default test run.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("forge_secure", "attacks", "audits")
OUT = ROOT / "docs" / "errors.md"
#: a literal code: lower-case dotted words (dashes and digits allowed after the first dot)
CODE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_-]+)+$")


@dataclass
class Site:
    cls: str
    message: str
    fix: str
    path: str


@dataclass
class Entry:
    code: str
    dynamic: bool
    sites: list[Site] = field(default_factory=list)


def _text(node: ast.AST | None) -> str:
    """A message or fix as a reader sees it: literal text, with ``{...}`` where a value goes."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                parts.append("{" + ast.unparse(v.value if isinstance(v, ast.FormattedValue) else v) + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "{" + ast.unparse(node) + "}"


def _callee(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return ast.unparse(f)


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _factories(tree: ast.AST) -> dict[str, tuple[int, int | None, int | None]]:
    """Functions of one module that build an error from positional ``(code, message, fix)``
    (``crypto.errors.fail``, ...): ``{name: (index of code, of message, of fix)}``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names = [a.arg for a in node.args.args]
            if names and names[0] == "self":
                names = names[1:]
            if names and names[0] == "code":
                msg = next((names.index(n) for n in ("message", "msg") if n in names), None)
                out[node.name] = (0, msg, names.index("fix") if "fix" in names else None)
    return out


def _visible_factories(module: str, tree: ast.AST, by_module: dict) -> dict:
    """The factories a module can call: its own, and those it imports by name."""
    seen = dict(by_module.get(module, {}))
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                if alias.name in by_module.get(target, {}):
                    seen[alias.asname or alias.name] = by_module[target][alias.name]
    return seen


def scan(root: Path = ROOT) -> dict[str, Entry]:
    """Every error raised with a code in the packages: ``{code: Entry}``."""
    entries: dict[str, Entry] = {}
    files = [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    trees = [ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in files]
    modules = [_module(p, root) for p in files]
    by_module = {m: _factories(t) for m, t in zip(modules, trees, strict=True)}
    for path, tree, module in zip(files, trees, modules, strict=True):
        factories = _visible_factories(module, tree, by_module)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            cls = _callee(node)
            if cls in factories and "code" not in kw and node.args:
                ic, im, ifix = factories[cls]
                args = node.args
                kw["code"] = args[ic]
                if im is not None and len(args) > im:
                    kw["message"] = args[im]
                if ifix is not None and len(args) > ifix:
                    kw["fix"] = args[ifix]
                node = ast.Call(func=node.func, args=[], keywords=[])
            if "code" not in kw:
                continue
            value = kw["code"]
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                code, dynamic = value.value, False
            elif isinstance(value, ast.JoinedStr):
                code, dynamic = _text(value), True
            else:
                continue  # a variable passed on (a wrapper re-raising another error's code)
            if not (cls.endswith("Error") or cls in factories or cls in ("bad", "_bad")):  # bad: CheckSettings.bad
                continue
            site = Site(
                cls=cls,
                message=_text(node.args[0]) if node.args else _text(kw.get("message")),
                fix=_text(kw.get("fix")),
                path=str(path.relative_to(root)),
            )
            entries.setdefault(code, Entry(code, dynamic)).sites.append(site)
    return dict(sorted(entries.items()))


def _cell(s: str, limit: int = 160) -> str:
    s = " ".join(s.split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render(entries: dict[str, Entry]) -> str:
    families: dict[str, list[Entry]] = defaultdict(list)
    for e in entries.values():
        families["patterns" if e.dynamic else e.code.split(".", 1)[0]].append(e)
    n_sites = sum(len(e.sites) for e in entries.values())
    lines = [
        "# Error codes",
        "",
        "<!-- generated by tools/errors_catalogue.py from the source; do not edit by hand -->",
        "",
        "Every error the toolkit reports has a dotted code, a message naming the problem and, where there is",
        "one, a fix. The command line prints them as one line on standard error and exits with status 2",
        "(`--json` output carries the code). Codes are stable: scripts may match on them.",
        "",
        f"{len(entries)} codes in {len(families)} families, raised at {n_sites} places. Text in `{{...}}` is filled in",
        "when the error is raised; the last section, `patterns`, holds codes that are built from "
        "a value. Classes: `ForgeValueError` (a bad argument or setting), `ForgeConfigError`,",
        "`ForgeDataError` (a file or record whose content is wrong), `ForgeFileError` (missing, unreadable,",
        "already there), `ForgeIntegrityError` (a signature, digest or proof that does not verify),",
        "`ForgeBudgetError` (a privacy budget exceeded), `ForgeDependencyError` (an optional package missing);",
        "modules with their own error type (`BundleError`, ...) subclass one of these.",
        "",
        "Families: " + ", ".join(f"[`{f}`](#{f})" for f in sorted(families, key=lambda f: (f == "patterns", f))),
        "",
    ]
    for fam in sorted(families, key=lambda f: (f == "patterns", f)):
        lines += [f"## {fam}", "", "| code | class | message | fix | raised in |", "|---|---|---|---|---|"]
        for e in families[fam]:
            first = e.sites[0]
            classes = ", ".join(sorted({s.cls for s in e.sites}))
            where = ", ".join(f"`{p}`" for p in sorted({s.path for s in e.sites}))
            more = f" (and {len(e.sites) - 1} more place{'s' if len(e.sites) > 2 else ''})" if len(e.sites) > 1 else ""
            code = f"`{e.code}`" + (" (pattern)" if e.dynamic else "")
            lines.append(f"| {code} | {classes} | {_cell(first.message)}{more} | {_cell(first.fix)} | {where} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate docs/errors.md from the source.")
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/errors.md is out of date")
    args = ap.parse_args(argv)
    text = render(scan())
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print("docs/errors.md is out of date: run python tools/errors_catalogue.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
