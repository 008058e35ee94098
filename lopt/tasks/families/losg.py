"""The synthetic training problems of Wichrowska et al. 2017 ("Learned optimizers that scale and generalize").

Their meta-training set (``learned_optimizer/problems/problem_sets.py`` of that paper's code) is
a collection of small problems, each optionally with noisy gradients (``noise_stdev``), sparse
gradients (``SparseProblem``: each gradient entry zeroed with some probability) and a log
objective (``LogObjective``). This family offers the ones with a differentiable, well-defined
objective, grouped by *kind* (the kind and the sizes decide the structure; the problem within
a kind is a dynamic setting, so e.g. every 2-D test function shares one compiled program):

*function_2d* (params ``x`` in R^2, initialised uniformly in the problem's box of the original code):

- ``rosenbrock``: ``(1-a)^2 + 100 (b-a^2)^2``; minimum 0 at (1, 1).
- ``ackley``: Ackley's function; minimum 0 at (0, 0).
- ``beale``: Beale's function; minimum 0 at (3, 0.5).
- ``booth``: ``(a+2b-7)^2 + (2a+b-5)^2``; minimum 0 at (1, 3).
- ``branin``: Branin's function; minimum 0.397887 at (pi, 2.275) and two other points.
- ``log_sum_exp``: ``log(e^(a+3b-0.1) + e^(a-3b-0.1) + e^(-a-0.1) + 1)``; minimum 1.269554 at (-log(2)/2, 0).
- ``matyas``: ``0.26 (a^2+b^2) - 0.48 a b``; minimum 0 at (0, 0).
- ``michalewicz``: ``2 - sin(a) sin(a^2/pi)^10 - sin(b) sin(2 b^2/pi)^10``; minimum 0.193377 at
  (2.1853, 1.5708).
- ``styblinski_tang``: ``0.5 sum(x^4 - 16 x^2 + 5 x) + 80``; minimum 1.667669 at (-2.9035, -2.9035).
- ``bowl``: ``0.5 |A x|^2`` with ``A = sqrt(diag(c, 1)) R(angle)``, ``c`` in {0.1, 1, 5}; minimum 0 at 0.

*vector* (params ``x`` in R^dim, initialised N(0, I)):

- ``quadratic``: ``0.5 |W x - y|^2`` with ``W``, ``y`` ~ N(0, 1); minimum 0 at ``W^-1 y``.
- ``norm``: ``(sum (|W x - y| + 1e-6)^p)^(1/p)``, ``p`` in {1, 1.5, 2, 2.5, 3}; minimum ~0 at ``W^-1 y``.
- ``dependency_chain``: ``x_1^2 + sum_i x_(i+1)^2 / (x_i^2 + 1e-6)``; minimum 0 at 0.
- ``min_max_well``: ``max_i x_i^2 + 1 / min_i x_i^2 - 2``; minimum 0 wherever every ``|x_i| = 1``.

*dataset* (params ``w`` in R^dim and ``b``; batches of a fixed random data set per seed):

- ``least_squares``: ``0.5 mean (X w + b - y)^2`` on ``y = X w* + b* + 0.1 eps``; minimum: the
  least-squares residual of the training split (computed when the task is built).
- ``logistic_regression``: 2-class logistic loss plus ``1e-3/2 |(w, b)|^2`` on two Gaussian
  clusters; unique minimum, no closed form.
- ``sum_of_quadratics``: ``mean_i (|w - x_i|^2 - |x_i|^2)`` on symmetric data; minimum 0 at 0
  (of the expected loss).
- ``projection_quadratic``: ``mean_i sum_j (w_j x_ij)^2``; minimum 0 at 0.
- ``outward_snake``: ``mean_i x_i1 / |w| + sum_j ((w_(j+1) - pi cos w_j) x_i(j+1))^2`` on binary
  data; no minimum (infimum 0 as ``|w|`` grows along the winding path).

*mlp*:

- ``mlp_2class``: a sigmoid MLP (``hidden_sizes``) with the logistic loss plus ``1e-3/2 |params|^2``
  on labels of a random tanh teacher network; no known minimum.

Left out from their set: ``MatMulAlgorithm`` (needs a matrix inverse that is singular on part
of the domain), ``Saddle`` (unbounded below), the sparse-embedding softmax problems (a parity
data set with a 23-example batch) and ``SumTask``/``Rescale`` (covered by
:mod:`lopt.tasks.augment`'s weight reparameterisation and loss scaling).

Every config also sets ``noise`` (standard deviation of Gaussian noise added to the gradient:
the training loss gains ``noise * <eps, params>``), ``sparse_grad`` (probability that a
gradient entry is zeroed in a training step), ``log_objective`` (optimise
``log(f - f* + 1e-6) - log(1e-6)``, with ``f*`` the known minimum or 0) and ``seed`` (the
problem instance: matrices, data, the bowl's conditioning). Validation and test batches carry no
noise and no sparsity: they measure the exact (transformed) objective.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.host_transfer import to_device
from lopt.tasks.base import Task, TaskSpec, check_split
from lopt.tasks.classification import check_int, check_int_list
from lopt.tasks.families.generative import apply_mlp
from lopt.tasks.family import TaskFamily
from lopt.tasks.sampling import choice, log_uniform, log_uniform_int

__all__ = ["KINDS", "MINIMA", "PROBLEMS", "LosgFamily", "LosgSpec", "LosgTask", "kind_of"]

FUNCTIONS_2D = ("rosenbrock", "ackley", "beale", "booth", "branin", "log_sum_exp", "matyas", "michalewicz",
                "styblinski_tang", "bowl")
VECTOR_PROBLEMS = ("quadratic", "norm", "dependency_chain", "min_max_well")
DATASET_PROBLEMS = ("least_squares", "logistic_regression", "sum_of_quadratics", "projection_quadratic",
                    "outward_snake")
#: Problems of each kind; problems of one kind (and one size) share a structure.
KINDS = {"function_2d": FUNCTIONS_2D, "vector": VECTOR_PROBLEMS, "dataset": DATASET_PROBLEMS,
         "mlp": ("mlp_2class",)}
#: Every problem, in the order :meth:`LosgFamily.sample` draws from (uniformly).
PROBLEMS = tuple(p for problems in KINDS.values() for p in problems)
#: Known minimum value of each problem (``None``: depends on the instance or unknown).
MINIMA: dict[str, float | None] = {
    "rosenbrock": 0.0, "ackley": 0.0, "beale": 0.0, "booth": 0.0, "branin": 0.397887, "log_sum_exp": 1.269554,
    "matyas": 0.0, "michalewicz": 0.193377, "styblinski_tang": 1.667669, "bowl": 0.0,
    "quadratic": 0.0, "norm": 0.0, "dependency_chain": 0.0, "min_max_well": 0.0,
    "least_squares": None, "logistic_regression": None, "sum_of_quadratics": 0.0, "projection_quadratic": 0.0,
    "outward_snake": None, "mlp_2class": None,
}
#: Initialisation box ``(low, high)`` of each 2-D function (from the original problem code).
INIT_BOXES = {
    "rosenbrock": ((-5.0, -5.0), (10.0, 10.0)), "ackley": ((-32.768, -32.768), (32.768, 32.768)),
    "beale": ((-4.5, -4.5), (4.5, 4.5)), "booth": ((-10.0, -10.0), (10.0, 10.0)),
    "branin": ((-5.0, 0.0), (10.0, 15.0)), "log_sum_exp": ((-2.0, -2.0), (2.0, 2.0)),
    "matyas": ((-10.0, -10.0), (10.0, 10.0)), "michalewicz": ((0.0, 0.0), (math.pi, math.pi)),
    "styblinski_tang": ((-5.0, -5.0), (5.0, 5.0)), "bowl": ((-2.0, -2.0), (2.0, 2.0)),
}
LOG_EPSILON = 1e-6
L2_SCALE = 1e-3


def kind_of(problem: str) -> str:
    """The kind (structure group) of ``problem``.

    Example:
        >>> kind_of("rosenbrock"), kind_of("least_squares")
        ('function_2d', 'dataset')
    """
    for kind, problems in KINDS.items():
        if problem in problems:
            return kind
    raise ValueError(f"losg: problem={problem!r} is unknown; use one of {PROBLEMS}.")


@dataclasses.dataclass(frozen=True)
class LosgSpec(TaskSpec):
    """Static structure: the kind, the parameter dimension and (for data problems) the data sizes.

    Attributes:
        kind: one of :data:`KINDS`.
        dim: parameter dimension (inputs per example for the data kinds).
        num_examples: examples per split (data kinds; 0 otherwise).
        hidden_sizes: hidden widths of ``mlp_2class``.
    """

    kind: str = "function_2d"
    dim: int = 2
    num_examples: int = 0
    hidden_sizes: tuple[int, ...] = ()


# --- objectives ---------------------------------------------------------------------------------

def _rosenbrock(x, s):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _ackley(x, s):
    radius = jnp.sqrt(0.5 * (x[0] ** 2 + x[1] ** 2) + 1e-12)
    waves = 0.5 * (jnp.cos(2 * jnp.pi * x[0]) + jnp.cos(2 * jnp.pi * x[1]))
    return -20 * jnp.exp(-0.2 * radius) - jnp.exp(waves) + math.e + 20


def _beale(x, s):
    a, b = x[0], x[1]
    return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b**2) ** 2 + (2.625 - a + a * b**3) ** 2


def _booth(x, s):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def _branin(x, s):
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * jnp.cos(x[0]) + 10


def _log_sum_exp(x, s):
    a, b = x[0], x[1]
    return jax.nn.logsumexp(jnp.stack([a + 3 * b - 0.1, a - 3 * b - 0.1, -a - 0.1, jnp.zeros_like(a)]))


def _matyas(x, s):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def _michalewicz(x, s):
    return 2 - (jnp.sin(x[0]) * jnp.sin(x[0] ** 2 / jnp.pi) ** 10 + jnp.sin(x[1]) * jnp.sin(2 * x[1] ** 2 / jnp.pi) ** 10)


def _styblinski_tang(x, s):
    return 0.5 * jnp.sum(x**4 - 16 * x**2 + 5 * x) + 80


def _bowl(x, s):
    return 0.5 * jnp.sum((s["matrix"] @ x) ** 2)


def _quadratic(x, s):
    return 0.5 * jnp.sum((s["matrix"] @ x - s["target"]) ** 2)


def _norm(x, s):
    power = s["power"]
    return jnp.sum((jnp.abs(s["matrix"] @ x - s["target"]) + LOG_EPSILON) ** power) ** (1 / power)


def _dependency_chain(x, s):
    return x[0] ** 2 + jnp.sum(x[1:] ** 2 / (x[:-1] ** 2 + LOG_EPSILON))


def _min_max_well(x, s):
    squares = x**2
    return jnp.max(squares) + 1 / (jnp.min(squares) + 1e-12) - 2


def _least_squares(p, batch, s):
    return 0.5 * jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)


def _logistic_regression(p, batch, s):
    logits = batch["x"] @ p["w"] + p["b"]
    l2 = 0.5 * L2_SCALE * (jnp.sum(p["w"] ** 2) + p["b"] ** 2)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["y"])) + l2


def _sum_of_quadratics(p, batch, s):
    w = p["w"]
    return jnp.mean(jnp.sum((w - batch["x"]) ** 2 - batch["x"] ** 2, axis=-1))


def _projection_quadratic(p, batch, s):
    return jnp.mean(jnp.sum((p["w"] * batch["x"]) ** 2, axis=-1))


def _outward_snake(p, batch, s):
    w, x = p["w"], batch["x"]
    radius = jnp.sqrt(jnp.sum(w**2) + 1e-12)
    winding = (w[1:] - jnp.pi * jnp.cos(w[:-1])) * x[:, 1:]
    return jnp.mean(x[:, 0] / (radius + LOG_EPSILON)) + jnp.mean(jnp.sum(winding**2, axis=-1))


_OBJECTIVES = {
    "rosenbrock": _rosenbrock, "ackley": _ackley, "beale": _beale, "booth": _booth, "branin": _branin,
    "log_sum_exp": _log_sum_exp, "matyas": _matyas, "michalewicz": _michalewicz,
    "styblinski_tang": _styblinski_tang, "bowl": _bowl, "quadratic": _quadratic, "norm": _norm,
    "dependency_chain": _dependency_chain, "min_max_well": _min_max_well,
    "least_squares": _least_squares, "logistic_regression": _logistic_regression,
    "sum_of_quadratics": _sum_of_quadratics, "projection_quadratic": _projection_quadratic,
    "outward_snake": _outward_snake,
}


def _select(index: jax.Array, values: list[jax.Array]) -> jax.Array:
    """``values[index]`` for a traced index (a one-hot sum, so it also works under ``vmap``)."""
    return sum(jnp.where(index == i, v, 0.0) for i, v in enumerate(values))


class LosgTask(Task):
    """One of the problems of :mod:`lopt.tasks.families.losg` (see the module table).

    Batches are ``{"noise": like params, "keep": like params (bool)}`` plus ``{"x": [batch, dim],
    "y": [batch]}`` for the data kinds. The problem within the kind is ``settings["problem"]``
    (dynamic). Every problem of the kind is evaluated on a safe point and only the selected one
    on the params, so gradients stay finite under ``vmap`` whichever problem a task holds.

    Settings (dynamic): ``problem``, ``noise``, ``sparse_grad``, ``log_objective``, ``minimum``,
    ``init_scale`` and per kind: ``init_low``/``init_high``/``matrix`` (function_2d);
    ``matrix``/``target``/``power`` (vector); ``init_std`` and ``x_<split>``/``y_<split>`` data
    (dataset, mlp).

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "losg", "problem": "rosenbrock"})
        >>> round(float(task.objective({"x": jax.numpy.array([1.0, 1.0])}, task.sample_batch(
        ...     jax.random.key(0), "valid"))), 6)
        0.0
    """

    # --- params --------------------------------------------------------------------------------

    def param_shapes(self) -> Any:
        """The params pytree with shapes (tuples) as leaves, from the spec alone."""
        spec = self.spec
        if spec.kind in ("function_2d", "vector"):
            return {"x": (spec.dim,)}
        if spec.kind == "dataset":
            return {"w": (spec.dim,), "b": ()}
        sizes = [spec.dim, *spec.hidden_sizes, 1]
        return [{"w": (n_in, n_out), "b": (n_out,)} for n_in, n_out in zip(sizes[:-1], sizes[1:])]

    def init(self, key):
        s, spec = self.settings, self.spec
        if spec.kind == "function_2d":
            center, half = 0.5 * (s["init_high"] + s["init_low"]), 0.5 * (s["init_high"] - s["init_low"])
            return {"x": center + half * s["init_scale"] * jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)}
        if spec.kind == "vector":
            return {"x": jax.random.normal(key, (spec.dim,)) * s["init_scale"]}
        if spec.kind == "dataset":
            return {"w": jax.random.normal(key, (spec.dim,)) * (s["init_std"] * s["init_scale"]), "b": jnp.zeros(())}
        keys = jax.random.split(key, len(spec.hidden_sizes) + 1)
        sizes = [spec.dim, *spec.hidden_sizes, 1]
        return [{"w": jax.random.normal(k, (n_in, n_out)) * (1.2 / math.sqrt(n_in)) * s["init_scale"],
                 "b": jnp.zeros((n_out,))} for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]

    # --- batches -------------------------------------------------------------------------------

    def sample_batch(self, key, split="train"):
        training = check_split(split) == "train"
        data_key, noise_key, keep_key = jax.random.split(key, 3)
        shapes = self.param_shapes()
        is_shape = lambda x: isinstance(x, tuple)
        leaves, treedef = jax.tree.flatten(shapes, is_leaf=is_shape)
        noise = [jax.random.normal(k, shape) if training else jnp.zeros(shape)
                 for k, shape in zip(jax.random.split(noise_key, len(leaves)), leaves)]
        keep = [jax.random.uniform(k, shape) >= self.settings["sparse_grad"] if training else jnp.ones(shape, bool)
                for k, shape in zip(jax.random.split(keep_key, len(leaves)), leaves)]
        batch = {"noise": jax.tree.unflatten(treedef, noise), "keep": jax.tree.unflatten(treedef, keep)}
        if self.spec.kind in ("dataset", "mlp"):
            index = jax.random.randint(data_key, (self.spec.batch_size,), 0, self.spec.num_examples)
            batch["x"] = self.settings[f"x_{split}"][index]
            batch["y"] = self.settings[f"y_{split}"][index]
        return batch

    # --- the objective -------------------------------------------------------------------------

    def objective(self, params, batch) -> jax.Array:
        """The problem's objective ``f`` (before the log transform and the gradient noise)."""
        s, kind = self.settings, self.spec.kind
        if kind == "mlp":
            logits = apply_mlp(params, batch["x"], jax.nn.sigmoid)[:, 0]
            l2 = 0.5 * L2_SCALE * sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
            return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["y"])) + l2
        values = []
        for i, name in enumerate(KINDS[kind]):
            chosen = s["problem"] == i
            # The problems not chosen see a constant safe point, so their gradients are zero.
            safe = jax.tree.map(lambda p, chosen=chosen: jnp.where(chosen, p, jax.lax.stop_gradient(
                jnp.ones_like(p))), params)
            if kind == "dataset":
                values.append(_OBJECTIVES[name](safe, batch, s))
            else:
                values.append(_OBJECTIVES[name](safe["x"], s))
        return _select(s["problem"], values)

    def loss(self, params, batch):
        s = self.settings
        # Sparse gradients: entries not kept see the params through a stop_gradient.
        params = jax.tree.map(lambda p, keep: jnp.where(keep, p, jax.lax.stop_gradient(p)), params, batch["keep"])
        f = self.objective(params, batch)
        logged = jnp.log(jnp.maximum(f - s["minimum"], 0.0) + LOG_EPSILON) - math.log(LOG_EPSILON)
        f = jnp.where(s["log_objective"], logged, f)
        noise = sum(jnp.vdot(e, p) for e, p in zip(jax.tree.leaves(batch["noise"]), jax.tree.leaves(params)))
        return f + s["noise"] * noise


