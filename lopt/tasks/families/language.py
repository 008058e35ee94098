"""RNN text families: character / word language models and text classifiers (TaskSet-style).

Three families share one model body: token embedding, one recurrent layer (vanilla, GRU or
LSTM; see :mod:`lopt.tasks.families.rnn`) run over time with ``lax.scan``, and a linear head.

* ``char_rnn_lm`` / ``word_rnn_lm``: the head predicts the next token at every position;
  the loss is the mean next-token cross-entropy, ``accuracy`` the per-token accuracy.
* ``rnn_text_classification``: the head reads the hidden state at a document's last real
  token (``pooling="last"``) or the mean over its real tokens (``"mean"``) and predicts its
  class (fortune category or WordNet lexicographer file).

Data come from :func:`lopt.tasks.datasets.load_text` (offline corpora ``"fortunes"``,
``"wordnet"``, or ``"text:<path>"``). The config key is ``corpus`` (not ``dataset``: these are
not image datasets). The only dynamic setting is ``init_scale``; everything else is static.

Example:
    >>> import jax, lopt
    >>> task = lopt.tasks.build({"family": "char_rnn_lm", "seq_len": 16, "batch_size": 4})
    >>> params = task.init(jax.random.key(0))
    >>> metrics = task.metrics(params, task.sample_batch(jax.random.key(1)))
    >>> sorted(metrics), bool(metrics["loss"] > 0)
    (['accuracy', 'loss'], True)
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.tasks import datasets
from lopt.tasks.base import Task, TaskSpec
from lopt.tasks.classification import check_int
from lopt.tasks.datasets.text import LEVELS, PAD
from lopt.tasks.families import rnn
from lopt.tasks.family import TaskFamily
from lopt.tasks.sampling import choice, log_uniform, log_uniform_int

__all__ = [
    "CharRNNLMFamily",
    "RNNLanguageModelTask",
    "RNNSpec",
    "RNNTextClassificationFamily",
    "RNNTextClassificationTask",
    "TextClassifierSpec",
    "WordRNNLMFamily",
]

#: Corpora the families sample from (any registered corpus or ``"text:<path>"`` builds).
CORPORA = ("fortunes", "wordnet")
#: Batch sizes the families sample from.
BATCH_SIZES = (16, 32, 64)
#: Word vocabulary sizes (units kept besides ``<pad>``, ``<unk>``, ``<eos>``) sampled from.
WORD_VOCAB_SIZES = (500, 1000, 2000, 5000)
POOLINGS = ("last", "mean")
#: ``init_scale`` values a task mixture varies inside one compiled structure.
INIT_SCALES = (0.5, 0.71, 1.0, 1.41, 2.0)


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Mean softmax cross-entropy and accuracy of integer ``labels`` (any leading shape)."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = (jnp.argmax(logits, axis=-1) == labels).mean()
    return {"loss": loss, "accuracy": accuracy}


@dataclasses.dataclass(frozen=True)
class RNNSpec(TaskSpec):
    """Static structure of an RNN text task.

    Attributes:
        corpus, level: the text and its tokenisation (``"char"`` or ``"word"``).
        seq_len: tokens per example.
        vocab_size: the model's vocabulary (special tokens included).
        embed_size, hidden_size: embedding and recurrent widths.
        cell: ``"vanilla"``, ``"gru"`` or ``"lstm"``.
    """

    corpus: str = "fortunes"
    level: str = "char"
    seq_len: int = 32
    vocab_size: int = 0
    embed_size: int = 32
    hidden_size: int = 64
    cell: str = "lstm"


@dataclasses.dataclass(frozen=True)
class TextClassifierSpec(RNNSpec):
    """An :class:`RNNSpec` plus the number of classes and how hidden states are pooled."""

    num_classes: int = 0
    pooling: str = "last"


class _RNNTask(Task):
    """Embedding -> RNN -> linear head. Settings (dynamic): ``init_scale`` (weights of RNN and head)."""

    has_accuracy = True

    @property
    @abc.abstractmethod
    def head_size(self) -> int:
        """Outputs of the linear head."""

    def init(self, key):
        spec, scale = self.spec, self.settings["init_scale"]
        k_embed, k_rnn, k_head = jax.random.split(key, 3)
        head = jax.random.normal(k_head, (spec.hidden_size, self.head_size)) / jnp.sqrt(spec.hidden_size)
        return {"embed": jax.random.normal(k_embed, (spec.vocab_size, spec.embed_size)),
                "rnn": rnn.init(k_rnn, spec.cell, spec.embed_size, spec.hidden_size, scale=scale),
                "head": {"w": head * scale, "b": jnp.zeros((self.head_size,))}}

    def hidden_states(self, params, tokens: jax.Array) -> jax.Array:
        """``[B, T, H]`` hidden states for int tokens ``[B, T]``."""
        hs, _ = rnn.run(self.spec.cell, params["rnn"], params["embed"][tokens])
        return hs

    @abc.abstractmethod
    def logits(self, params, tokens: jax.Array) -> jax.Array:
        """Logits of the head for int tokens ``[B, T]``."""

    def loss(self, params, batch):
        return self.metrics(params, batch)["loss"]

    def metrics(self, params, batch):
        return classification_metrics(self.logits(params, batch["x"]), batch["y"])


class RNNLanguageModelTask(_RNNTask):
    """Next-token prediction at every position (batches: ``x``, ``y`` int32 ``[B, T]``)."""

    @property
    def head_size(self):
        return self.spec.vocab_size

    def logits(self, params, tokens):
        return self.hidden_states(params, tokens) @ params["head"]["w"] + params["head"]["b"]


class RNNTextClassificationTask(_RNNTask):
    """Class of a document from its first ``T`` tokens (``x`` ``[B, T]`` padded with 0, ``y`` ``[B]``)."""

    @property
    def head_size(self):
        return self.spec.num_classes

    def logits(self, params, tokens):
        hs = self.hidden_states(params, tokens)
        real = tokens != PAD
        length = jnp.maximum(real.sum(axis=1), 1)
        if self.spec.pooling == "last":
            pooled = jnp.take_along_axis(hs, (length - 1)[:, None, None], axis=1)[:, 0]
        else:
            pooled = (hs * real[..., None]).sum(axis=1) / length[:, None]
        return pooled @ params["head"]["w"] + params["head"]["b"]


def _check_choice(family: str, key: str, value: Any, options) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{family}: {key}={value!r} is not supported; use one of {tuple(options)}.")


def _check_config(family: str, cfg: Mapping[str, Any]) -> None:
    """Validation shared by the three families (no corpus is loaded)."""
    corpus = cfg["corpus"]
    known = isinstance(corpus, str) and (corpus in datasets.text_corpora() or corpus.startswith("text:"))
    if not known:
        raise ValueError(f"{family}: corpus={corpus!r} is unknown; use one of {datasets.text_corpora()} "
                         "or 'text:<file or directory>'.")
    _check_choice(family, "cell", cfg["cell"], rnn.CELLS)
    for key in ("embed_size", "hidden_size", "batch_size"):
        check_int(family, key, cfg[key])
    check_int(family, "seq_len", cfg["seq_len"], minimum=2)
    vocab = cfg["vocab_size"]
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1):
        raise ValueError(f"{family}: vocab_size={vocab!r} must be a positive integer (units kept besides "
                         "<pad>, <unk>, <eos>) or null for every unit seen in training.")
    scale = cfg["init_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{family}: init_scale={scale!r} must be a number > 0.")


def _sample_model(rng, embed_range: tuple[int, int]) -> dict[str, Any]:
    return {"cell": choice(rng, tuple(rnn.CELLS)),
            "embed_size": log_uniform_int(rng, *embed_range),
            "hidden_size": log_uniform_int(rng, 16, 256),
            "batch_size": choice(rng, BATCH_SIZES),
            "init_scale": round(log_uniform(rng, 0.5, 2.0), 4)}


_MODEL_RANGES = {
    "cell": f"uniform over {tuple(rnn.CELLS)}",
    "hidden_size": "log-uniform integer in [16, 256]",
    "batch_size": f"uniform over {BATCH_SIZES}",
    "init_scale": "log-uniform in [0.5, 2] (dynamic: scales the RNN and head weights)",
    "corpus": f"uniform over {CORPORA}",
}


def _settings(cfg) -> dict[str, jax.Array]:
    return {"init_scale": jnp.float32(cfg["init_scale"])}


class _TextFamily(TaskFamily):
    """Structure hooks shared by the text families (read by :mod:`lopt.tasks.mixture`)."""

    def dynamic_keys(self) -> tuple[str, ...]:
        """Config keys that only change dynamic settings (configs differing only here stack)."""
        return ("init_scale",)

    def static_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a complete config that decides the structure (equal iff the tasks stack).

        Example:
            >>> import lopt
            >>> family = lopt.tasks.get("char_rnn_lm")
            >>> "init_scale" in family.static_config(family.default_config())
            False
        """
        return {k: v for k, v in dict(cfg).items() if k not in self.dynamic_keys()}

    def variation_grid(self, cfg: Mapping[str, Any]) -> dict[str, tuple]:
        """Values of the dynamic keys that a mixture varies inside one compiled structure."""
        return {"init_scale": INIT_SCALES}


