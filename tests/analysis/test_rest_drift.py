"""The update-at-rest probe: zero for Adam, exactly AdamW's decay, and the anchor of ``nominal``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
from lopt import analysis
from lopt.learned import NominalLOpt

TASK = lopt.tasks.build({"family": "mlp", "dataset": "digits", "hidden_sizes": [8]})


def _trace(subject, num_steps=30):
    return analysis.record_trace(subject, TASK, key=jax.random.key(0), num_steps=num_steps, num_snapshots=3)


def test_adam_does_not_move_at_rest():
    result = analysis.rest_drift(_trace(analysis.as_subject(optax.adam(1e-2))))
    assert result.drift.shape == (3, 4) and np.all(result.drift == 0.0) and np.all(result.step_rms > 0)
    assert np.all(result.relative() == 0.0)


def test_adamw_drifts_by_its_weight_decay():
    lr, decay = 1e-2, 0.1
    trace = _trace(analysis.as_subject(optax.adamw(lr, weight_decay=decay)))
    result = analysis.rest_drift(trace)
    params_rms = np.stack([[float(jnp.sqrt(jnp.mean(jnp.square(p[i])))) for p in jax.tree.leaves(trace.params)]
                           for i in range(3)])
    np.testing.assert_allclose(result.drift, lr * decay * params_rms, rtol=1e-5)


def test_the_anchor_removes_the_drift_of_a_biased_network(tmp_path):
    plain, anchored = NominalLOpt(), NominalLOpt(anchored_direction=True)
    theta = plain.init(jax.random.key(0))
    theta["network"]["w2"] = 0.3 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    theta["network"]["b2"] = jnp.asarray([0.05, 0.0])
    drifting = analysis.rest_drift(_trace(analysis.as_subject(plain, theta=theta, num_steps=30)))
    resting = analysis.rest_drift(_trace(analysis.as_subject(anchored, theta=theta, num_steps=30)))
    assert np.all(drifting.relative() > 1e-3) and np.all(resting.drift == 0.0)
    assert drifting.plot(tmp_path / "drift.png").endswith("drift.png") and (tmp_path / "drift.png").stat().st_size > 0
    resting.plot(tmp_path / "rest.png")


def test_findings_say_whether_it_drifts():
    from lopt.analysis import findings

    still = findings.describe_rest_drift(analysis.rest_drift(_trace(analysis.as_subject(optax.adam(1e-2)))))
    moving = findings.describe_rest_drift(analysis.rest_drift(_trace(
        analysis.as_subject(optax.adamw(1e-2, weight_decay=0.1)))))
    assert "exactly 0" in still and "**drift**" in moving and "x its own step" in moving
