"""Offline text corpora as token datasets: fortunes, WordNet glosses, and any plain-text files.

A *corpus* is a list of documents, each with a class label, split once and for all into
``train`` / ``valid`` / ``test``. From a corpus, :func:`load_text` makes a
:class:`~lopt.tasks.datasets.Dataset` of int32 token arrays at the character or word level:

* ``target="next_token"`` (language modelling): the documents of a split, each followed by an
  ``<eos>`` token, are concatenated and cut into non-overlapping windows; ``x`` is ``[N, T]``
  tokens and ``y`` the ``[N, T]`` tokens one step later.
* ``target="class"`` (classification): ``x`` is the first ``T`` tokens of each document
  (right-padded with ``<pad>`` = 0) and ``y`` the document's class ``[N]``.

Corpora:

* ``"fortunes"``: every category file of the ``fortune`` databases in
  ``/usr/share/games/fortunes`` (or ``$LOPT_FORTUNES_DIR``) is a class; fortunes are separated
  by lines holding a single ``%``. Debian's ``fortunes-min`` has 3 categories (fortunes,
  literature, riddles; 821 fortunes); installing ``fortunes`` as well gives 43.
* ``"wordnet"``: the gloss of every synset in ``data.noun``, ``data.verb``, ``data.adj`` and
  ``data.adv`` of ``/usr/share/wordnet`` (or ``$LOPT_WORDNET_DIR``; ``data.noun.gz`` or
  ``data.noun.xz`` etc. are read too); the class is the synset's
  lexicographer file (45 classes, :data:`WORDNET_LEXNAMES`). 117,033 distinct glosses.
* ``register_text(name, path)`` or ``"text:/some/path"``: a text file (one class) or a
  directory whose files are the classes; documents are separated by ``%`` lines when the
  file has any, else by blank lines.

Splits are deterministic and depend only on the documents: exact duplicates are dropped,
documents are ordered by the CRC-32 of their text, the first 10% are ``test``, the next 10%
``valid``, the rest ``train`` (each split keeps the corpus order). Vocabularies are built from
the training split only: ids 0, 1, 2 are ``<pad>``, ``<unk>``, ``<eos>``, then units by
decreasing count (ties alphabetical), at most ``vocab_size`` of them. Everything is cached per
process, so tasks of one dataset share device arrays.

Example:
    >>> import jax
    >>> from lopt.tasks import datasets
    >>> ds = datasets.load_text("fortunes", level="char", seq_len=16)
    >>> batch = ds.sample(jax.random.key(0), "train", 4)
    >>> batch["x"].shape, batch["y"].shape, batch["x"].dtype
    ((4, 16), (4, 16), dtype('int32'))
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from lopt.tasks.base import SPLITS, check_split
from lopt.tasks.datasets.catalog import DatasetNotFoundError
from lopt.tasks.datasets.compressed import find_compressed, read_compressed
from lopt.tasks.datasets.dataset import Dataset

__all__ = [
    "EOS",
    "LEVELS",
    "PAD",
    "SPECIAL_TOKENS",
    "TARGETS",
    "UNK",
    "WORDNET_LEXNAMES",
    "TextCorpus",
    "Vocabulary",
    "load_corpus",
    "load_text",
    "parse_documents",
    "parse_wordnet_data",
    "read_text_path",
    "register_text",
    "split_documents",
    "text_corpora",
    "tokenize",
    "vocabulary",
]

FORTUNES_DIR = "/usr/share/games/fortunes"
WORDNET_DIR = "/usr/share/wordnet"
WORDNET_PARTS = ("noun", "verb", "adj", "adv")

#: Reserved token ids of every vocabulary.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
PAD, UNK, EOS = 0, 1, 2
#: Tokenisation levels.
LEVELS = ("char", "word")
#: What ``y`` holds: the next token at every position, or the document's class.
TARGETS = ("next_token", "class")
#: Fraction of documents in the valid and in the test split.
HELD_OUT_FRACTION = 0.1

#: WordNet 3.0's 45 lexicographer files, indexed by a synset's ``lex_filenum``.
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[^\sa-z0-9]")


# --- parsing ---------------------------------------------------------------------------------


def parse_documents(text: str) -> list[str]:
    """Splits a text into documents: at lines holding only ``%`` if any, else at blank lines.

    Documents are stripped of surrounding whitespace; empty ones are dropped.

    Example:
        >>> parse_documents("A fortune.\\n%\\nAnother\\none.\\n%\\n")
        ['A fortune.', 'Another\\none.']
        >>> parse_documents("First paragraph.\\n\\n\\nSecond.")
        ['First paragraph.', 'Second.']
    """
    lines = text.replace("\r\n", "\n").split("\n")
    if any(line.rstrip() == "%" for line in lines):
        docs, current = [], []
        for line in lines:
            if line.rstrip() == "%":
                docs.append("\n".join(current))
                current = []
            else:
                current.append(line)
        docs.append("\n".join(current))
    else:
        docs = re.split(r"\n\s*\n", "\n".join(lines))
    return [d.strip() for d in docs if d.strip()]


def parse_wordnet_data(text: str, *, source: str = "data file") -> list[tuple[str, int]]:
    """Reads the ``(gloss, lex_filenum)`` of every synset line of a WordNet ``data.*`` file.

    A synset line is ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss``; the license
    header (lines starting with two spaces) is skipped.

    Raises:
        ValueError: a line that is not a synset line (naming ``source`` and the line number).

    Example:
        >>> parse_wordnet_data("  1 license\\n00001740 03 n 01 entity 0 000 | that which exists\\n")
        [('that which exists', 3)]
    """
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("  "):
            continue
        head, bar, gloss = line.partition("|")
        fields = head.split()
        if not bar or len(fields) < 2 or not fields[1].isdigit():
            raise ValueError(f"{source}:{number} is not a WordNet synset line "
                             f"('offset lex_filenum ss_type ... | gloss'): {line[:80]!r}")
        if gloss.strip():
            out.append((gloss.strip(), int(fields[1])))
    return out


def _is_text_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" not in f.read(8192)


def read_text_path(path: str | os.PathLike) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Reads documents from a text file (one class) or a directory (each file is a class).

    In a directory, every regular, non-hidden file is read (symlinks to the same file once,
    binary files such as fortune's ``.dat`` indexes skipped, subdirectories ignored), in name
    order; the file name is its class name. Documents are split by :func:`parse_documents`.

    Returns:
        ``(documents, labels, class_names)``.

    Raises:
        DatasetNotFoundError: ``path`` does not exist or holds no text.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        seen, files = set(), []
        for child in sorted(path.iterdir()):
            real = child.resolve()
            if child.name.startswith(".") or not real.is_file() or real in seen:
                continue
            seen.add(real)
            if _is_text_file(real):
                files.append(child)
    else:
        raise DatasetNotFoundError(f"Text path {str(path)!r} does not exist.")
    documents, labels, class_names = [], [], []
    for file in files:
        docs = parse_documents(file.read_text(encoding="utf-8", errors="replace"))
        if docs:
            documents += docs
            labels += [len(class_names)] * len(docs)
            class_names.append(file.name)
    if not documents:
        raise DatasetNotFoundError(f"Text path {str(path)!r} holds no documents.")
    return documents, labels, tuple(class_names)


# --- corpora and splits ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class TextCorpus:
    """Documents with class labels, split into ``train``/``valid``/``test``.

    Attributes:
        name: the corpus name.
        class_names: name of every class, indexed by label.
        documents: ``{split: tuple of document strings}``.
        labels: ``{split: int32 array of labels}``.
    """

    name: str
    class_names: tuple[str, ...]
    documents: dict[str, tuple[str, ...]]
    labels: dict[str, np.ndarray]

    def size(self, split: str) -> int:
        """Number of documents in ``split``."""
        return len(self.documents[check_split(split)])


def split_documents(documents: Sequence[str],
                    labels: Sequence[int]) -> dict[str, tuple[list[str], list[int]]]:
    """Splits documents deterministically by content (see the module docstring).

    Raises:
        ValueError: fewer than 3 distinct documents.

    Example:
        >>> docs = [f"document {i}" for i in range(20)]
        >>> splits = split_documents(docs, [0] * 20)
        >>> [len(splits[s][0]) for s in ("train", "valid", "test")]
        [16, 2, 2]
    """
    first = {}
    for i, doc in enumerate(documents):
        first.setdefault(doc, i)
    unique = sorted(first.values())
    if len(unique) < 3:
        raise ValueError("A text corpus needs at least 3 distinct documents (one per split), "
                         f"got {len(unique)}.")
    n_held = max(1, round(HELD_OUT_FRACTION * len(unique)))
    order = sorted(unique, key=lambda i: (zlib.crc32(documents[i].encode("utf-8")), documents[i]))
    parts = {"test": order[:n_held], "valid": order[n_held:2 * n_held], "train": order[2 * n_held:]}
    return {split: ([documents[i] for i in sorted(idx)], [int(labels[i]) for i in sorted(idx)])
            for split, idx in parts.items()}


def _make_corpus(name: str, documents: Sequence[str], labels: Sequence[int],
                 class_names: Sequence[str]) -> TextCorpus:
    splits = split_documents(documents, labels)
    return TextCorpus(name=name, class_names=tuple(class_names),
                      documents={s: tuple(splits[s][0]) for s in SPLITS},
                      labels={s: np.asarray(splits[s][1], dtype=np.int32) for s in SPLITS})


def _fortunes() -> TextCorpus:
    directory = os.environ.get("LOPT_FORTUNES_DIR", FORTUNES_DIR)
    try:
        documents, labels, class_names = read_text_path(directory)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(
            f"Text corpus 'fortunes' is not available ({err}). Install it with "
            "`sudo apt-get install fortunes-min` (3 categories; add `fortunes` for 43), or point "
            "LOPT_FORTUNES_DIR at a directory of fortune files.") from None
    return _make_corpus("fortunes", documents, labels, class_names)


def _wordnet() -> TextCorpus:
    directory = Path(os.environ.get("LOPT_WORDNET_DIR", WORDNET_DIR))
    documents, labels = [], []
    for part in WORDNET_PARTS:
        path = find_compressed(directory, [f"data.{part}"])
        if path is None:
            raise DatasetNotFoundError(
                f"Text corpus 'wordnet' is not available: {directory / f'data.{part}'} is missing. Install it with "
                "`sudo apt-get install wordnet-base`, or point LOPT_WORDNET_DIR at a directory "
                "holding WordNet's data.noun, data.verb, data.adj and data.adv (plain, .gz or .xz).")
        raw = read_compressed(path)
        for gloss, label in parse_wordnet_data(raw.decode("utf-8", errors="replace"), source=str(path)):
            if not 0 <= label < len(WORDNET_LEXNAMES):
                raise ValueError(f"{path}: lex_filenum {label} is outside 0..{len(WORDNET_LEXNAMES) - 1}.")
            documents.append(gloss)
            labels.append(label)
    return _make_corpus("wordnet", documents, labels, WORDNET_LEXNAMES)


_CORPORA: dict[str, Callable[[], TextCorpus]] = {"fortunes": _fortunes, "wordnet": _wordnet}


_CACHE: dict[tuple, object] = {}


def _cached(fn):
    """Memoises ``fn(name, *args)`` per process; :func:`register_text` forgets one name's entries."""

    @functools.wraps(fn)
    def wrapper(*args):
        key = (fn.__name__, *args)
        if key not in _CACHE:
            _CACHE[key] = fn(*args)
        return _CACHE[key]

    return wrapper


