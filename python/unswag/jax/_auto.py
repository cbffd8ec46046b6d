"""impl="auto": which path (the FFI handlers or pure JAX) runs on which backend.

The choice comes from a measured table, auto_table.json next to this file
(written from bench/gpu/bench_jax.py's jax_auto_table.json by
scripts/update_jax_auto_table.py), loaded on first use.  An entry names
(backend, dtype, act, bits) and the faster impl there; where the table has
no entry, auto keeps its old rule: the FFI handlers where they are
registered, pure JAX elsewhere.  UNSWAG_JAX_AUTO_TABLE=path reads another
table (to try one before committing it).

Both paths give the same code bytes (docs/design.md section 2), so the choice
only changes speed, never results beyond the forward's float32 rounding.
"""
from __future__ import annotations

import json
import os

FORMAT = "unswag-jax-auto-table/1"
BACKENDS = ("cpu", "cuda")  # where FFI handlers exist; elsewhere auto is always pure
IMPLS = ("ffi", "pure")
DTYPES = ("float32", "float16", "bfloat16")
ENV = "UNSWAG_JAX_AUTO_TABLE"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "auto_table.json")

_cache: dict = {}


def _key(e):
    return (e["backend"], e["dtype"], e["act"], int(e["bits"]))


def validate(table) -> dict:
    """The table as {(backend, dtype, act, bits): impl}; ValueError naming what is wrong."""
    from .. import _native
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} table (format = "
                         f"{table.get('format') if isinstance(table, dict) else type(table)})")
    entries = table.get("entries")
    if not isinstance(entries, list):
        raise ValueError("table has no 'entries' list")
    out = {}
    for i, e in enumerate(entries):
        try:
            k = _key(e)
            impl = e["impl"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"entry {i} lacks backend/dtype/act/bits/impl: {e!r}") from err
        if k[0] not in BACKENDS:
            raise ValueError(f"entry {i}: backend {k[0]!r} not in {BACKENDS}")
        if k[1] not in DTYPES:
            raise ValueError(f"entry {i}: dtype {k[1]!r} not in {DTYPES}")
        if k[2] not in _native.ACTIVATIONS:
            raise ValueError(f"entry {i}: unknown activation {k[2]!r}")
        if k[3] not in (1, 2, 4, 8):
            raise ValueError(f"entry {i}: bits {k[3]!r} not in (1, 2, 4, 8)")
        if impl not in IMPLS:
            raise ValueError(f"entry {i}: impl {impl!r} not in {IMPLS}")
        if k in out:
            raise ValueError(f"entry {i}: {k} appears twice")
        out[k] = impl
    return out


def load(path: str | None = None) -> dict:
    """{(backend, dtype, act, bits): impl} of the table at path (default: $ENV, else the
    committed one); cached per path."""
    path = path or os.environ.get(ENV) or DEFAULT_PATH
    if path not in _cache:
        with open(path) as f:
            _cache[path] = validate(json.load(f))
    return _cache[path]


def clear_cache():
    _cache.clear()


def choose(backend: str, dtype: str, act: str, bits: int) -> str | None:
    """'ffi' or 'pure' from the table, None where it has no entry."""
    return load().get((backend, dtype, act, int(bits)))


def merge(table: dict, measured: dict) -> dict:
    """The committed table with the entries of a bench run (bench/gpu/bench_jax.py's
    jax_auto_table.json) added or replacing those of the same key; the run's description is
    appended to 'measured'.  Both are validated; the inputs are not modified."""
    validate(table)
    validate(measured)
    if measured.get("partial"):
        raise ValueError("the bench run was cut short (partial: true); rerun it, or drop "
                         "'partial' by hand if its entries are enough")
    new = {_key(e): dict(e) for e in measured["entries"]}
    entries = [dict(e) for e in table["entries"] if _key(e) not in new] + list(new.values())
    entries.sort(key=_key)
    out = dict(table)
    out["entries"] = entries
    out["measured"] = list(table.get("measured", [])) + [measured.get("run", {})]
    validate(out)
    return out


def dumps(table: dict) -> str:
    """JSON with one line per entry (readable diffs)."""
    head = {k: v for k, v in table.items() if k != "entries"}
    text = json.dumps(head, indent=2)[:-2]
    lines = [json.dumps(e, sort_keys=True) for e in table["entries"]]
    body = ",\n    ".join(lines)
    return text + (',\n  "entries": [\n    ' + body + "\n  ]\n}\n" if lines
                   else ',\n  "entries": []\n}\n')