# --- instance generation (host-side numpy, from the config's seed) -------------------------------

def _function_2d_settings(problem: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    low, high = INIT_BOXES[problem]
    condition = float(choice(rng, (0.1, 1.0, 5.0)))  # the bowl's conditioning, as in the original set
    angle = rng.uniform(0, math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return {"init_low": np.array(low), "init_high": np.array(high),
            "matrix": np.sqrt(np.diag([condition, 1.0])) @ rotation}


def _vector_settings(problem: str, dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"matrix": rng.normal(size=(dim, dim)), "target": rng.normal(size=dim),
            "power": np.array(choice(rng, (1.0, 1.5, 2.0, 2.5, 3.0)))}


def _dataset_split(problem: str, dim: int, n: int, rng: np.random.Generator, truth: dict) -> tuple:
    if problem == "least_squares":
        x = rng.normal(size=(n, dim))
        return x, x @ truth["w"] + truth["b"] + 0.1 * rng.normal(size=n)
    if problem == "logistic_regression":
        y = rng.integers(0, 2, size=n).astype(np.float64)
        return rng.normal(size=(n, dim)) + np.outer(2 * y - 1, truth["direction"]) * truth["separation"] / 2, y
    if problem == "sum_of_quadratics":
        half = rng.normal(size=((n + 1) // 2, dim))
        return np.concatenate([half, -half])[:n], np.zeros(n)
    if problem == "projection_quadratic":
        return rng.normal(size=(n, dim)), np.zeros(n)
    if problem == "outward_snake":
        return rng.integers(0, 2, size=(n, dim)).astype(np.float64), np.zeros(n)
    # mlp_2class: labels of a random tanh teacher network.
    x = rng.normal(size=(n, dim))
    hidden = np.tanh(x @ truth["w1"])
    return x, np.argmax(hidden @ truth["w2"], axis=-1).astype(np.float64)


def _dataset_settings(problem: str, dim: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    direction = rng.normal(size=dim)
    truth = {"w": rng.normal(size=dim) / math.sqrt(dim), "b": rng.normal(),
             "direction": direction / np.linalg.norm(direction),
             "separation": float(choice(rng, (1.0, 1.5, 2.0))),
             "w1": rng.normal(size=(dim, 16)) / math.sqrt(dim), "w2": rng.normal(size=(16, 2))}
    settings = {}
    for split in ("train", "valid", "test"):
        settings[f"x_{split}"], settings[f"y_{split}"] = _dataset_split(problem, dim, n, rng, truth)
    regression = problem in ("least_squares", "logistic_regression", "mlp_2class")
    settings["init_std"] = np.array(1.0 / math.sqrt(dim) if regression else 1.0)
    if problem == "least_squares":
        design = np.concatenate([settings["x_train"], np.ones((n, 1))], axis=1)
        solution, *_ = np.linalg.lstsq(design, settings["y_train"], rcond=None)
        settings["minimum"] = np.array(0.5 * np.mean((design @ solution - settings["y_train"]) ** 2))
    return settings


class LosgFamily(TaskFamily):
    """Wichrowska et al.'s synthetic problems: test functions, random quadratics, small data problems.

    Config keys (defaults): ``problem`` ("quadratic"; see :data:`PROBLEMS`), ``dim`` (None: 2 for
    the 2-D functions, 10 otherwise; the 2-D functions accept only 2), ``batch_size`` (32; data
    problems only), ``num_examples`` (1000 per split; data problems only), ``hidden_sizes``
    ([8, 5]; ``mlp_2class`` only), ``noise`` (0.0), ``sparse_grad`` (0.0), ``log_objective``
    (False), ``init_scale`` (1.0), ``seed`` (0).

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("losg")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and cfg["problem"] in PROBLEMS
        True
        >>> family.build({"problem": "booth"}).spec.kind
        'function_2d'
    """

    name = "losg"
    description = "Wichrowska et al. 2017 synthetic problems: 2-D test functions, quadratics, small data problems."

    def defaults(self):
        return {"problem": "quadratic", "dim": None, "batch_size": 32, "num_examples": 1000, "hidden_sizes": [8, 5],
                "noise": 0.0, "sparse_grad": 0.0, "log_objective": False, "init_scale": 1.0, "seed": 0}

    def sampling_ranges(self):
        return {"problem": f"uniform over the {len(PROBLEMS)} problems {PROBLEMS}",
                "dim": "2-D functions: 2; vector: log-uniform integer in [4, 100]; dataset: in [4, 256]; "
                       "mlp_2class: in [4, 16]",
                "batch_size": "uniform over (16, 32, 64, 128) (data problems)",
                "num_examples": "1000",
                "hidden_sizes": "mlp_2class: depth uniform in {1,...,4}, widths log-uniform integers in [3, 64]",
                "noise": "0 (half the time) or log-uniform in [0.01, 1]",
                "sparse_grad": "0 (80%) or uniform in [0.5, 0.99]",
                "log_objective": "True with probability 0.2",
                "init_scale": "1", "seed": "uniform integer in [0, 2^31)"}

    def sample_config(self, rng):
        problem = choice(rng, PROBLEMS)
        kind = kind_of(problem)
        dim = {"function_2d": 2, "vector": (4, 100), "dataset": (4, 256), "mlp": (4, 16)}[kind]
        cfg = {"problem": problem,
               "dim": dim if isinstance(dim, int) else log_uniform_int(rng, *dim),
               "batch_size": choice(rng, (16, 32, 64, 128)),
               "noise": 0.0 if rng.uniform() < 0.5 else log_uniform(rng, 0.01, 1.0),
               "sparse_grad": 0.0 if rng.uniform() < 0.8 else float(rng.uniform(0.5, 0.99)),
               "log_objective": bool(rng.uniform() < 0.2),
               "seed": int(rng.integers(2**31))}
        if kind == "mlp":
            cfg["hidden_sizes"] = [log_uniform_int(rng, 3, 64) for _ in range(int(rng.integers(1, 5)))]
        return cfg

    def validate(self, cfg):
        if not isinstance(cfg["problem"], str) or cfg["problem"] not in PROBLEMS:
            raise ValueError(f"losg: problem={cfg['problem']!r} is unknown; use one of {PROBLEMS}.")
        kind = kind_of(cfg["problem"])
        dim = cfg["dim"]
        if dim is not None:
            check_int(self.name, "dim", dim, minimum=2)
            if kind == "function_2d" and dim != 2:
                raise ValueError(f"losg: problem={cfg['problem']!r} is 2-dimensional; use dim=2 or dim=None.")
        check_int(self.name, "batch_size", cfg["batch_size"])
        check_int(self.name, "num_examples", cfg["num_examples"])
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], max_len=8)
        for key in ("noise", "sparse_grad", "init_scale"):
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"losg: {key}={value!r} must be a number >= 0.")
        if cfg["sparse_grad"] >= 1:
            raise ValueError(f"losg: sparse_grad={cfg['sparse_grad']!r} is a probability; use a value in [0, 1).")
        if not isinstance(cfg["log_objective"], bool):
            raise ValueError(f"losg: log_objective={cfg['log_objective']!r} must be True or False.")
        check_int(self.name, "seed", cfg["seed"], minimum=0)

    # --- structure -----------------------------------------------------------------------------

    def dynamic_keys(self) -> tuple[str, ...]:
        """Config keys that only change dynamic settings (the problem varies within its kind)."""
        return ("problem", "noise", "sparse_grad", "log_objective", "init_scale", "seed")

    def static_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a complete config that decides the structure (equal iff the tasks stack).

        Example:
            >>> import lopt
            >>> family = lopt.tasks.get("losg")
            >>> family.static_config(family.complete({"problem": "booth", "batch_size": 7}))
            {'kind': 'function_2d', 'dim': 2}
        """
        kind = kind_of(cfg["problem"])
        static: dict[str, Any] = {"kind": kind, "dim": self._dim(cfg)}
        if kind in ("dataset", "mlp"):
            static.update(batch_size=cfg["batch_size"], num_examples=cfg["num_examples"])
        if kind == "mlp":
            static["hidden_sizes"] = list(cfg["hidden_sizes"])
        return static

    def variation_grid(self, cfg: Mapping[str, Any]) -> dict[str, tuple]:
        """Values of the dynamic keys that a mixture varies inside one compiled structure."""
        return {"problem": KINDS[kind_of(cfg["problem"])], "noise": (0.0, 0.01, 0.1, 1.0),
                "sparse_grad": (0.0, 0.5, 0.9, 0.99), "log_objective": (False, True),
                "init_scale": (0.5, 1.0, 2.0), "seed": tuple(range(4))}

    @staticmethod
    def _dim(cfg: Mapping[str, Any]) -> int:
        if cfg["dim"] is not None:
            return cfg["dim"]
        return 2 if kind_of(cfg["problem"]) == "function_2d" else 10

    def make_task(self, cfg):
        problem, kind, dim = cfg["problem"], kind_of(cfg["problem"]), self._dim(cfg)
        rng = np.random.default_rng(cfg["seed"])
        data_kind = kind in ("dataset", "mlp")
        spec = LosgSpec(family=self.name, batch_size=cfg["batch_size"] if data_kind else 1, kind=kind, dim=dim,
                        num_examples=cfg["num_examples"] if data_kind else 0,
                        hidden_sizes=tuple(cfg["hidden_sizes"]) if kind == "mlp" else ())
        if kind == "function_2d":
            arrays = _function_2d_settings(problem, rng)
        elif kind == "vector":
            arrays = _vector_settings(problem, dim, rng)
        else:
            arrays = _dataset_settings(problem, dim, cfg["num_examples"], rng)
        arrays.setdefault("minimum", np.array(MINIMA[problem] or 0.0))
        settings = {k: to_device(v, np.float32) for k, v in arrays.items()}
        settings.update(problem=jnp.int32(KINDS[kind].index(problem)), noise=jnp.float32(cfg["noise"]),
                        sparse_grad=jnp.float32(cfg["sparse_grad"]), log_objective=jnp.bool_(cfg["log_objective"]),
                        init_scale=jnp.float32(cfg["init_scale"]))
        return LosgTask(spec, None, settings)
