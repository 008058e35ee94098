"""``lopt selftrain``: a population of learned optimizers, from random initialisation, trains itself.

Examples::

    lopt selftrain canonical --set lopt.name=learnable_adam --size 4 --generations 16 --out runs/self
    lopt selftrain canonical --set lopt.name=learnable_adam --teacher adam:1e-3 --out runs/self-adam
    lopt selftrain --out runs/self --resume          # continue after an interruption

The config (a preset, TOML/JSON file or run directory, with ``--set`` overrides) is the
meta-training problem; the population options decide who trains whom (see
:mod:`lopt.meta.selftrain`). An existing run is never overwritten: ``--resume`` continues it
with its saved ``config.json`` and ``population.json``; ``--overwrite`` moves it into a
``previous-<time>/`` sub-folder first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import lopt
from lopt.cli.compilation_cache import enable_compilation_cache
from lopt.meta.run_directory import clear_for_new_run, latest_checkpoint_step, resume_config
from lopt.meta.selftrain import SETTINGS_FILE, PopulationSettings, SelfTrainer
from lopt.output_dir import DirectoryLock, existing_outputs

DEFAULT_CONFIG = "canonical"
POPULATION_OUTPUTS = (SETTINGS_FILE, "population", "population.png")  # besides run_directory.RUN_OUTPUTS
_OPTIONS = {"size": int, "generations": int, "generation_steps": int, "teacher": str, "replace": int,
            "init_std": float, "perturb_std": float}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "selftrain", help="population self-training: learned optimizers train each other",
        description="Meta-train a population of learned optimizers from random initialisation, each outer-trained "
                    "by a learned optimizer from the population, with PBT selection on held-out meta-loss "
                    "(Metz et al. 2021). '--teacher adam:LR' runs the same loop with Adam (the baseline).")
    parser.add_argument("config", nargs="?", default=None,
                        help=f"the meta-training problem: a preset, a TOML/JSON config or a run directory "
                             f"(default {DEFAULT_CONFIG}; with --resume: the run's own config.json)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, repeatable (e.g. --set lopt.name=learnable_adam)")
    defaults = PopulationSettings()
    for name, kind in _OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"population {name} (default {getattr(defaults, name)!r})")
    parser.add_argument("--out", help="output directory (default runs/selftrain-<name>-<time>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out from its latest generation")
    mode.add_argument("--overwrite", action="store_true",
                      help="if --out holds a run, move it into --out/previous-<time>/ and start afresh")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> PopulationSettings:
    given = {name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None}
    if not args.resume:
        return PopulationSettings(**given)
    path = os.path.join(args.out, SETTINGS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot resume {args.out!r}: it holds no {SETTINGS_FILE} (not a selftrain run); "
                                "start a new run with `lopt selftrain --out DIR`.")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    changed = {k: [saved.get(k), v] for k, v in given.items() if saved.get(k) != v}
    if changed:
        raise ValueError(f"cannot resume {args.out!r}: population settings cannot change on resume "
                         f"({changed}, [saved, given]); drop those options or start a new run in another --out.")
    return PopulationSettings(**saved)


def run(args: argparse.Namespace) -> int:
    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out DIR (the directory of the run to continue).")
        config, _ = resume_config(args.out, args.config, args.set)
    else:
        config = lopt.meta.load_config(args.config or DEFAULT_CONFIG, args.set)
    settings = _settings(args)
    out = args.out or os.path.join("runs", f"selftrain-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    enable_compilation_cache()
    with DirectoryLock(out):
        if not args.resume:
            moved = clear_for_new_run(out, overwrite=args.overwrite, config=config)
            if moved is not None:  # the population's own files go with the rest of the old run
                for name in existing_outputs(out, POPULATION_OUTPUTS):
                    os.replace(os.path.join(out, name), os.path.join(moved, name))
                print(f"moved the previous run in {out} to {moved}")
        print(f"self-training '{config.name}': {settings.size} {config.lopt.name} optimizers, teacher "
              f"{settings.teacher}, {settings.generations} generations of {settings.generation_steps} outer steps "
              f"-> {out}")
        trainer = SelfTrainer(config, settings, out, progress=not args.no_progress)
        for note in trainer.notes:
            print(f"note: {note}")
        try:
            result = trainer.run(resume=args.resume)
        except KeyboardInterrupt:
            step = latest_checkpoint_step(out, trainer.config)
            kept = f"the checkpoint of step {step} is kept" if step is not None else "no checkpoint was written yet"
            print(f"\ninterrupted: {kept}; continue with `lopt selftrain --out {out} --resume`.", file=sys.stderr)
            return 130
    print(f"done: {result['generation']} generations in {result['seconds']:.0f}s; best member {result['best_member']} "
          f"(held-out normalised loss {result['best_score']:.4f})")
    print(f"wrote {out}/: theta.safetensors (best member), population/, {SETTINGS_FILE}, config.json, metrics.jsonl, "
          "eval.jsonl, population.png, checkpoints/")
    return 0
