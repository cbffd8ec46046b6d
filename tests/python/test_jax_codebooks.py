"""The codebook tables shipped for the pure-JAX path equal libunswag's."""
from __future__ import annotations

import numpy as np
import pytest

from unswag import _native

pytest.importorskip("jax")


def test_shipped_tables_cover_every_smooth_activation():
    from unswag.jax._codebooks import TABLES
    for act in ("silu", "gelu", "gelu_tanh"):
        for bits in (1, 2, 4, 8):
            b, lv, err = TABLES[(act, bits)]
            assert len(b) == (1 << bits) - 1 and len(lv) == 1 << bits
            assert all(x < y for x, y in zip(b, b[1:]))
            assert all(np.float32(v) == v for v in b + lv)  # exactly float32 values
            assert err > 0


@pytest.mark.skipif(not _native.available(), reason="libunswag not built")
def test_shipped_tables_equal_library():
    from unswag.jax._codebooks import LIBRARY_VERSION, TABLES
    for (act, bits), (b, lv, err) in TABLES.items():
        cb = _native.builtin_codebook(act, bits)
        assert cb.bits == bits
        m = 1 << bits
        lib_b = np.array(cb.boundaries[:m - 1], np.float32)
        lib_l = np.array(cb.levels[:m], np.float32)
        np.testing.assert_array_equal(np.array(b, np.float32).view(np.uint32),
                                      lib_b.view(np.uint32), err_msg=f"{act} {bits}")
        np.testing.assert_array_equal(np.array(lv, np.float32).view(np.uint32),
                                      lib_l.view(np.uint32), err_msg=f"{act} {bits}")
        assert err == cb.rms_error
    assert LIBRARY_VERSION == _native.version() or LIBRARY_VERSION  # tables, not version, matter


def test_pure_path_without_library_uses_shipped_tables(monkeypatch):
    import unswag.jax as uj
    from unswag.jax import _ops
    from unswag.jax._codebooks import TABLES
    monkeypatch.setattr(_native, "available", lambda: False)
    _ops.builtin_codebook.cache_clear()
    try:
        assert uj.builtin_codebook("gelu", 4) == TABLES[("gelu", 4)]
        import jax.numpy as jnp
        y = uj.gelu(jnp.linspace(-3, 3, 16), 4, impl="pure")
        assert y.shape == (16,)
    finally:
        _ops.builtin_codebook.cache_clear()


def test_stochastic_codes_refused_clearly():
    from unswag.jax._ops import make_spec
    with pytest.raises(ValueError, match="deterministic codes"):
        make_spec("silu", 2, codes="stochastic")
