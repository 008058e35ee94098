"""``transformer_lm``: a small pre-LN attention language model on characters (or words).

The model: token embedding plus a learned positional embedding, ``num_layers`` pre-LayerNorm
blocks (``x + attn(LN(x))`` with causal multi-head self-attention, then ``x + mlp(LN(x))``
with a GELU MLP of ``mlp_ratio * d_model`` hidden units), a final LayerNorm and an untied
linear head over the vocabulary. The loss is the mean next-token cross-entropy; ``accuracy``
the per-token accuracy.

Data come from :func:`lopt.tasks.datasets.load_text` exactly as for ``char_rnn_lm`` (the offline
``fortunes`` corpus by default), passed into the task as leaves. The only dynamic setting is
``init_scale`` (multiplies the standard deviation, 0.02, of every weight matrix and embedding),
so tasks that differ only in it stack and share one compiled program.

The family is *not* part of the ``taskset`` meta-training distribution (it is listed in
:data:`lopt.tasks.mixture.NOT_IN_TASKSET`): it is kept unseen for held-out evaluation of
learned optimizers (see :mod:`lopt.pretrained.heldout`).

Example:
    >>> import jax, lopt
    >>> task = lopt.tasks.build({"family": "transformer_lm", "seq_len": 16, "batch_size": 4})
    >>> params = task.init(jax.random.key(0))
    >>> metrics = task.metrics(params, task.sample_batch(jax.random.key(1)))
    >>> sorted(metrics), bool(abs(metrics["loss"] - jax.numpy.log(task.spec.vocab_size)) < 0.3)
    (['accuracy', 'loss'], True)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lopt.tasks import datasets
from lopt.tasks.base import Task, TaskSpec
from lopt.tasks.classification import check_int
from lopt.tasks.datasets.text import LEVELS
from lopt.tasks.families.language import CORPORA, _TextFamily, classification_metrics
from lopt.tasks.sampling import choice, log_uniform

__all__ = ["TransformerLMFamily", "TransformerLMTask", "TransformerSpec"]

#: Standard deviation of weights and embeddings at ``init_scale=1`` (GPT-2's choice).
WEIGHT_STD = 0.02
LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class TransformerSpec(TaskSpec):
    """Static structure of a transformer language model.

    Attributes:
        corpus, level: the text and its tokenisation (``"char"`` or ``"word"``).
        seq_len: tokens per example (the context length; positions are learned).
        vocab_size: the model's vocabulary (special tokens included).
        d_model: residual-stream width.
        num_heads: attention heads (``d_model`` must be divisible by it).
        num_layers: transformer blocks.
        mlp_ratio: hidden units of each block's MLP per ``d_model``.
    """

    corpus: str = "fortunes"
    level: str = "char"
    seq_len: int = 32
    vocab_size: int = 0
    d_model: int = 32
    num_heads: int = 2
    num_layers: int = 1
    mlp_ratio: int = 4


def _layer_norm(x: jax.Array, p: dict) -> jax.Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * p["scale"] + p["bias"]


def _norm_params(width: int) -> dict:
    return {"scale": jnp.ones((width,)), "bias": jnp.zeros((width,))}


class TransformerLMTask(Task):
    """Next-token prediction at every position (batches: ``x``, ``y`` int32 ``[B, T]``).

    Settings (dynamic): ``init_scale`` (multiplies the init standard deviation of every
    weight matrix and embedding; biases and LayerNorm start at 0 and 1).
    """

    has_accuracy = True

    def init(self, key):
        spec, std = self.spec, WEIGHT_STD * self.settings["init_scale"]
        d, hidden = spec.d_model, spec.mlp_ratio * spec.d_model
        k_tok, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + spec.num_layers)
        normal = lambda k, shape: jax.random.normal(k, shape) * std
        blocks = []
        for k in k_blocks:
            k_qkv, k_out, k_in, k_mlp_out = jax.random.split(k, 4)
            blocks.append({
                "ln_attn": _norm_params(d),
                "qkv": {"w": normal(k_qkv, (d, 3 * d)), "b": jnp.zeros((3 * d,))},
                "attn_out": {"w": normal(k_out, (d, d)), "b": jnp.zeros((d,))},
                "ln_mlp": _norm_params(d),
                "mlp_in": {"w": normal(k_in, (d, hidden)), "b": jnp.zeros((hidden,))},
                "mlp_out": {"w": normal(k_mlp_out, (hidden, d)), "b": jnp.zeros((d,))},
            })
        return {"token_embed": normal(k_tok, (spec.vocab_size, d)),
                "pos_embed": normal(k_pos, (spec.seq_len, d)),
                "blocks": blocks,
                "ln_final": _norm_params(d),
                "head": {"w": normal(k_head, (d, spec.vocab_size)), "b": jnp.zeros((spec.vocab_size,))}}

    def _attention(self, p: dict, x: jax.Array) -> jax.Array:
        batch, length, d = x.shape
        heads = self.spec.num_heads
        qkv = (x @ p["qkv"]["w"] + p["qkv"]["b"]).reshape(batch, length, 3, heads, d // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, H, Dh]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(d // heads))
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        weights = jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, d)
        return out @ p["attn_out"]["w"] + p["attn_out"]["b"]

    def logits(self, params, tokens: jax.Array) -> jax.Array:
        """``[B, T, vocab]`` next-token logits for int tokens ``[B, T]``."""
        x = params["token_embed"][tokens] + params["pos_embed"][: tokens.shape[1]]
        for block in params["blocks"]:
            x = x + self._attention(block, _layer_norm(x, block["ln_attn"]))
            h = jax.nn.gelu(_layer_norm(x, block["ln_mlp"]) @ block["mlp_in"]["w"] + block["mlp_in"]["b"])
            x = x + h @ block["mlp_out"]["w"] + block["mlp_out"]["b"]
        x = _layer_norm(x, params["ln_final"])
        return x @ params["head"]["w"] + params["head"]["b"]

    def loss(self, params, batch):
        return self.metrics(params, batch)["loss"]

    def metrics(self, params, batch):
        return classification_metrics(self.logits(params, batch["x"]), batch["y"])


class TransformerLMFamily(_TextFamily):
    """Small pre-LN transformer language models on an offline text corpus.

    Example:
        >>> import lopt
        >>> cfg = lopt.tasks.get("transformer_lm").sample(0)
        >>> cfg["d_model"] % cfg["num_heads"] == 0 and cfg["num_layers"] in (1, 2)
        True
    """

    name = "transformer_lm"
    description = "Small pre-LN transformer (causal self-attention, learned positions) language model."

    def defaults(self):
        return {"corpus": "fortunes", "level": "char", "seq_len": 32, "vocab_size": None, "d_model": 32,
                "num_heads": 2, "num_layers": 1, "mlp_ratio": 4, "batch_size": 32, "init_scale": 1.0}

    def sampling_ranges(self):
        return {"corpus": f"uniform over {CORPORA}", "level": "char",
                "seq_len": "uniform over (16, 32, 64)", "vocab_size": "null (every character seen in training)",
                "d_model": "uniform over (16, 32, 64)", "num_heads": "uniform over (1, 2, 4)",
                "num_layers": "uniform over (1, 2)", "mlp_ratio": "uniform over (2, 4)",
                "batch_size": "uniform over (16, 32, 64)",
                "init_scale": "log-uniform in [0.5, 2] (dynamic: scales every weight's init std)"}

    def sample_config(self, rng):
        return {"corpus": choice(rng, CORPORA), "seq_len": choice(rng, (16, 32, 64)),
                "d_model": choice(rng, (16, 32, 64)), "num_heads": choice(rng, (1, 2, 4)),
                "num_layers": choice(rng, (1, 2)), "mlp_ratio": choice(rng, (2, 4)),
                "batch_size": choice(rng, (16, 32, 64)), "init_scale": round(log_uniform(rng, 0.5, 2.0), 4)}

    def validate(self, cfg):
        corpus = cfg["corpus"]
        if not (isinstance(corpus, str) and (corpus in datasets.text_corpora() or corpus.startswith("text:"))):
            raise ValueError(f"{self.name}: corpus={corpus!r} is unknown; use one of {datasets.text_corpora()} "
                             "or 'text:<file or directory>'.")
        if cfg["level"] not in LEVELS:
            raise ValueError(f"{self.name}: level={cfg['level']!r} is not supported; use one of {LEVELS}.")
        for key in ("d_model", "num_heads", "num_layers", "mlp_ratio", "batch_size"):
            check_int(self.name, key, cfg[key])
        check_int(self.name, "seq_len", cfg["seq_len"], minimum=2)
        if cfg["d_model"] % cfg["num_heads"]:
            raise ValueError(f"{self.name}: d_model={cfg['d_model']} is not divisible by num_heads="
                             f"{cfg['num_heads']}; choose num_heads dividing d_model.")
        vocab = cfg["vocab_size"]
        if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1):
            raise ValueError(f"{self.name}: vocab_size={vocab!r} must be a positive integer or null.")
        scale = cfg["init_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"{self.name}: init_scale={scale!r} must be a number > 0.")

    def make_task(self, cfg):
        data = datasets.load_text(cfg["corpus"], level=cfg["level"], seq_len=cfg["seq_len"], target="next_token",
                                  vocab_size=cfg["vocab_size"])
        spec = TransformerSpec(family=self.name, batch_size=cfg["batch_size"], corpus=cfg["corpus"],
                               level=cfg["level"], seq_len=cfg["seq_len"], vocab_size=data.info.num_classes,
                               d_model=cfg["d_model"], num_heads=cfg["num_heads"], num_layers=cfg["num_layers"],
                               mlp_ratio=cfg["mlp_ratio"])
        return TransformerLMTask(spec, data, {"init_scale": jnp.float32(cfg["init_scale"])})
