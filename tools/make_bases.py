"""Build the bundled bases (the files under forge_secure/plugins/assets/) or a base with other settings.

    python tools/make_bases.py                      # rebuild every bundled base into the package assets
    python tools/make_bases.py --check              # rebuild in memory and compare with the shipped files
    python tools/make_bases.py vit-tiny --set image_size=28 --set num_channels=3 --set patch_size=4 --out DIR

The bundled bases are artifacts: sites load the shipped bytes and never train. Run this
once, commit the files, and pin the printed digests in ``forge_secure/plugins/bases.py``
(``SHIPPED``). A base with other settings goes to ``--out DIR``; copy that directory to
every site of the consortium and train with ``--base DIR``. The recipe is in
``forge_secure/plugins/base_builders.py``. Floating-point results differ between CPUs, so
``--check`` is expected to pass on the machine that built the shipped files, not everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forge_secure.errors import ForgeError
from forge_secure.fileio import atomic_write_bytes, sha256_bytes
from forge_secure.plugins.base_builders import BUILDERS, build_files, write_base
from forge_secure.plugins.bases import ASSETS, SHIPPED, manifest_digest


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"bases to build (default: all of {', '.join(sorted(SHIPPED))})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a builder setting (JSON value), e.g. seed=1")
    ap.add_argument("--out", type=Path, help="build one base into this new directory instead of the package assets")
    ap.add_argument("--check", action="store_true", help="compare a rebuild with the shipped files; write nothing")
    args = ap.parse_args(argv)
    names = args.names or sorted(SHIPPED)
    try:
        settings = dict(s.split("=", 1) for s in args.set)
    except ValueError:
        ap.error("--set takes KEY=VALUE")
    settings = {k: _value(v) for k, v in settings.items()}
    try:
        for n in names:
            if n not in BUILDERS:
                ap.error(f"unknown base {n!r}; choose from {', '.join(sorted(BUILDERS))}")
        if args.out is not None:
            if len(names) != 1:
                ap.error("--out builds exactly one base")
            print(f"{names[0]}  {write_base(names[0], args.out, **settings)}  {args.out}")
            return 0
        if settings:
            ap.error("--set needs --out (the shipped bases use the default settings)")
        status = 0
        for n in names:
            files = build_files(n)
            digest = manifest_digest({rel: sha256_bytes(data) for rel, data in files.items()})
            if args.check:
                same = all((ASSETS / n / rel).is_file() and (ASSETS / n / rel).read_bytes() == data for rel, data in files.items())
                print(f"{n}  {digest}  {'identical to the shipped files' if same else 'DIFFERS from the shipped files'}")
                status |= 0 if same and digest == SHIPPED.get(n) else 1
            else:
                for rel, data in files.items():
                    atomic_write_bytes(ASSETS / n / rel, data)
                print(f"{n}  {digest}  (pin it in SHIPPED)" if digest != SHIPPED.get(n) else f"{n}  {digest}")
        return status
    except ForgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
