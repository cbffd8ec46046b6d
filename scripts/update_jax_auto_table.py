#!/usr/bin/env python3
"""Writes a GPU run's measured choices into the committed impl="auto" table.

    python scripts/update_jax_auto_table.py OUT/jax_auto_table.json
        [--table python/unswag/jax/auto_table.json] [--dry-run]

OUT/jax_auto_table.json is what bench/gpu/bench_jax.py writes: one entry per
(backend, dtype, act, bits) with the faster impl and both speed ratios against
jax.nn.  Entries of the same key are replaced, others kept; the run's
description (device, jax version, date) is appended to the table's 'measured'.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from unswag.jax import _auto  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("measured", help="jax_auto_table.json from bench/gpu/bench_jax.py")
    ap.add_argument("--table", default=_auto.DEFAULT_PATH)
    ap.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    args = ap.parse_args(argv)
    with open(args.measured) as f:
        measured = json.load(f)
    with open(args.table) as f:
        table = json.load(f)
    text = _auto.dumps(_auto.merge(table, measured))
    if args.dry_run:
        print(text, end="")
    else:
        with open(args.table, "w") as f:
            f.write(text)
        print(f"{args.table}: {len(measured['entries'])} measured entries merged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
