"""The conv_pooling and conv_fc families: shapes, parameter counts, sampling, validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt.tasks.families.conv import conv2d, conv_feature_shape, conv_output_size

BASE = {"dataset": "digits", "batch_size": 4}


@pytest.mark.parametrize(("size", "stride", "padding", "expected"), [
    (28, 1, "SAME", 28), (28, 2, "SAME", 14), (7, 2, "SAME", 4), (1, 2, "SAME", 1),
    (28, 1, "VALID", 26), (28, 2, "VALID", 13), (8, 2, "VALID", 3), (3, 2, "VALID", 1),
    (3, 1, "VALID", 1), (2, 1, "VALID", 0), (1, 2, "VALID", 0),
])
def test_conv_output_size_by_hand(size, stride, padding, expected):
    assert conv_output_size(size, 3, stride, padding) == expected


def _lax_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize(("size", "kernel", "stride", "padding"), [
    (8, 3, 1, "SAME"), (8, 3, 2, "SAME"), (7, 3, 2, "SAME"), (9, 5, 3, "SAME"), (8, 3, 2, "VALID"),
    (7, 1, 1, "VALID"), (3, 3, 1, "VALID"), (1, 3, 2, "SAME"),
])
def test_conv2d_equals_xla_convolution_with_gradients_and_per_task_kernels(size, kernel, stride, padding):
    keys = jax.random.split(jax.random.key(size * 100 + kernel * 10 + stride), 2)
    x = jax.random.normal(keys[0], (3, 2, size, size, 4))  # 3 tasks, each its own images and kernel
    w = jax.random.normal(keys[1], (3, kernel, kernel, 4, 5))
    out = jax.vmap(conv2d, (0, 0, None, None))(x, w, stride, padding)
    ref = jax.vmap(_lax_conv, (0, 0, None, None))(x, w, stride, padding)
    assert out.shape == ref.shape == (3, 2, conv_output_size(size, kernel, stride, padding),
                                      conv_output_size(size, kernel, stride, padding), 5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    grads = [jax.grad(lambda a, b, f=f: jnp.sum(jnp.sin(f(a, b, stride, padding))), (0, 1))(x[0], w[0])
             for f in (conv2d, _lax_conv)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# (image_size, channels, strides, padding) -> feature map (H, W, C), worked out by hand.
SHAPES = [
    (16, [8, 16], [1, 2], ["VALID", "SAME"], (7, 7, 16)),     # 16 -VALID s1-> 14 -SAME s2-> 7
    (8, [4, 4, 4], [2, 2, 2], "SAME", (1, 1, 4)),             # 8 -> 4 -> 2 -> 1
    (16, [8, 8, 8], 2, "VALID", (1, 1, 8)),                   # 16 -> 7 -> 3 -> 1
    (8, [5], 1, "VALID", (6, 6, 5)),                          # 8 -> 6
    (16, [6, 12], [2, 1], ["SAME", "VALID"], (6, 6, 12)),     # 16 -> 8 -> 6
]


@pytest.mark.parametrize(("image_size", "channels", "strides", "padding", "expected"), SHAPES)
@pytest.mark.parametrize("name", ["conv_pooling", "conv_fc"])
def test_feature_and_logit_shapes_by_hand(name, image_size, channels, strides, padding, expected, fast_jit):
    task = lopt.tasks.build({**BASE, "family": name, "image_size": image_size, "channels": channels,
                             "strides": strides, "padding": padding})
    assert task.spec.feature_shape() == expected

    def run(t, k):
        params = t.init(k)
        x = t.sample_batch(k)["x"]
        return params, x, t.features(params, x), t.logits(params, x)

    params, x, features, logits = fast_jit(run)(task, jax.random.key(0))
    assert x.shape == (4, image_size, image_size, 1)
    assert features.shape == (4, *expected)
    assert logits.shape == (4, 10)
    if name == "conv_fc":
        assert params["fc"][0]["w"].shape[0] == math.prod(expected)


def _count(task):
    """Parameters counted from the shapes ``init`` produces."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(jax.eval_shape(task.init, jax.random.key(0))))


def test_conv_pooling_parameter_count_by_hand():
    task = lopt.tasks.build({**BASE, "family": "conv_pooling", "image_size": 16, "channels": [8, 16],
                             "strides": [1, 2], "padding": ["VALID", "SAME"]})
    # conv1 3*3*1*8 + 8 = 80; conv2 3*3*8*16 + 16 = 1168; head 16*10 + 10 = 170.
    assert task.num_params() == _count(task) == 80 + 1168 + 170
    no_bias = lopt.tasks.build({**BASE, "family": "conv_pooling", "image_size": 16, "channels": [8, 16],
                                "use_bias": False})
    assert no_bias.num_params() == _count(no_bias) == 72 + 1152 + 170
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(task.init, jax.random.key(0)))
    assert shapes == {"conv": [{"w": (3, 3, 1, 8), "b": (8,)}, {"w": (3, 3, 8, 16), "b": (16,)}],
                      "head": [{"w": (16, 10), "b": (10,)}]}


