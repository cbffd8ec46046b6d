"""Running one benchmark mode in a subprocess that sweeps contexts upward.

The child prints one ``RESULT {json}`` line per context (with "ctx" and "status") and
stops at its first failure; ``run_child`` collects those lines and gives every context
it did not reach a status that says why (a failure at a shorter context, the time
budget, an OOM or an error with the end of the child's stderr)."""
from __future__ import annotations

import json
import subprocess
from typing import Dict, List, Tuple


def _text(b) -> str:
    return b.decode() if isinstance(b, bytes) else (b or "")


def run_child(cmd: List[str], contexts, timeout: float) -> Tuple[Dict[int, dict], str]:
    """(results by context, the child's stderr)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, err, why = r.stdout, r.stderr, None
    except subprocess.TimeoutExpired as e:
        out, err, why = _text(e.stdout), _text(e.stderr), f"timeout {timeout:.0f}s"
    got = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            d = json.loads(line[7:])
            got[d["ctx"]] = d
    for ctx in contexts:
        if ctx in got:
            continue
        if any(d["status"] != "ok" for d in got.values()):
            got[ctx] = {"ctx": ctx, "status": "skipped (failed at a shorter context)"}
        elif why:
            got[ctx], why = {"ctx": ctx, "status": why}, "skipped (time budget)"
        else:
            tail = " | ".join(err.strip().splitlines()[-3:])[-300:]
            oom = "out of memory" in tail.lower()
            got[ctx] = {"ctx": ctx, "status": "OOM" if oom else "error: " + tail}
            why = "skipped (after an error)"
    return got, err
