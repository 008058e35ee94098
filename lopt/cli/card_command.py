"""``lopt card``: write an optimizer card (markdown + figures) for a checkpoint or an optimizer name.

Examples::

    lopt card docs/examples/canonical_gpu/theta.safetensors --out docs/cards/canonical_gpu
    lopt card adam --out docs/cards/adam
    lopt card runs/train-quickstart-X --out runs/card-X --eval runs/eval-iid-X
"""

from __future__ import annotations

import argparse
import json
import pathlib


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "card", help="write an optimizer card: evaluation and every analysis probe, with figures",
        description="Train the optimizer on the card task, compare it with Adam, run the analysis probes "
                    "(update function, clipping, momentum timescales, schedule, adaptation, implicit "
                    "regularisation, meta-gradient diagnostics) and write card.md with its figures.")
    parser.add_argument("optimizer", metavar="CHECKPOINT_OR_NAME",
                        help="a theta file or `lopt train` directory, a learned architecture (at its initial "
                             "theta), a baseline name (adam) or optax.<alias>")
    parser.add_argument("--out", required=True, help="output directory (card.md, PNGs, evaluation.json)")
    parser.add_argument("--label", help="name of the optimizer in the card")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the traced run and evaluation (default 1000)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the evaluation runs (default 2)")
    parser.add_argument("--eval", dest="eval_dir", help="also summarise these `lopt eval` results")
    parser.add_argument("--notes", help="a markdown file with a person's reading of the findings, included as is")
    parser.add_argument("--task", help="task config as JSON (default: the MLP on 8x8 Fashion-MNIST, lopt's canonical "
                        "meta-training task)")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for smoke tests")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds another optimizer's card: move it into a previous-* sub-folder "
                             "(without this the command refuses; the same card is refreshed either way)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lopt.analysis.card import write_card

    if args.steps < 50:
        raise ValueError(f"--steps {args.steps}: give at least 50 steps (the card averages the last 50).")
    notes = None
    if args.notes:
        path = pathlib.Path(args.notes)
        if not path.is_file():
            raise FileNotFoundError(f"--notes {args.notes!r} does not exist; give a markdown file.")
        notes = path.read_text()
    task = None
    if args.task:
        try:
            task = json.loads(args.task)
        except json.JSONDecodeError as err:
            raise ValueError(f"--task {args.task!r} is not JSON ({err}); give e.g. "
                             "'{\"family\": \"quadratic\", \"dim\": 4}'.") from None
        if not isinstance(task, dict):
            raise ValueError(f"--task must be a JSON object (a task config), got {args.task!r}.")
    card = write_card(args.optimizer, args.out, label=args.label, num_steps=args.steps, seeds=args.seeds,
                      eval_dir=args.eval_dir, notes=notes, task_config=task, quick=args.quick,
                      overwrite=args.overwrite)
    print(f"card: {card}")
    return 0
