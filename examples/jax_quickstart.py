#!/usr/bin/env python3
"""UnSwag in JAX: train a small MLP whose activations keep k-bit codes.

    pip install jax && pip install .     # builds libunswag + the XLA FFI handlers
    python examples/jax_quickstart.py
"""
import jax
import jax.numpy as jnp

import unswag.jax as uj
from unswag import unswag_relu  # the package-level name of unswag.jax.relu

# relu through the package-level name: exact forward, exact gradient, 1 bit kept.
x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
y = unswag_relu(x)
g = jax.grad(lambda x: unswag_relu(x).sum())(x)
assert (y == jax.nn.relu(x)).all() and (g == (x > 0)).all()

# What is kept for the backward pass: a uint8 array of ceil(n * bits / 8) bytes.
from jax.ad_checkpoint import print_saved_residuals

print_saved_residuals(lambda x: uj.silu(x, bits=4).sum(), jnp.ones((1024,)))

print("FFI handlers:", uj.ffi_status())


# A small regression MLP with SiLU at 4 bits.
def init(key, sizes):
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, k = jax.random.split(key)
        params.append((jax.random.normal(k, (a, b)) / jnp.sqrt(a), jnp.zeros(b)))
    return params


def mlp(params, x, act):
    for w, b in params[:-1]:
        x = act(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss(params, x, t, act):
    return jnp.mean((mlp(params, x, act) - t) ** 2)


key = jax.random.PRNGKey(1)
xs = jax.random.uniform(key, (512, 1), minval=-3, maxval=3)
ts = jnp.sin(2 * xs)
for name, act in [("jax.nn.silu", jax.nn.silu), ("unswag silu/4", lambda h: uj.silu(h, 4))]:
    params = init(jax.random.PRNGKey(2), [1, 64, 64, 1])
    step = jax.jit(lambda p, a=act: jax.tree_util.tree_map(
        lambda w, g: w - 0.05 * g, p, jax.grad(loss)(p, xs, ts, a)))
    for _ in range(500):
        params = step(params)
    print(f"{name:>14}: final loss {float(loss(params, xs, ts, act)):.5f}")

# Batched (vmap) and any shape work; pick the implementation explicitly if you like.
print(jax.vmap(lambda r: uj.gelu(r, bits=2, impl="pure"))(jnp.ones((3, 5))).shape)
