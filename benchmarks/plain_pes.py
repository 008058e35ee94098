"""A plain, fused JAX reference of PES meta-training on the canonical config (for benchmarks only).

Written without lopt's abstractions: a 64-32-10 relu MLP task on in-memory data, the Metz et
al. 2019 per-parameter MLP learned optimizer (gradient, parameter, 6 momenta, 11 tanh time
features = 19 inputs; two hidden layers of 32; direction * exp(1e-3 * magnitude) * 1e-3), and
antithetic PES over ``N`` pairs with a ``lax.scan`` unroll, everything in one jitted function.
It skips what a library needs (resets, normalisation, divergence handling, checkpoints), so it
is a lower bound on overhead: lopt should match it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DECAYS = jnp.array([0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
TIMESCALES = jnp.array([1, 3, 10, 30, 100, 300, 1000, 3000, 10_000, 30_000, 100_000], jnp.float32)


def init_task(key):
    k1, k2 = jax.random.split(key)
    return {"w0": jax.random.normal(k1, (64, 32)) * jnp.sqrt(2 / 64), "b0": jnp.zeros(32),
            "w1": jax.random.normal(k2, (32, 10)) * jnp.sqrt(2 / 32), "b1": jnp.zeros(10)}


def task_loss(params, x, y):
    h = jax.nn.relu(x @ params["w0"] + params["b0"])
    logits = h @ params["w1"] + params["b1"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def init_theta(key):
    keys = jax.random.split(key, 3)
    sizes = [(19, 32), (32, 32), (32, 2)]
    return [{"w": jax.random.normal(k, s) * jnp.sqrt(1 / s[0]), "b": jnp.zeros(s[1])} for k, s in zip(keys, sizes)]


def lopt_update(theta, grads, params, momenta, step):
    momenta = jax.tree.map(lambda m, g: DECAYS * m + (1 - DECAYS) * g[..., None], momenta, grads)
    time = jnp.tanh(step / TIMESCALES)

    def one(g, p, m):
        x = jnp.concatenate([g[..., None], p[..., None], m], -1)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=tuple(range(x.ndim - 1)), keepdims=True) + 1e-5)
        x = jnp.concatenate([x, jnp.broadcast_to(time, x.shape[:-1] + time.shape)], -1)
        h = jax.nn.relu(x @ theta[0]["w"] + theta[0]["b"])
        h = jax.nn.relu(h @ theta[1]["w"] + theta[1]["b"])
        out = h @ theta[2]["w"] + theta[2]["b"]
        return p - out[..., 0] * jnp.exp(out[..., 1] * 1e-3) * 1e-3

    return jax.tree.map(one, grads, params, momenta), momenta


def make_outer_step(x_all, y_all, num_pairs: int, unroll: int, std: float = 0.01, batch: int = 128):
    """Returns ``step(theta, state, key) -> (grad, state)`` for one PES estimate."""
    x_all, y_all = jnp.asarray(x_all), jnp.asarray(y_all)

    def inner_step(theta_m, params, momenta, step, key):
        idx = jax.random.randint(key, (batch,), 0, x_all.shape[0])
        loss, grads = jax.value_and_grad(task_loss)(params, x_all[idx], y_all[idx])
        params, momenta = lopt_update(theta_m, grads, params, momenta, step)
        return params, momenta, loss

    def unroll_fn(theta_pm, params, momenta, step, key):
        def body(carry, t):
            params, momenta = carry
            k = jax.random.fold_in(key, step + t)
            members = jax.vmap(inner_step, in_axes=(0, 0, 0, None, None))
            params, momenta, loss = members(theta_pm, params, momenta, (step + t).astype(jnp.float32), k)
            return (params, momenta), loss

        (params, momenta), losses = jax.lax.scan(body, (params, momenta), jnp.arange(unroll))
        return params, momenta, losses.mean(0)

    @jax.jit
    def outer_step(theta, state, key):
        params, momenta, accum, step = state
        noise_key, data_key = jax.random.split(key)
        leaves, treedef = jax.tree.flatten(theta)
        eps = treedef.unflatten([std * jax.random.normal(k, (num_pairs, *x.shape))
                                 for k, x in zip(jax.random.split(noise_key, len(leaves)), leaves)])
        accum = jax.tree.map(jnp.add, accum, eps)
        thetas = jax.tree.map(lambda t, e: jnp.stack([t + e, t - e], 1), theta, eps)
        keys = jax.random.split(data_key, num_pairs)
        params, momenta, losses = jax.vmap(unroll_fn, in_axes=(0, 0, 0, None, 0))(thetas, params, momenta, step, keys)
        diff = losses[:, 0] - losses[:, 1]
        grad = jax.tree.map(lambda a: jnp.tensordot(diff, a, 1) / (2 * std**2 * num_pairs), accum)
        return grad, (params, momenta, accum, step + unroll)

    def init_state(theta, key):
        params = jax.vmap(init_task)(jax.random.split(key, num_pairs))
        params = jax.tree.map(lambda p: jnp.repeat(p[:, None], 2, 1), params)
        momenta = jax.tree.map(lambda p: jnp.zeros(p.shape + (6,)), params)
        accum = jax.tree.map(lambda t: jnp.zeros((num_pairs, *t.shape)), theta)
        return params, momenta, accum, jnp.int32(0)

    return outer_step, init_state


def fashion_arrays():
    """8x8 Fashion-MNIST training images (normalised, flattened) and labels, via lopt's loader."""
    import lopt

    name = "fashion_mnist" if "fashion_mnist" in lopt.tasks.datasets.available() else "digits"
    data = lopt.tasks.datasets.load(name, 8)
    x = np.asarray(data.splits["train"]["x"], np.float32).reshape(-1, 64) * data.info.x_scale + data.info.x_shift
    return x, np.asarray(data.splits["train"]["y"])