def test_conv_fc_parameter_count_by_hand():
    task = lopt.tasks.build({**BASE, "family": "conv_fc", "image_size": 16, "channels": [8, 16],
                             "strides": [1, 2], "padding": ["VALID", "SAME"], "hidden_sizes": [32]})
    # conv 80 + 1168; 7*7*16 = 784 features; fc 784*32 + 32 = 25120; head 32*10 + 10 = 330.
    assert task.num_params() == _count(task) == 80 + 1168 + 25120 + 330
    linear = lopt.tasks.build({**BASE, "family": "conv_fc", "image_size": 8, "channels": [4],
                               "strides": 1, "padding": "VALID", "hidden_sizes": []})
    # conv 3*3*1*4 + 4 = 40; 6*6*4 = 144 features straight to 10 classes: 1450.
    assert linear.num_params() == 40 + 1450


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_matches_a_hand_computation(pooling, fast_jit):
    task = lopt.tasks.build({**BASE, "family": "conv_pooling", "image_size": 8, "channels": [4],
                             "pooling": pooling})
    params = fast_jit(lambda t: t.init(jax.random.key(0)))(task)
    x = task.sample_batch(jax.random.key(1))["x"]
    features, logits = fast_jit(lambda t, p, x: (t.features(p, x), t.logits(p, x)))(task, params, x)
    features = np.asarray(features)
    pooled = features.mean(axis=(1, 2)) if pooling == "mean" else features.max(axis=(1, 2))
    expected = pooled @ np.asarray(params["head"][0]["w"]) + np.asarray(params["head"][0]["b"])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_conv_layer_is_a_cross_correlation_with_bias_and_activation(fast_jit):
    task = lopt.tasks.build({**BASE, "family": "conv_pooling", "image_size": 8, "channels": [2],
                             "strides": 1, "padding": "VALID", "activation": "tanh"})
    params = fast_jit(lambda t: t.init(jax.random.key(0)))(task)
    params["conv"][0]["b"] = jnp.array([0.1, -0.2])
    x = np.asarray(task.sample_batch(jax.random.key(1))["x"])
    w = np.asarray(params["conv"][0]["w"])
    out = np.zeros((4, 6, 6, 2))
    for i in range(6):
        for j in range(6):
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", x[:, i:i + 3, j:j + 3, :], w)
    expected = np.tanh(out + np.array([0.1, -0.2]))
    features = fast_jit(lambda t, p, x: t.features(p, x))(task, params, jnp.asarray(x))
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv_pooling", "conv_fc"])
def test_init_scale_is_a_dynamic_multiplier(name, fast_jit):
    a = lopt.tasks.build({**BASE, "family": name, "image_size": 8, "channels": [4], "init_scale": 1.0})
    b = lopt.tasks.build({**BASE, "family": name, "image_size": 8, "channels": [4], "init_scale": 0.25})
    assert a.spec == b.spec
    init = fast_jit(lambda t: t.init(jax.random.key(2)))
    params_a, params_b = init(a), init(b)  # one program for both
    assert init._cache_size() == 1
    jax.tree.map(lambda u, v: np.testing.assert_allclose(v, 0.25 * u, rtol=1e-6), params_a, params_b)


@pytest.mark.parametrize("name", ["conv_pooling", "conv_fc"])
def test_validation_rejects_configs_that_shrink_the_image_below_one_pixel(name):
    with pytest.raises(ValueError, match=r"conv layer 2 .*padding='VALID'.*below 1x1.*padding='SAME'"):
        lopt.tasks.build({"family": name, "image_size": 8, "channels": [8, 8, 8], "strides": 2,
                          "padding": "VALID"})
    with pytest.raises(ValueError, match=r"conv layer 0 .*kernel_size=9"):
        lopt.tasks.build({"family": name, "image_size": 8, "channels": [8], "kernel_size": 9,
                          "padding": "VALID"})
    # The same structure on a larger image is fine.
    family = lopt.tasks.get(name)
    assert family.complete({"image_size": 16, "channels": [8, 8, 8], "strides": 2, "padding": "VALID"})


def test_per_layer_lists_must_match_the_number_of_layers():
    with pytest.raises(ValueError, match="strides=.*3 entries.*2 layers"):
        lopt.tasks.build({"family": "conv_fc", "channels": [8, 8], "strides": [1, 2, 2]})
    with pytest.raises(ValueError, match="padding=.*1 entries.*2 layers"):
        lopt.tasks.build({"family": "conv_pooling", "channels": [8, 8], "padding": ["SAME"]})


