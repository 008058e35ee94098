"""Population self-training: learned optimizers, from random initialisation, outer-train each other.

As in Metz et al. 2021 ("Training learned optimizers with randomly initialized learned
optimizers", arXiv 2101.07367): a population of ``size`` learned optimizers of one
architecture starts from randomised theta (``lopt.init(key)`` plus Gaussian noise of
``init_std``). A *generation* is ``generation_steps`` outer steps of every member; during it a
member's theta is updated by the learned optimizer whose theta is its *teacher*'s (the best
member at the generation's start, the member itself, or a random member), which receives the
outer gradient and the meta-loss as ``loss`` with the horizon ``generations * generation_steps``.
After each generation every member is evaluated on held-out inner trainings (the trainer's
evaluation, the same tasks for all members) and the ``replace`` worst become copies of the best
(theta, outer-optimizer state and estimator state), whose theta is perturbed by ``perturb_std``
(PBT exploit and explore, :mod:`lopt.meta.population`). ``teacher="adam:LR"`` runs the same
population loop with Adam as every member's outer optimizer: the baseline at equal compute.

A run directory holds ``config.json`` (the meta-training problem), ``population.json`` (these
settings), ``metrics.jsonl`` (every member's meta-loss per outer step), ``eval.jsonl`` (each
generation's scores, teachers and replacements), ``checkpoints/`` (one per generation),
``theta.safetensors`` (the best member), ``population/member_NN.safetensors`` and
``population.png``. It is never overwritten, and ``resume`` continues the same trajectory.

Example:
    >>> # cfg = lopt.meta.load_config("canonical", ["lopt.name=learnable_adam"])
    >>> # SelfTrainer(cfg, PopulationSettings(size=4, generations=8), "runs/self").run()
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import checkpoint
from lopt.learned.serialization import save_theta
from lopt.meta.bucket_gradients import outer_update
from lopt.meta.checkpoints import CheckpointManager
from lopt.meta.config import MetaTrainConfig, OuterSection
from lopt.meta.metrics_log import MetricsLog, read_metrics
from lopt.meta.population import (
    TEACHER_MODES,
    apply_replacements,
    choose_teachers,
    perturb,
    replacements,
)
from lopt.meta.run_directory import open_run
from lopt.meta.trainer import INIT_STREAM, MetaTrainer
from lopt.plotting import smooth

__all__ = ["PopulationSettings", "SelfTrainer", "plot_population"]

SETTINGS_FILE = "population.json"
PERTURB_STREAM = 3_000_017  # fold_in offset of the perturbation keys (disjoint from steps and evaluation)


@dataclasses.dataclass(frozen=True)
class PopulationSettings:
    """The population loop's settings (saved as ``population.json``; fixed for a run's lifetime).

    Attributes:
        size: number of members (>= 2).
        generations: number of generations (each ends with evaluation and selection).
        generation_steps: outer steps of every member per generation.
        teacher: ``"best"``, ``"self"``, ``"random"`` (learned outer optimizers taken from the
            population) or ``"adam:LR"`` (Adam at learning rate LR: the hand-designed baseline).
        replace: members replaced by copies of the best after each generation (<= size // 2).
        init_std: Gaussian noise added to every theta leaf at initialisation.
        perturb_std: Gaussian noise added to every theta leaf of a fresh copy.
    """

    size: int = 4
    generations: int = 10
    generation_steps: int = 25
    teacher: str = "best"
    replace: int = 1
    init_std: float = 0.5
    perturb_std: float = 0.05

    def __post_init__(self):
        for name in ("size", "generations", "generation_steps", "replace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "replace" else 1):
                raise ValueError(f"population {name}={value!r} must be a {'non-negative' if name == 'replace' else 'positive'} int.")
        if self.size < 2:
            raise ValueError(f"population size={self.size} must be >= 2 (selection needs two members).")
        if self.replace > self.size // 2:
            raise ValueError(f"population replace={self.replace} must be <= size // 2 = {self.size // 2}.")
        for name in ("init_std", "perturb_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"population {name}={value!r} must be a number >= 0.")
        _ = self.adam_learning_rate  # validates the teacher

    @property
    def adam_learning_rate(self) -> float | None:
        """The baseline's learning rate for ``teacher="adam:LR"``; ``None`` for a learned teacher."""
        if self.teacher in TEACHER_MODES:
            return None
        if isinstance(self.teacher, str) and self.teacher.startswith("adam:"):
            try:
                lr = float(self.teacher[5:])
            except ValueError:
                lr = float("nan")
            if lr > 0 and math.isfinite(lr):
                return lr
        raise ValueError(f"population teacher={self.teacher!r} is unknown; use one of {TEACHER_MODES} or "
                         "'adam:LR' with a positive learning rate (e.g. 'adam:1e-3').")

    @property
    def outer_steps(self) -> int:
        """Outer steps of every member over the whole run (the learned teachers' horizon)."""
        return self.generations * self.generation_steps


def _problem_config(config: MetaTrainConfig, settings: PopulationSettings) -> MetaTrainConfig:
    if config.task.mixture:
        raise ValueError("lopt selftrain supports single-family configs; task.mixture is set (mixture "
                         "populations are not implemented yet): use a task.family config such as 'canonical'.")
    if config.outer.optimizer != OuterSection.optimizer or config.outer.learning_rate != OuterSection.learning_rate:
        raise ValueError(f"outer.optimizer={config.outer.optimizer!r}/outer.learning_rate={config.outer.learning_rate} "
                         "are set, but self-training chooses each member's outer optimizer with the population "
                         "teacher setting (e.g. --teacher best or --teacher adam:1e-3); remove those overrides.")
    if config.outer.trainable:
        raise ValueError(f"outer.trainable={config.outer.trainable!r} is set, but population self-training "
                         "initialises and perturbs every leaf of theta; remove the override (it applies to "
                         "`lopt train`).")
    cfg = MetaTrainConfig.from_dict(config.to_dict())
    cfg.trainer.outer_steps = settings.outer_steps
    cfg.trainer.eval_every = settings.generation_steps
    cfg.trainer.checkpoint_every = settings.generation_steps
    cfg.final_eval.enabled = False
    return cfg


class SelfTrainer:
    """Runs population self-training for a meta-training problem into a run directory, resumably.

    Args:
        config: the meta-training problem (task, learned optimizer, estimator, truncation,
            evaluation); its outer-optimizer section must stay at its defaults and its
            ``trainer.outer_steps``/``eval_every``/``checkpoint_every`` are set from ``settings``.
        settings: the population loop.
        out_dir: the run directory (a new run refuses a directory that holds one).
        progress: show a progress bar.
    """

    def __init__(self, config: MetaTrainConfig, settings: PopulationSettings, out_dir: str | os.PathLike, *,
                 progress: bool = True):
        self.settings = settings
        self.config = _problem_config(config, settings)
        self.out_dir = pathlib.Path(out_dir)
        self.progress = progress
        self._trainer = MetaTrainer(self.config, self.out_dir, progress=progress)  # setup and evaluation
        self.notes = self._trainer.notes
        self.lopt = self._trainer.setup.lopt
        estimator = self._trainer.setup.estimator
        clip = self.config.outer.clip_grad_norm

        def outer(teacher_theta):
            rule = (optax.adam(settings.adam_learning_rate) if settings.adam_learning_rate is not None else
                    self.lopt.optimizer(teacher_theta, num_steps=settings.outer_steps))
            chained = optax.chain(optax.clip_by_global_norm(clip), rule) if clip > 0 else rule
            return optax.with_extra_args_support(chained)

        def member_step(theta, outer_state, est_state, teacher_theta, key):
            grad, est_state, metrics = estimator.estimate(theta, est_state, key=key)
            theta, outer_state = outer_update(outer(teacher_theta), theta, outer_state, grad, metrics["meta_loss"])
            return theta, outer_state, est_state, metrics["meta_loss"]

        self._outer = outer
        self._estimator = estimator
        self._member_step = jax.jit(member_step)

    # --- state -------------------------------------------------------------------------------

    def initial_state(self) -> dict:
        """Every member's randomised theta, outer-optimizer state and estimator state (step 0)."""
        base = jax.random.fold_in(self._trainer.root_key, INIT_STREAM)
        members = {"theta": [], "outer_state": [], "estimator_state": []}
        for i in range(self.settings.size):
            init_key, noise_key, est_key = jax.random.split(jax.random.fold_in(base, i), 3)
            theta = perturb(self.lopt.init(init_key), self.settings.init_std, key=noise_key)
            members["theta"].append(theta)
            members["outer_state"].append(self._outer(theta).init(theta))
            members["estimator_state"].append(self._estimator.init(theta, key=est_key))
        return {**members, "scores": jnp.full((self.settings.size,), jnp.inf, jnp.float32)}

    def _score(self, theta, step: int) -> float:
        result = self._trainer.evaluate(theta, step)
        score = result.get("heldout_normalized_loss", result.get("eval_normalized_loss"))
        return float(score) if score is not None and math.isfinite(score) else math.inf

    def _check_settings(self, resume: bool) -> None:
        path = self.out_dir / SETTINGS_FILE
        mine = dataclasses.asdict(self.settings)
        if not resume:
            checkpoint.atomic_write(path, (json.dumps(mine, indent=2) + "\n").encode("utf-8"))
            return
        saved = json.loads(path.read_text()) if path.is_file() else None
        if saved != mine:
            diff = {k: [(saved or {}).get(k), v] for k, v in mine.items() if (saved or {}).get(k) != v}
            raise ValueError(f"cannot resume {str(self.out_dir)!r}: its {SETTINGS_FILE} differs from the given "
                             f"population settings {diff} ([saved, given]); resume with the saved settings "
                             f"(give no population options), or start a new run in another --out.")

    # --- the loop ----------------------------------------------------------------------------

    def run(self, *, resume: bool = False, stop_after_generation: int | None = None) -> dict:
        """Trains every generation (from the latest checkpoint if ``resume``); returns a summary.

        Args:
            resume: continue the run in ``out_dir`` from its latest generation checkpoint.
            stop_after_generation: stop once this many generations are done (simulates a kill).

        Returns:
            ``{"generation", "scores", "best_member", "best_score", "theta", "theta_path", "seconds"}``.
        """
        run_dir = open_run(self.out_dir, self.config, resume=resume)
        try:
            self._check_settings(resume)
            return self._loop(run_dir, resume, stop_after_generation)
        finally:
            run_dir.release()

    def _loop(self, run_dir, resume: bool, stop_after_generation: int | None) -> dict:
        s, cfg = self.settings, self.config
        self.notes.extend(run_dir.notes)
        manager = CheckpointManager(self.out_dir / "checkpoints", keep=cfg.trainer.keep_checkpoints)
        metrics_log = MetricsLog(self.out_dir / "metrics.jsonl")
        eval_log = MetricsLog(self.out_dir / "eval.jsonl")
        state, done = self.initial_state(), 0
        if resume and manager.latest_step() is not None:
            step, state, meta = manager.restore(like=state)
            done = int(meta["generation"])
            metrics_log.truncate_after(step)
            eval_log.truncate_after(step)
        thetas, outer_states, est_states = state["theta"], state["outer_state"], state["estimator_state"]
        scores = np.asarray(state["scores"], dtype=np.float64)
        start = time.perf_counter()
        if done == 0:  # the random initial population's scores pick the first teachers
            scores = np.asarray([self._score(t, 0) for t in thetas])
            eval_log.write(0, {"generation": 0, "scores": scores.tolist(), "best_score": float(scores.min()),
                               "best_member": int(np.argmin(scores)), "seconds": time.perf_counter() - start})
        last = s.generations if stop_after_generation is None else min(s.generations, stop_after_generation)
        from tqdm.auto import tqdm

        bar = tqdm(total=s.outer_steps * s.size, initial=done * s.generation_steps * s.size,
                   unit="member step", disable=not self.progress, desc="self-training")
        for generation in range(done, last):
            teachers = (None if s.adam_learning_rate is not None else
                        choose_teachers(scores, s.teacher, seed=cfg.seed, generation=generation))
            snapshot = list(thetas)
            for offset in range(s.generation_steps):
                step = generation * s.generation_steps + offset
                key = jax.random.fold_in(self._trainer.root_key, step)
                losses = []
                for i in range(s.size):
                    teacher = thetas[i] if teachers is None or s.teacher == "self" else snapshot[teachers[i]]
                    thetas[i], outer_states[i], est_states[i], loss = self._member_step(
                        thetas[i], outer_states[i], est_states[i], teacher, jax.random.fold_in(key, i))
                    losses.append(loss)
                    bar.update(1)
                losses = np.asarray(jax.device_get(losses), dtype=np.float64)
                metrics_log.write(step + 1, {"meta_loss": float(np.nanmean(losses)), "meta_loss_members": losses,
                                             "seconds": time.perf_counter() - start})
            step = (generation + 1) * s.generation_steps
            scores = np.asarray([self._score(t, step) for t in thetas])
            best = int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))
            mapping = replacements(scores, s.replace)
            eval_log.write(step, {"generation": generation + 1, "scores": scores.tolist(),
                                  "best_score": float(scores[best]), "best_member": best,
                                  "teachers": teachers if teachers is not None else s.teacher,
                                  "replaced": {str(t): src for t, src in mapping.items()},
                                  "seconds": time.perf_counter() - start})
            thetas = apply_replacements(thetas, mapping)
            outer_states = apply_replacements(outer_states, mapping)
            est_states = apply_replacements(est_states, mapping)
            noise = jax.random.fold_in(jax.random.fold_in(self._trainer.root_key, PERTURB_STREAM), generation)
            for target, source in mapping.items():
                thetas[target] = perturb(thetas[target], s.perturb_std, key=jax.random.fold_in(noise, target))
                scores[target] = scores[source]
            manager.save(step, {"theta": thetas, "outer_state": outer_states, "estimator_state": est_states,
                                "scores": jnp.asarray(scores, jnp.float32)}, {"generation": generation + 1})
            done = generation + 1
        bar.close()
        return self._finish(thetas, scores, done, time.perf_counter() - start)

    def _finish(self, thetas: list, scores: np.ndarray, generation: int, seconds: float) -> dict:
        """Writes every member's theta, the best as ``theta.safetensors``, and ``population.png``."""
        best = int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))
        extra = {"generation": generation, "config": self.config.name, "run_config": self.config.to_dict(),
                 "population": dataclasses.asdict(self.settings)}
        for i, theta in enumerate(thetas):
            save_theta(self.out_dir / "population" / f"member_{i:02d}.safetensors", self.lopt, theta,
                       extra={**extra, "member": i, "heldout_score": float(scores[i])})
        path = save_theta(self.out_dir / "theta.safetensors", self.lopt, thetas[best],
                          extra={**extra, "member": best, "heldout_score": float(scores[best])})
        window = max(1, self.config.truncation.horizon // self.config.estimator.unroll_length)
        plot_population({f"teacher {self.settings.teacher}": self.out_dir}, self.out_dir / "population.png",
                        smooth_window=window)
        return {"generation": generation, "scores": scores.tolist(), "best_member": best,
                "best_score": float(scores[best]), "theta": thetas[best], "theta_path": str(path), "seconds": seconds}


def plot_population(runs: Mapping[str, str | os.PathLike | tuple[list, list]], path: str | os.PathLike, *,
                    smooth_window: int = 1) -> str:
    """Plots population runs' held-out scores per generation (members as dots, best as a line).

    Args:
        runs: ``{label: run directory}`` (its ``eval.jsonl`` and ``metrics.jsonl`` are read), or
            ``{label: (eval rows, metrics rows)}`` as those files hold them.
        path: the PNG to write.
        smooth_window: trailing mean window of the per-step meta-loss (e.g. outer steps per episode).

    Returns:
        ``path`` as a string.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for k, (label, run) in enumerate(runs.items()):
        color = f"C{k}"
        if isinstance(run, tuple):
            evals, steps = run
        else:
            evals = read_metrics(pathlib.Path(run) / "eval.jsonl")
            steps = read_metrics(pathlib.Path(run) / "metrics.jsonl")
        rows = [r for r in evals if "generation" in r]
        gens = [r["generation"] for r in rows]
        for g, r in zip(gens, rows):
            finite = [x for x in r["scores"] if isinstance(x, (int, float)) and math.isfinite(x)]
            axes[0].scatter([g] * len(finite), finite, color=color, s=8, alpha=0.4)
        axes[0].plot(gens, [r["best_score"] for r in rows], color=color, marker="o", ms=3, label=label)
        axes[1].plot([r["step"] for r in steps], smooth([r["meta_loss"] for r in steps], smooth_window),
                     color=color, alpha=0.8, lw=1, label=label)
    axes[0].set_xlabel("generation")
    axes[0].set_ylabel("held-out normalised loss")
    axes[0].set_title("population: every member (dots), the best (line)")
    axes[1].set_xlabel("outer step (per member)")
    axes[1].set_ylabel("meta-loss (mean over members" + (f", running mean of {smooth_window})" if smooth_window > 1 else ")"))
    axes[1].set_title("training meta-loss")
    for ax in axes:
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