def _forget(name: str) -> None:
    for key in [k for k in _CACHE if k[1] == name]:
        del _CACHE[key]


def register_text(name: str, path: str | os.PathLike) -> None:
    """Registers a text file or a directory of text files as corpus ``name``.

    Args:
        name: the name to load it by.
        path: a file (one class; documents separated by ``%`` lines or blank lines) or a
            directory whose files are the classes (see :func:`read_text_path`).

    Raises:
        TypeError: ``name`` is not a non-empty string.

    Example:
        >>> import tempfile, pathlib
        >>> from lopt.tasks import datasets
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.txt").write_text("\\n\\n".join(f"Note number {i}." for i in range(30)))
        >>> datasets.register_text("notes", folder)
        >>> datasets.load_corpus("notes").size("train")
        24
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_text: name={name!r} must be a non-empty string, e.g. 'my_notes'.")
    if name in ("fortunes", "wordnet"):
        raise ValueError(f"register_text: {name!r} is a built-in corpus; choose another name.")
    corpus_path = Path(path)

    def load() -> TextCorpus:
        return _make_corpus(name, *read_text_path(corpus_path))

    _CORPORA[name] = load
    _forget(name)


def text_corpora() -> tuple[str, ...]:
    """Names of the registered text corpora (installed or not)."""
    return tuple(_CORPORA)


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"text corpus name={name!r} must be a string, e.g. 'fortunes'.")
    if name.startswith("text:") and name not in _CORPORA:
        register_text(name, name[len("text:"):])
    if name not in _CORPORA:
        raise ValueError(f"Unknown text corpus {name!r}; known corpora: {text_corpora()} "
                         "(or 'text:<file or directory>').")
    return name


@_cached
def _load_corpus(name: str) -> TextCorpus:
    return _CORPORA[name]()


def load_corpus(name: str) -> TextCorpus:
    """Loads (and caches) text corpus ``name``, or ``"text:<path>"`` for a file or directory.

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: the corpus files are missing (the message says how to install).

    Example:
        >>> from lopt.tasks import datasets
        >>> corpus = datasets.load_corpus("fortunes")
        >>> "riddles" in corpus.class_names
        True
    """
    return _load_corpus(_check_name(name))


# --- tokens and vocabularies -----------------------------------------------------------------


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level={level!r} is not a tokenisation level; use one of {LEVELS}.")
    return level


def tokenize(text: str, level: str) -> list[str]:
    """Splits ``text`` into characters, or into lower-cased words and punctuation marks.

    Example:
        >>> tokenize("Don't panic!", "word")
        ["don't", 'panic', '!']
        >>> tokenize("Hi!", "char")
        ['H', 'i', '!']
    """
    if _check_level(level) == "char":
        return list(text)
    return _WORD.findall(text.lower())


def _units(text: str, level: str) -> Sequence[str]:
    """Like :func:`tokenize`, but a character-level document stays a string (a sequence of chars)."""
    return text if level == "char" else tokenize(text, level)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Tokens by id: :data:`SPECIAL_TOKENS` first, then the kept units.

    Example:
        >>> vocab = Vocabulary.build([["a", "b", "a"], ["c", "a"]], max_size=2)
        >>> vocab.tokens
        ('<pad>', '<unk>', '<eos>', 'a', 'b')
        >>> vocab.encode(["a", "c"]).tolist(), vocab.decode([3, 1])
        ([3, 1], ['a', '<unk>'])
    """

    tokens: tuple[str, ...]

    def __post_init__(self):
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"Vocabulary tokens must start with {SPECIAL_TOKENS}, got {self.tokens[:3]}.")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})
        chars = sorted((ord(t), i) for i, t in enumerate(self.tokens) if len(t) == 1)
        object.__setattr__(self, "_char_codes", np.array([c for c, _ in chars], dtype=np.uint32))
        object.__setattr__(self, "_char_ids", np.array([i for _, i in chars], dtype=np.int32))

    @classmethod
    def build(cls, documents: Iterable[Sequence[str]], max_size: int | None = None) -> Vocabulary:
        """The ``max_size`` most frequent units (all if ``None``), ties broken alphabetically."""
        counts = collections.Counter()
        for units in documents:
            counts.update(units)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ranked = sorted(counts, key=lambda u: (-counts[u], u))
        return cls(SPECIAL_TOKENS + tuple(ranked if max_size is None else ranked[:max_size]))

    @property
    def size(self) -> int:
        """Number of token ids (specials included)."""
        return len(self.tokens)

    def encode(self, units: Iterable[str]) -> np.ndarray:
        """Token ids (int32) of ``units`` (a string counts as its characters); unknown -> ``<unk>``."""
        if isinstance(units, str):  # vectorised character lookup
            codes = np.frombuffer(units.encode("utf-32-le"), dtype=np.uint32)
            if not len(self._char_codes):
                return np.full(len(codes), UNK, dtype=np.int32)
            pos = np.minimum(np.searchsorted(self._char_codes, codes), len(self._char_codes) - 1)
            return np.where(self._char_codes[pos] == codes, self._char_ids[pos], UNK).astype(np.int32)
        index = self._index
        return np.fromiter((index.get(u, UNK) for u in units), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``."""
        return [self.tokens[int(i)] for i in ids]


@_cached
def _tokenized(name: str, level: str) -> dict[str, list[Sequence[str]]]:
    corpus = _load_corpus(name)
    return {split: [_units(doc, level) for doc in corpus.documents[split]] for split in SPLITS}


def _check_vocab_size(vocab_size: int | None) -> int | None:
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
                                   or vocab_size < 1):
        raise ValueError(f"vocab_size={vocab_size!r} must be a positive integer (units kept besides "
                         "the special tokens) or None for every unit seen in training.")
    return vocab_size


def vocabulary(name: str, level: str, vocab_size: int | None = None) -> Vocabulary:
    """The vocabulary of corpus ``name`` at ``level``, built from its training split (cached).

    Args:
        name: a corpus name (see :func:`text_corpora`) or ``"text:<path>"``.
        level: ``"char"`` or ``"word"``.
        vocab_size: keep the ``vocab_size`` most frequent units (besides the 3 special tokens);
            ``None`` keeps every unit seen in training.

    Example:
        >>> from lopt.tasks import datasets
        >>> datasets.vocabulary("fortunes", "word", 100).size
        103
    """
    name, level, vocab_size = _check_name(name), _check_level(level), _check_vocab_size(vocab_size)
    return _vocabulary(name, level, vocab_size)


@_cached
def _vocabulary(name: str, level: str, vocab_size: int | None) -> Vocabulary:
    return Vocabulary.build(_tokenized(name, level)["train"], vocab_size)


@_cached
def _encoded(name: str, level: str, vocab_size: int | None) -> dict[str, list[np.ndarray]]:
    vocab = _vocabulary(name, level, vocab_size)
    out = {}
    for split, docs in _tokenized(name, level).items():  # one lookup per split, then cut per document
        units = "".join(docs) if level == "char" else list(itertools.chain.from_iterable(docs))
        out[split] = np.split(vocab.encode(units), np.cumsum([len(d) for d in docs])[:-1])
    return out


@_cached
def _stream(name: str, level: str, vocab_size: int | None, split: str) -> np.ndarray:
    """A split's documents as one token stream, each followed by ``<eos>`` (shared by every
    ``seq_len``: a mixture's catalogue asks for one corpus at many sequence lengths)."""
    docs = _encoded(name, level, vocab_size)[split]
    ends = np.cumsum([len(doc) + 1 for doc in docs])
    stream = np.full(int(ends[-1]) if len(docs) else 0, EOS, dtype=np.int32)
    for doc, end in zip(docs, ends):
        stream[end - 1 - len(doc):end - 1] = doc
    return stream


def _windows(stream: np.ndarray, seq_len: int, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise ValueError(f"Text corpus {name!r}: split {split!r} has {len(stream)} tokens, too few for one "
                         f"sequence of seq_len={seq_len}; use a shorter seq_len or a larger corpus.")
    return stream[: n * seq_len].reshape(n, seq_len), stream[1 : n * seq_len + 1].reshape(n, seq_len)


def _prefixes(docs: list[np.ndarray], seq_len: int) -> np.ndarray:
    x = np.full((len(docs), seq_len), PAD, dtype=np.int32)
    for i, doc in enumerate(docs):
        x[i, : min(seq_len, len(doc))] = doc[:seq_len]
    return x


def load_text(name: str, *, level: str = "char", seq_len: int = 32, target: str = "next_token",
              vocab_size: int | None = None) -> Dataset:
    """Loads corpus ``name`` as an int32 token :class:`~lopt.tasks.datasets.Dataset` (cached).

    Args:
        name: ``"fortunes"``, ``"wordnet"``, a name given to :func:`register_text`, or
            ``"text:<file or directory>"``.
        level: ``"char"`` or ``"word"``.
        seq_len: tokens per example ``T``.
        target: ``"next_token"`` (``y`` = the ``[N, T]`` next tokens; ``info.num_classes`` is
            the vocabulary size) or ``"class"`` (``y`` = the ``[N]`` document classes,
            ``x`` = each document's first ``T`` tokens padded with ``<pad>`` = 0).
        vocab_size: units kept besides the special tokens (see :func:`vocabulary`).

    Raises:
        ValueError: unknown name, level or target; ``seq_len`` not a positive integer; a split
            too small for one sequence.
        DatasetNotFoundError: the corpus is not installed (the message says how to install it).

    Example:
        >>> from lopt.tasks import datasets
        >>> ds = datasets.load_text("fortunes", level="word", seq_len=8, target="class")
        >>> ds.info.input_shape, ds.info.num_classes >= 3
        ((8,), True)
    """
    name, level, vocab_size = _check_name(name), _check_level(level), _check_vocab_size(vocab_size)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} must be a positive integer.")
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not supported; use one of {TARGETS}.")
    return _load_text(name, level, seq_len, target, vocab_size)


@_cached
def _load_text(name: str, level: str, seq_len: int, target: str, vocab_size: int | None) -> Dataset:
    encoded = _encoded(name, level, vocab_size)
    if target == "next_token":
        splits = {s: _windows(_stream(name, level, vocab_size, s), seq_len, name, s) for s in SPLITS}
        num_classes = _vocabulary(name, level, vocab_size).size
    else:
        corpus = _load_corpus(name)
        splits = {s: (_prefixes(encoded[s], seq_len), corpus.labels[s]) for s in SPLITS}
        num_classes = len(corpus.class_names)
    label = f"{name}/{level}/{target}/T{seq_len}" + ("" if vocab_size is None else f"/V{vocab_size}")
    return Dataset.from_numpy(label, splits, num_classes=num_classes, normalize=False)
