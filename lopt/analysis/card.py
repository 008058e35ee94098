"""The optimizer card: one readable report of what an optimizer does and how well.

:func:`write_card` trains the optimizer on the card task (the MLP on 8x8 Fashion-MNIST that lopt's
canonical learned optimizer was meta-trained on), compares it with Adam at four learning rates
(cached in ``evaluation.json``), runs every probe of :mod:`lopt.analysis` on the run's trace,
and writes ``card.md`` with one PNG per probe and the findings in words
(:mod:`lopt.analysis.findings`). ``lopt card CHECKPOINT_OR_NAME --out DIR`` is the command.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np
import optax

from lopt.analysis import findings
from lopt.analysis.adaptation import learning_rate_adaptation
from lopt.analysis.clipping import clipping
from lopt.analysis.implicit_regularization import implicit_regularization
from lopt.analysis.meta_gradients import meta_gradient_diagnostics
from lopt.analysis.rest_drift import rest_drift
from lopt.analysis.schedule import learning_rate_schedule
from lopt.analysis.subject import Subject, as_subject
from lopt.analysis.timescales import momentum_timescales
from lopt.analysis.trace import record_trace
from lopt.analysis.update_function import update_function
from lopt.inner.training import train, train_many
from lopt.output_dir import OutputExistsError, claim
from lopt.tasks import build

__all__ = ["CARD_TASK", "META_TASK", "meta_subject_for", "write_card"]

#: The task the card trains on (lopt's canonical meta-training task).
CARD_TASK = {"family": "mlp", "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32], "batch_size": 128}
#: A smaller task for the meta-gradient diagnostics (every unroll length runs for every sample).
META_TASK = {"family": "mlp", "dataset": "digits", "image_size": 8, "hidden_sizes": [8], "batch_size": 32}
ADAM_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
#: What a card writes into its folder (``card.md``, the evaluation, the probes' figures).
CARD_OUTPUTS = ("card.md", "evaluation.json", "update_function.png", "clipping.png", "timescales.png",
                "schedule.png", "adaptation.png", "rest_drift.png", "implicit_regularization.png",
                "meta_gradients.png")


def meta_subject_for(subject: Subject, name: str | None = None) -> Subject | None:
    """The learned optimizer whose theta the meta-gradient probe perturbs.

    The subject itself when it is learned; ``learnable_adam`` at its defaults for Adam (``adam`` or
    ``optax.adam`` at lr 1e-3); otherwise ``None`` (the card says the probe does not apply).
    """
    if subject.is_learned:
        return subject
    if name in ("adam", "optax.adam"):
        import lopt.learned

        return as_subject(lopt.learned.get("learnable_adam"), label="learnable_adam (= Adam lr 1e-3)")
    return None


def _evaluation(subject: Subject, task_config: dict, out: pathlib.Path, *, num_steps: int, seeds: int,
                cache_key: str) -> dict[str, Any]:
    """The subject vs Adam at :data:`ADAM_LEARNING_RATES` on the card task (cached by ``cache_key``)."""
    path = out / "evaluation.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("cache_key") == cache_key:
            return cached
    task = build(task_config)
    key = jax.random.key(1)
    rows = []

    def mean(x):
        x = np.asarray(x, np.float64)
        return float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else float("nan")

    def row(label, curves):
        return {"optimizer": label, "train_loss_last_50": mean(np.asarray(curves.train_loss)[..., -50:]),
                "test_loss": mean(np.asarray(curves.test_loss)[..., -1]),
                "test_accuracy": mean(np.asarray(curves.test_accuracy)[..., -1]),
                "diverged": int(np.sum(np.asarray(curves.diverged)))}

    runs = jax.vmap(lambda k: train(task, subject.optimizer, key=k, num_steps=num_steps))(
        jax.random.split(key, seeds))
    rows.append(row(subject.label, runs))
    adam = train_many(task, optax.adam, {"learning_rate": np.asarray(ADAM_LEARNING_RATES)}, key=key,
                      num_seeds=seeds, num_steps=num_steps)
    for i, lr in enumerate(ADAM_LEARNING_RATES):
        rows.append(row(f"adam lr={lr:g}", jax.tree.map(lambda x, i=i: x[i], adam)))
    result = {"cache_key": cache_key, "task": task_config, "num_steps": num_steps, "seeds": seeds, "rows": rows}
    path.write_text(json.dumps(result, indent=1))
    return result


def _evaluation_table(evaluation: dict[str, Any]) -> list[str]:
    lines = ["| optimizer | train loss (last 50) | test loss | test accuracy | diverged seeds |", "|---|---|---|---|---|"]
    for r in evaluation["rows"]:
        lines.append(f"| {r['optimizer']} | {r['train_loss_last_50']:.4f} | {r['test_loss']:.4f} | "
                     f"{r['test_accuracy']:.4f} | {r['diverged']} |")
    best = min(evaluation["rows"][1:], key=lambda r: r["train_loss_last_50"])
    mine = evaluation["rows"][0]
    verdict = "beats" if mine["train_loss_last_50"] < best["train_loss_last_50"] else "does not beat"
    lines += ["", (f"On training loss, {mine['optimizer']} {verdict} the best Adam of the grid ({best['optimizer']}: "
              f"{best['train_loss_last_50']:.4f} vs {mine['train_loss_last_50']:.4f}).")]
    return lines


def _external_evaluation(source: str | None, eval_dir: str | None) -> list[str]:
    """A ``lopt eval`` summary (``eval_dir``), or the comparison saved next to a theta file."""
    lines = []
    if eval_dir:
        from lopt.evaluate import load, summarize

        summary = summarize(load(eval_dir))
        lines += [f"From `lopt eval` results in `{eval_dir}` (suite {summary.suite.name}):", "",
                  "| optimizer | baseline | win fraction | median normalised test loss (opt / baseline) |",
                  "|---|---|---|---|"]
        for c in summary.comparisons:
            lines.append(f"| {c.candidate} | {c.baseline} | {c.win_fraction:.2f} | "
                         f"{c.median_normalized_candidate:.3f} / {c.median_normalized_baseline:.3f} |")
        lines.append("")
    if source and os.path.isfile(source):
        comparison = pathlib.Path(source).with_name("comparison.json")
        if comparison.is_file():
            data = json.loads(comparison.read_text())
            lines += [(f"From the checkpoint's own final evaluation (`{comparison.name}`, {data.get('num_seeds')} "
                      f"seeds, {data.get('num_steps')} steps on its meta-training task):"), "",
                      "| optimizer | train loss (last 50) | test loss | test accuracy |", "|---|---|---|---|"]
            for r in data.get("rows", []):
                lines.append(f"| {r['optimizer']} | {r['mean_last_train_loss']:.4f} | {r['final_test_loss']:.4f} | "
                             f"{r['final_test_accuracy']:.4f} |")
            lines.append("")
    return lines


def write_card(optimizer: Any, out: str | os.PathLike, *, theta: Any = None, label: str | None = None,
               num_steps: int = 1000, seeds: int = 2, eval_dir: str | None = None, notes: str | None = None,
               task_config: dict | None = None, quick: bool = False, overwrite: bool = False) -> pathlib.Path:
    """Writes ``card.md`` and its figures for ``optimizer`` into ``out``.

    Args:
        optimizer: anything :func:`~lopt.analysis.as_subject` takes (a theta file, ``lopt train``
            directory, a name such as ``adam``, an optax transformation, a learned optimizer).
        out: output directory (created). A folder that holds the card of the same optimizer and
            settings is refreshed (its evaluation is reused); one that holds another card is refused.
        theta: meta-parameters, with a learned optimizer object.
        label: name in the card (default from the input).
        num_steps: length of the traced run and of the evaluation runs.
        seeds: seeds per evaluation run.
        eval_dir: optional ``lopt eval`` results directory to summarise as well.
        notes: optional markdown (a reading of the findings by a person) placed after them.
        task_config: the task to trace and evaluate on (default :data:`CARD_TASK`).
        quick: tiny settings (200 steps, short meta-gradient unrolls) for smoke tests.
        overwrite: when ``out`` holds another card, move it into ``out/previous-<time>/`` instead
            of refusing (nothing is deleted).

    Returns:
        The path of ``card.md``.

    Raises:
        OutputExistsError: ``out`` holds the card of another optimizer or other settings and
            ``overwrite`` is off.
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = os.fspath(optimizer) if isinstance(optimizer, (str, os.PathLike)) else None
    subject = as_subject(optimizer, theta=theta, label=label, num_steps=num_steps)
    if quick:
        num_steps, seeds = 200, 1
    task_config = dict(CARD_TASK if task_config is None else task_config)
    digest = json.dumps({"label": subject.label, "task": task_config, "steps": num_steps, "seeds": seeds, "source": source,
                         "theta": None if subject.theta is None else [float(np.sum(np.asarray(x, np.float64)))
                                                                      for x in jax.tree.leaves(subject.theta)]})
    _claim_card_folder(out, digest, overwrite)
    started = time.perf_counter()
    task = build(task_config)
    trace = record_trace(subject, task, key=jax.random.key(0), num_steps=num_steps, num_snapshots=20)
    probes = {
        "update_function": update_function(trace),
        "clipping": clipping(trace),
        "timescales": momentum_timescales(trace),
        "schedule": learning_rate_schedule(trace),
        "adaptation": learning_rate_adaptation(trace),
        "rest_drift": rest_drift(trace),
    }
    analysis_seconds = time.perf_counter() - started
    ir = implicit_regularization({subject.label: subject, "adam lr=0.05": optax.adam(0.05),
                                  "sgd lr=0.1": optax.sgd(0.1)}, num_steps=3000)
    meta_subject = meta_subject_for(subject, source)
    meta = None
    if meta_subject is not None:
        lengths = (5, 10, 20) if quick else (10, 20, 40, 80)
        meta = meta_gradient_diagnostics(meta_subject, build(META_TASK), key=jax.random.key(2), unroll_lengths=lengths,
                                         num_samples=4 if quick else 8)
    figures = {name: result.plot(out / f"{name}.png") for name, result in probes.items()}
    figures["implicit_regularization"] = ir.plot(out / "implicit_regularization.png")
    if meta is not None:
        figures["meta_gradients"] = meta.plot(out / "meta_gradients.png")
    evaluation = _evaluation(subject, task_config, out, num_steps=num_steps, seeds=seeds, cache_key=digest)
    text = _markdown(subject, source, task_config, trace, probes, ir, meta, meta_subject, evaluation,
                     _external_evaluation(source, eval_dir), notes, analysis_seconds)
    path = out / "card.md"
    path.write_text(text)
    return path


