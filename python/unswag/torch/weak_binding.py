"""Replacement forwards that do not keep their own module alive.

The surgery stores a new ``forward`` on the module it patches.  If that function held the
module (or the module's bound original forward), module and function would form a
reference cycle, and ``del model`` would free the weights (and the long-context mode's
pinned host memory) only when Python's cyclic garbage collector next runs, possibly many
steps later.  The patched forwards reach their module through these weak references, so a
patched model is freed as soon as its last outside reference goes, like an unpatched one.
"""
from __future__ import annotations

import weakref


def module_ref(m):
    """A function returning `m` while it lives (ReferenceError once it is gone)."""
    ref = weakref.ref(m)

    def get():
        got = ref()
        if got is None:
            raise ReferenceError("unswag: the patched module no longer exists")
        return got
    return get


def weak_original(m, original):
    """`original`, the forward `m` had before the surgery, callable without holding `m`:
    a method bound to `m` is re-bound at each call; anything else (a function some other
    wrapper stored on the instance) is kept as it is."""
    if getattr(original, "__self__", None) is m and hasattr(original, "__func__"):
        func, get = original.__func__, module_ref(m)

        def call(*args, **kwargs):
            return func(get(), *args, **kwargs)
        return call
    return original