@pytest.mark.parametrize("name", ["conv_pooling", "conv_fc"])
def test_sampled_configs_stay_in_their_documented_ranges(name):
    family = lopt.tasks.get(name)
    seen = {"padding": set(), "pattern": set(), "layers": set(), "pooling": set(), "fc": set()}
    for seed in range(300):
        cfg = family.sample(seed)  # sample() validates: no config shrinks the image away
        channels = cfg["channels"]
        assert 1 <= len(channels) <= 3 and all(8 <= c <= 64 for c in channels)
        assert len(cfg["strides"]) == len(cfg["padding"]) == len(channels)
        strides = tuple(cfg["strides"])
        assert strides in {(2,) * len(channels), tuple(1 + i % 2 for i in range(len(channels))),
                           tuple(2 - i % 2 for i in range(len(channels)))}
        assert cfg["kernel_size"] == 3 and cfg["init_scale"] == 1.0
        assert cfg["image_size"] in ((8, 16) if cfg["dataset"] == "digits" else (8, 16, 28))
        h, w, c = conv_feature_shape(cfg["image_size"], channels, cfg["strides"], cfg["padding"])
        assert h >= 1 and w >= 1 and c == channels[-1]
        seen["padding"].update(cfg["padding"])
        seen["pattern"].add(strides[:2])
        seen["layers"].add(len(channels))
        if name == "conv_pooling":
            seen["pooling"].add(cfg["pooling"])
        else:
            assert len(cfg["hidden_sizes"]) <= 2 and all(32 <= h <= 128 for h in cfg["hidden_sizes"])
            seen["fc"].add(len(cfg["hidden_sizes"]))
    assert seen["padding"] == {"SAME", "VALID"} and seen["layers"] == {1, 2, 3}
    assert {(2, 2), (1, 2), (2, 1)} <= seen["pattern"]
    assert seen["pooling"] == ({"mean", "max"} if name == "conv_pooling" else set())
    assert seen["fc"] == (set() if name == "conv_pooling" else {0, 1, 2})


def test_sampler_forces_same_padding_where_valid_would_not_fit():
    family = lopt.tasks.get("conv_pooling")
    forced = 0
    for seed in range(400):
        cfg = family.sample(seed)
        size = cfg["image_size"]
        for stride, padding in zip(cfg["strides"], cfg["padding"]):
            if conv_output_size(size, 3, stride, "VALID") < 1:
                assert padding == "SAME"
                forced += 1
            size = conv_output_size(size, 3, stride, padding)
    assert forced > 0  # the case does come up


def test_a_conv_task_learns(fast_jit):
    task = lopt.tasks.build({"family": "conv_pooling", "dataset": "digits", "image_size": 8,
                             "channels": [16, 32], "batch_size": 64})
    optimizer = optax.adam(3e-3)

    @fast_jit
    def train(task, key):
        params = task.init(key)

        def step(carry, k):
            p, state = carry
            updates, state = optimizer.update(jax.grad(task.loss)(p, task.sample_batch(k)), state, p)
            return (optax.apply_updates(p, updates), state), None

        (trained, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, 150))
        valid = task.sample_batch(jax.random.key(2), "valid")
        return task.metrics(params, valid), task.metrics(trained, valid)

    before, after = train(task, jax.random.key(0))
    assert float(after["loss"]) < 0.5 * float(before["loss"])
    assert float(after["accuracy"]) > 0.6


@pytest.mark.parametrize(("initializer", "std"), [
    ("he_normal", lambda fi, fo: math.sqrt(2 / fi)),
    ("glorot_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("glorot_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),  # U(-l, l), l = sqrt(6 / (fi + fo))
    ("lecun_normal", lambda fi, fo: math.sqrt(1 / fi)),
])
def test_initializers_have_the_right_scale_per_layer(initializer, std, fast_jit):
    task = lopt.tasks.build({"family": "conv_fc", "dataset": "digits", "image_size": 16, "channels": [16, 32],
                             "hidden_sizes": [64], "initializer": initializer, "init_scale": 2.0})
    params = fast_jit(lambda t: t.init(jax.random.key(0)))(task)
    fans = [(9 * 1, 9 * 16), (9 * 16, 9 * 32), (4 * 4 * 32, 64), (64, 10)]
    weights = [layer["w"] for layer in params["conv"] + params["fc"]]
    for w, (fan_in, fan_out) in zip(weights, fans):
        w = np.asarray(w, np.float64)
        assert w.std() == pytest.approx(2.0 * std(fan_in, fan_out), rel=0.25 if w.size < 1000 else 0.06)
        if initializer == "glorot_uniform":
            assert np.abs(w).max() <= 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert all(np.all(layer["b"] == 0) for layer in params["conv"] + params["fc"])
    # Layers are independent draws (no slice is repeated).
    assert not np.allclose(weights[0].ravel()[:10] / weights[0].std(), weights[1].ravel()[:10] / weights[1].std())
