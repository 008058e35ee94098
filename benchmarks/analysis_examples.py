"""The analysis probes on known answers and on lopt's canonical learned optimizer; draws docs figures.

Measures and prints, and saves to ``benchmarks/results/analysis_examples_<device>.json``:

* known answers on a 4-d quadratic: SGD momentum 0.9 and Adam timescales (10; 10 and 1,000
  steps), the threshold of ``optax.clip(1.0)``, the largest error of a recovered cosine schedule,
  Adam's step-size exponent in its second moment (-1/2);
* the wall time of the five trace probes (update function, clipping, timescales, schedule,
  adaptation) on a 1,000-step trace of the canonical learned optimizer (compilation included),
  and of recording the trace;
* implicit regularisation (canonical learned optimizer, Adam, SGD, AdamW) on ``(x - y)^2 / 2``;
* meta-gradient estimator variance vs unroll length on the chaotic double well.

Figures go to ``docs/examples/analysis/``. Usage::

    python benchmarks/analysis_examples.py
"""

from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import common

import lopt
from lopt import analysis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = os.path.join(ROOT, "docs", "examples", "analysis")
CANONICAL = os.path.join(ROOT, "docs", "examples", "canonical_gpu", "theta.safetensors")


def trace(optimizer, task, num_steps=200, **kwargs):
    return analysis.record_trace(analysis.as_subject(optimizer, **kwargs), task, key=jax.random.key(0),
                                 num_steps=num_steps, num_snapshots=5)


def known_answers(out: dict) -> None:
    quad = lopt.tasks.build({"family": "quadratic", "dim": 4})
    sgdm = analysis.momentum_timescales(trace(optax.sgd(0.05, momentum=0.9), quad, label="sgd momentum 0.9"),
                                        impulse_steps=100)
    sgdm.plot(os.path.join(FIGURES, "timescales_sgd_momentum.png"))
    adam = analysis.momentum_timescales(trace(optax.adam(0.01), quad, label="adam"), impulse_steps=100)
    adam.plot(os.path.join(FIGURES, "timescales_adam.png"))
    mlp = lopt.tasks.build({"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [8],
                            "batch_size": 32})
    clip = analysis.clipping(trace(optax.chain(optax.clip(1.0), optax.sgd(0.1)), mlp, label="clip(1.0) + sgd"))
    clip.plot(os.path.join(FIGURES, "clipping_clip1.png"))
    adam_clip = analysis.clipping(trace(optax.adam(0.01), mlp, label="adam"))
    adam_clip.plot(os.path.join(FIGURES, "clipping_adam.png"))
    cosine = optax.cosine_decay_schedule(0.1, 200)
    sched = analysis.learning_rate_schedule(trace(optax.sgd(cosine, momentum=0.9), quad, label="sgd + cosine decay"))
    sched.plot(os.path.join(FIGURES, "schedule_cosine.png"))
    adapt = analysis.learning_rate_adaptation(trace(optax.adam(0.01), quad, label="adam"))
    adapt.plot(os.path.join(FIGURES, "adaptation_adam.png"))
    nu = adapt.slot_responses[adapt.slot_names.index("0/nu")]
    out["known_answers"] = {
        "sgd_momentum_0.9_timescale": sgdm.dominant().tolist(),
        "sgd_momentum_0.9_impulse_window": float(np.median(sgdm.effective_timescale)),
        "adam_timescales": adam.dominant().tolist(),
        "clip_1.0_thresholds": dict(zip(clip.tensors, clip.thresholds.tolist())),
        "adam_thresholds_over_rms": dict(zip(adam_clip.tensors, (adam_clip.thresholds / adam_clip.gradient_rms).tolist())),
        "cosine_schedule_max_abs_error": float(np.max(np.abs(sched.step_size - np.array([cosine(t) for t in sched.steps])))),
        "adam_nu_exponent": adapt.exponent(nu, above=1.0),
    }


def canonical(out: dict) -> None:
    theta, lopt_ = lopt.learned.load_theta(CANONICAL)
    subject = analysis.as_subject(lopt_, theta=theta, label="canonical mlp")
    task = lopt.tasks.build(analysis.CARD_TASK)
    start = time.perf_counter()
    tr = analysis.record_trace(subject, task, key=jax.random.key(0), num_steps=1000, num_snapshots=20)
    recorded = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    analysis.update_function(tr)
    analysis.clipping(tr)
    analysis.momentum_timescales(tr)
    analysis.learning_rate_schedule(tr)
    analysis.learning_rate_adaptation(tr)
    probes, probes_cpu = time.perf_counter() - start, time.process_time() - cpu
    out["canonical_1000_step_trace"] = {"record_s": recorded, "five_probes_s": probes, "five_probes_cpu_s": probes_cpu,
                                        "load_average_1min": os.getloadavg()[0]}
    ir = analysis.implicit_regularization({"canonical mlp": subject, "adam lr=0.05": optax.adam(0.05),
                                           "sgd lr=0.1": optax.sgd(0.1),
                                           "adamw lr=0.05 wd=0.1": optax.adamw(0.05, weight_decay=0.1)},
                                          num_steps=300)
    ir.plot(os.path.join(FIGURES, "implicit_regularization.png"))
    out["implicit_regularization_norm_ratio"] = ir.norm_ratio()


def chaos(out: dict) -> None:
    subject = analysis.as_subject(lopt.learned.get("learnable_sgdm", lr=1.45, momentum=0.01),
                                  label="sgd lr=1.45 on the double well")
    diag = analysis.meta_gradient_diagnostics(subject, analysis.DoubleWellTask.make(4), key=jax.random.key(0),
                                              unroll_lengths=(8, 16, 32, 64, 128), num_samples=16)
    diag.plot(os.path.join(FIGURES, "meta_gradients_double_well.png"))
    out["double_well"] = {"unroll_lengths": diag.unroll_lengths.tolist(),
                          "variance": {k: v.tolist() for k, v in diag.variance.items()},
                          "variance_slope": {k: diag.growth_rate(k) for k in diag.variance},
                          "lyapunov_exponent": diag.lyapunov_exponent(),
                          "median_spectral_radius": float(np.median(diag.spectral_radius))}


def main() -> None:
    os.makedirs(FIGURES, exist_ok=True)
    out: dict = {}
    for part in (canonical, known_answers, chaos):
        start = time.perf_counter()
        part(out)
        print(f"{part.__name__}: {time.perf_counter() - start:.1f} s", flush=True)
    for key, value in out.items():
        print(key, value)
    print("saved", common.save("analysis_examples", out))


if __name__ == "__main__":
    main()