class _LanguageModelFamily(_TextFamily):
    level: str = "char"

    def validate(self, cfg):
        _check_config(self.name, cfg)

    def make_task(self, cfg):
        data = datasets.load_text(cfg["corpus"], level=self.level, seq_len=cfg["seq_len"],
                                  target="next_token", vocab_size=cfg["vocab_size"])
        spec = RNNSpec(family=self.name, batch_size=cfg["batch_size"], corpus=cfg["corpus"], level=self.level,
                       seq_len=cfg["seq_len"], vocab_size=data.info.num_classes, embed_size=cfg["embed_size"],
                       hidden_size=cfg["hidden_size"], cell=cfg["cell"])
        return RNNLanguageModelTask(spec, data, _settings(cfg))


class CharRNNLMFamily(_LanguageModelFamily):
    """Character-level RNN language models (TaskSet's ``char_rnn_language_model_family``).

    Example:
        >>> import lopt
        >>> lopt.tasks.get("char_rnn_lm").sample(0)["cell"] in ("vanilla", "gru", "lstm")
        True
    """

    name = "char_rnn_lm"
    description = "Character-level RNN language model (vanilla/GRU/LSTM) on fortunes or WordNet glosses."
    level = "char"

    def defaults(self):
        return {"corpus": "fortunes", "cell": "lstm", "embed_size": 32, "hidden_size": 64, "seq_len": 32,
                "batch_size": 32, "vocab_size": None, "init_scale": 1.0}

    def sampling_ranges(self):
        return {**_MODEL_RANGES, "embed_size": "log-uniform integer in [8, 64]",
                "seq_len": "uniform over (16, 32, 64)",
                "vocab_size": "null (every character seen in training: 90 ids for fortunes-min, "
                              "91 for wordnet, specials included)"}

    def sample_config(self, rng):
        return {"corpus": choice(rng, CORPORA), **_sample_model(rng, (8, 64)),
                "seq_len": choice(rng, (16, 32, 64))}