def _claim_card_folder(out: pathlib.Path, digest: str, overwrite: bool) -> None:
    """Refuses (or, with ``overwrite``, moves aside) a card in ``out`` that is not this one.

    The card of the same optimizer and settings (equal ``digest``, kept in ``evaluation.json``) is
    this card again: refreshing it loses nothing, and its evaluation is reused.
    """
    evaluation = out / "evaluation.json"
    if not (out / "card.md").exists() and not evaluation.exists():
        return
    try:
        same = json.loads(evaluation.read_text()).get("cache_key") == digest
    except (OSError, ValueError, AttributeError):  # absent or unreadable: not known to be this card
        same = False
    if same:
        return
    if not overwrite:
        raise OutputExistsError(f"{out} already holds the card of another optimizer or other settings; pass "
                                "--overwrite (write_card(..., overwrite=True)) to move it into a previous-* "
                                "sub-folder, or choose another --out.")
    claim(out, CARD_OUTPUTS, overwrite=True, what="an optimizer card")


def _markdown(subject, source, task_config, trace, probes, ir, meta, meta_subject, evaluation, external, notes,
              analysis_seconds) -> str:
    what = (f"learned optimizer `{subject.lopt.name}` with config `{json.dumps(subject.lopt.config())}`"
            if subject.is_learned else "a hand-designed optax optimizer")
    lines = [f"# Optimizer card: {subject.label}", "",
             f"- what: {what}" + (f", theta from `{source}`" if source and os.path.exists(source) else ""),
             (f"- probed on: `{json.dumps(task_config)}`, one run of {trace.num_steps} steps "
             f"(20 snapshots); final training loss {np.mean(trace.train_loss[-50:]):.4f} (mean of the last 50)"),
             f"- the six trace probes took {analysis_seconds:.1f} s (including compilation)",
             "- reproduce: `lopt card " + (source or subject.label) + " --out DIR`"
             + ("" if task_config == CARD_TASK else f" `--task '{json.dumps(task_config)}'`"), "",
             "## What it does, in words", "",
             "- " + findings.describe_timescales(probes["timescales"]),
             "- " + findings.describe_clipping(probes["clipping"]),
             "- " + findings.describe_schedule(probes["schedule"]),
             "- " + findings.describe_adaptation(probes["adaptation"]),
             "- " + findings.describe_update_function(probes["update_function"]),
             "- " + findings.describe_rest_drift(probes["rest_drift"]),
             "- " + findings.describe_implicit_regularization(ir, subject.label)]
    if meta is not None:
        lines.append("- " + findings.describe_meta_gradients(meta) + f" (measured with {meta_subject.label} on "
                     f"`{json.dumps(META_TASK)}`)")
    if notes:
        lines += ["", "## Reading", "", notes.strip()]
    lines += ["", "## Evaluation", "", (f"{evaluation['seeds']} seeds, {evaluation['num_steps']} steps on the card task "
              "(cached in `evaluation.json`):"), "", *_evaluation_table(evaluation), "", *external]
    sections = [
        ("Update function", "update_function", ("The update of one weight as its gradient (left) and each of its "
         "state inputs vary, the rest of the state held at snapshots of the run (colours: early to late).")),
        ("Gradient clipping", "clipping", ("|update(g) - update(0)| against |g| for one coordinate per tensor; "
         "a flat tail is clipping, the dashed line its threshold (linear asymptote meets the flat one).")),
        ("Momentum timescales", "timescales", ("Eigenvalues of the per-coordinate state Jacobian (unit circle: "
         "no decay), their timescales 1/(1-|λ|), and the update's response to one gradient impulse.")),
        ("Learning-rate schedule", "schedule", ("Effective step size -(u(g) - u(0))/g as the step counter sweeps "
         "the horizon with the state held (solid), and along the run (dashed).")),
        ("Learning-rate adaptation", "adaptation", ("Effective step size relative to its value when one input "
         "is scaled: the loss, the whole gradient, or one accumulator; the exponent is the log-log slope.")),
        ("Update at rest", "rest_drift", ("RMS of the update with a zero gradient and every per-coordinate "
         "state slot at zero, over the RMS of the step taken, per tensor and snapshot (Adam: exactly 0).")),
        ("Implicit regularisation", "implicit_regularization", ("Trajectories on f(x, y) = (x - y)²/2 from the "
         "same starts; SGD and Adam conserve x + y and end at the closest minimiser.")),
    ]
    if meta is not None:
        sections.append(("Meta-gradient diagnostics", "meta_gradients", ("Variance of meta-gradient estimators as "
                         "the unroll grows, the meta-loss on a random 1-D slice of theta, and the inner-state "
                         "transition Jacobian's spectral radius and product growth.")))
    else:
        lines += ["## Meta-gradient diagnostics", "", "Not applicable: this optimizer has no meta-parameters.", ""]
    for title, name, caption in sections:
        lines += [f"## {title}", "", caption, "", f"![{title}]({name}.png)", ""]
    return "\n".join(lines)
