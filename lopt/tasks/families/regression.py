"""``regression``: least-squares regression on a real tabular dataset with *unscaled* features.

Hand-designed optimizers are sensitive to the scale of the inputs; most training tasks
standardise them. Here the features are fed raw (``diabetes`` from scikit-learn, loaded offline
with ``scaled=False``: age in years, sex as 1/2, BMI, blood pressure and six serum
measurements, with ranges from about 1 to 300), so the loss is ill-conditioned in the
directions of the large features. The model is linear (``hidden_sizes=[]``) or an MLP.

The loss is the mean squared error divided by the variance of the training targets, so 1 means
"as good as predicting the mean" and the raw scale of the target does not matter.

The examples are split once, by a fixed permutation: 342 train, 50 validation, 50 test.
The config key naming the data is ``table`` (not ``dataset``, which names image datasets).
The only dynamic setting is ``init_scale`` (multiplies every weight's init standard deviation).
The family is left out of the ``taskset`` meta-training distribution
(:data:`lopt.tasks.mixture.NOT_IN_TASKSET`): it is a held-out evaluation task.

Example:
    >>> import jax, lopt
    >>> task = lopt.tasks.build({"family": "regression"})
    >>> params = task.init(jax.random.key(0))
    >>> float(task.loss(params, task.sample_batch(jax.random.key(1)))) > 1.0
    True
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lopt.host_transfer import to_device
from lopt.tasks.base import SPLITS, Task, TaskSpec
from lopt.tasks.classification import check_int, check_int_list
from lopt.tasks.datasets.dataset import Dataset, DatasetInfo
from lopt.tasks.family import TaskFamily
from lopt.tasks.sampling import choice, log_uniform

__all__ = ["REGRESSION_DATASETS", "RegressionFamily", "RegressionSpec", "RegressionTask"]

REGRESSION_DATASETS = ("diabetes",)
_SPLIT_SIZES = {"valid": 50, "test": 50}


@functools.lru_cache(maxsize=4)
def _load(name: str) -> tuple[Dataset, float]:
    """The dataset with float targets and raw features, and the training targets' variance."""
    # scikit-learn is a dependency, and the diabetes data ship inside it (no network).
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    order = np.random.default_rng(0).permutation(len(x))
    n_valid, n_test = _SPLIT_SIZES["valid"], _SPLIT_SIZES["test"]
    parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid], "train": order[n_test + n_valid:]}
    splits = {s: {"x": to_device(x[idx], np.float32), "y": to_device(y[idx], np.float32)}
              for s, idx in parts.items()}
    info = DatasetInfo(name=name, input_shape=(x.shape[1],), num_classes=0, x_scale=None, x_shift=None,
                       sizes=tuple((s, len(parts[s])) for s in SPLITS))
    return Dataset(info, splits), float(np.var(y[parts["train"]]))


@dataclasses.dataclass(frozen=True)
class RegressionSpec(TaskSpec):
    """Static structure: the dataset, its feature count, the hidden widths and the target variance."""

    dataset: str = "diabetes"
    num_features: int = 10
    hidden_sizes: tuple[int, ...] = ()
    target_variance: float = 1.0


class RegressionTask(Task):
    """An MLP (or a linear model) predicting a scalar target; loss ``mean((f(x) - y)^2) / var(y_train)``."""

    def init(self, key):
        sizes = (self.spec.num_features, *self.spec.hidden_sizes, 1)
        keys = jax.random.split(key, len(sizes) - 1)
        scale = self.settings["init_scale"]
        return [{"w": jax.random.normal(k, (n_in, n_out)) * scale / jnp.sqrt(n_in), "b": jnp.zeros((n_out,))}
                for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]

    def predict(self, params, x: jax.Array) -> jax.Array:
        """``[B]`` predictions for raw features ``x`` ``[B, num_features]``."""
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]

    def loss(self, params, batch):
        return jnp.mean((self.predict(params, batch["x"]) - batch["y"]) ** 2) / self.spec.target_variance


class RegressionFamily(TaskFamily):
    """Regression on raw (unstandardised) tabular features.

    Example:
        >>> import lopt
        >>> lopt.tasks.get("regression").default_config()["table"]
        'diabetes'
    """

    name = "regression"
    description = "Least-squares regression (linear or MLP) on raw, unscaled tabular features (diabetes)."

    def defaults(self):
        return {"table": "diabetes", "hidden_sizes": [], "batch_size": 32, "init_scale": 1.0}

    def sampling_ranges(self):
        return {"table": f"uniform over {REGRESSION_DATASETS}",
                "hidden_sizes": "uniform over ([], [32], [64, 64])", "batch_size": "uniform over (16, 32, 64)",
                "init_scale": "log-uniform in [0.5, 2]"}

    def sample_config(self, rng):
        return {"table": choice(rng, REGRESSION_DATASETS), "hidden_sizes": list(choice(rng, ([], [32], [64, 64]))),
                "batch_size": choice(rng, (16, 32, 64)), "init_scale": round(log_uniform(rng, 0.5, 2.0), 4)}

    def dynamic_keys(self) -> tuple[str, ...]:
        """Config keys that only change dynamic settings."""
        return ("init_scale",)

    def validate(self, cfg):
        if cfg["table"] not in REGRESSION_DATASETS:
            raise ValueError(f"{self.name}: table={cfg['table']!r} is not supported; use one of "
                             f"{REGRESSION_DATASETS}.")
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], max_len=4)
        check_int(self.name, "batch_size", cfg["batch_size"])
        scale = cfg["init_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{self.name}: init_scale={scale!r} must be a number > 0.")

    def make_task(self, cfg):
        data, variance = _load(cfg["table"])
        spec = RegressionSpec(family=self.name, batch_size=cfg["batch_size"], dataset=cfg["table"],
                              num_features=data.info.input_shape[0], hidden_sizes=tuple(cfg["hidden_sizes"]),
                              target_variance=variance)
        return RegressionTask(spec, data, {"init_scale": jnp.float32(cfg["init_scale"])})