class WordRNNLMFamily(_LanguageModelFamily):
    """Word-level RNN language models over the top-``vocab_size`` words plus ``<unk>``.

    Example:
        >>> import lopt
        >>> lopt.tasks.get("word_rnn_lm").sample(0)["vocab_size"] in (500, 1000, 2000, 5000)
        True
    """

    name = "word_rnn_lm"
    description = "Word-level RNN language model (top-K words + <unk>) on WordNet glosses or fortunes."
    level = "word"

    def defaults(self):
        return {"corpus": "wordnet", "cell": "lstm", "embed_size": 32, "hidden_size": 64, "seq_len": 16,
                "batch_size": 32, "vocab_size": 1000, "init_scale": 1.0}

    def sampling_ranges(self):
        return {**_MODEL_RANGES, "embed_size": "log-uniform integer in [16, 128]",
                "seq_len": "uniform over (16, 32)",
                "vocab_size": f"uniform over {WORD_VOCAB_SIZES} (log-spaced; capped by the words seen)"}

    def sample_config(self, rng):
        return {"corpus": choice(rng, CORPORA), **_sample_model(rng, (16, 128)),
                "seq_len": choice(rng, (16, 32)), "vocab_size": choice(rng, WORD_VOCAB_SIZES)}


class RNNTextClassificationFamily(_TextFamily):
    """RNN classifiers of a document's category from its first ``seq_len`` chars or words.

    Classes: the fortune category file (3 with ``fortunes-min``, 43 with ``fortunes`` too)
    or the WordNet lexicographer file of a gloss (45).

    Example:
        >>> import lopt
        >>> cfg = lopt.tasks.get("rnn_text_classification").sample(3)
        >>> cfg["pooling"] in ("last", "mean") and cfg["level"] in ("char", "word")
        True
    """

    name = "rnn_text_classification"
    description = "RNN text classifier: fortune category or WordNet lexicographer file from the first tokens."

    def defaults(self):
        return {"corpus": "wordnet", "level": "word", "cell": "gru", "embed_size": 32, "hidden_size": 64,
                "seq_len": 16, "batch_size": 64, "vocab_size": 1000, "pooling": "last", "init_scale": 1.0}

    def sampling_ranges(self):
        return {**_MODEL_RANGES, "embed_size": "log-uniform integer in [8, 128]",
                "level": f"uniform over {LEVELS}",
                "seq_len": "char: uniform over (32, 64); word: uniform over (8, 16, 32)",
                "vocab_size": f"char: null (all characters); word: uniform over {WORD_VOCAB_SIZES}",
                "pooling": f"uniform over {POOLINGS} (hidden state at the last real token, or mean)"}

    def sample_config(self, rng):
        level = choice(rng, LEVELS)
        char = level == "char"
        return {"corpus": choice(rng, CORPORA), "level": level, **_sample_model(rng, (8, 128)),
                "seq_len": choice(rng, (32, 64) if char else (8, 16, 32)),
                "vocab_size": None if char else choice(rng, WORD_VOCAB_SIZES),
                "pooling": choice(rng, POOLINGS)}

    def validate(self, cfg):
        _check_config(self.name, cfg)
        _check_choice(self.name, "level", cfg["level"], LEVELS)
        _check_choice(self.name, "pooling", cfg["pooling"], POOLINGS)

    def make_task(self, cfg):
        data = datasets.load_text(cfg["corpus"], level=cfg["level"], seq_len=cfg["seq_len"], target="class",
                                  vocab_size=cfg["vocab_size"])
        vocab = datasets.vocabulary(cfg["corpus"], cfg["level"], cfg["vocab_size"])
        spec = TextClassifierSpec(
            family=self.name, batch_size=cfg["batch_size"], corpus=cfg["corpus"], level=cfg["level"],
            seq_len=cfg["seq_len"], vocab_size=vocab.size, embed_size=cfg["embed_size"],
            hidden_size=cfg["hidden_size"], cell=cfg["cell"], num_classes=data.info.num_classes,
            pooling=cfg["pooling"])
        return RNNTextClassificationTask(spec, data, _settings(cfg))
