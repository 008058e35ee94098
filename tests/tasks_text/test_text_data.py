"""Text corpora: parsing, splits, vocabularies, token datasets, missing-corpus errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lopt.tasks import datasets
from lopt.tasks.datasets import text

FORTUNES = "Fortune one.\n%\nFortune two,\non two lines.\n%\n\n%\nFortune three.\n%\n"


def test_fortune_files_split_at_percent_lines():
    assert text.parse_documents(FORTUNES) == ["Fortune one.", "Fortune two,\non two lines.", "Fortune three."]
    assert text.parse_documents(FORTUNES.replace("\n", "\r\n")) == text.parse_documents(FORTUNES)


def test_plain_text_splits_at_blank_lines():
    assert text.parse_documents("Para one\ncontinues.\n\n  \nPara two.\n") == ["Para one\ncontinues.", "Para two."]
    assert text.parse_documents("50% off\nno separator here") == ["50% off\nno separator here"]


def test_wordnet_data_file(tmp_path):
    data = ("  1 This software and database is being provided | under license\n"
            "  2 more license text\n"
            "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which exists; \"a thing\"  \n"
            "00002137 09 n 02 abstraction 0 abstract_entity 0 000 | a general concept  \n")
    assert text.parse_wordnet_data(data) == [('that which exists; "a thing"', 3), ("a general concept", 9)]
    with pytest.raises(ValueError, match="data.noun:2 is not a WordNet synset line"):
        text.parse_wordnet_data("00001740 03 n | ok\nnot a synset\n", source="data.noun")


def _fake_wordnet(directory, per_part=12):
    directory.mkdir()
    lex = {"noun": 5, "verb": 30, "adj": 0, "adv": 2}
    for part, label in lex.items():
        lines = ["  1 license line | with a bar"]
        lines += [f"{i:08d} {label:02d} x 01 w{i} 0 000 | {part} gloss number {i}  " for i in range(per_part)]
        (directory / f"data.{part}").write_text("\n".join(lines) + "\n")
    return lex


def test_fake_wordnet_directory_gives_lexicographer_labels(tmp_path, monkeypatch):
    lex = _fake_wordnet(tmp_path / "wn")
    monkeypatch.setenv("LOPT_WORDNET_DIR", str(tmp_path / "wn"))
    corpus = text._wordnet()
    assert corpus.class_names == text.WORDNET_LEXNAMES and len(corpus.class_names) == 45
    total = sum(corpus.size(s) for s in ("train", "valid", "test"))
    assert total == 48
    for split in ("train", "valid", "test"):
        for doc, label in zip(corpus.documents[split], corpus.labels[split]):
            part = doc.split()[0]
            assert label == lex[part] and corpus.class_names[label].startswith(part)


@pytest.mark.parametrize("suffix", [".gz", ".xz"])
def test_compressed_wordnet_files_read_the_same(tmp_path, monkeypatch, suffix):
    import gzip
    import lzma

    compress = {".gz": gzip.compress, ".xz": lzma.compress}[suffix]
    _fake_wordnet(tmp_path / "wn")
    monkeypatch.setenv("LOPT_WORDNET_DIR", str(tmp_path / "wn"))
    plain = text._wordnet()
    for part in text.WORDNET_PARTS:
        path = tmp_path / "wn" / f"data.{part}"
        (tmp_path / "wn" / f"data.{part}{suffix}").write_bytes(compress(path.read_bytes()))
        path.unlink()
    packed = text._wordnet()
    for split in ("train", "valid", "test"):
        assert list(packed.documents[split]) == list(plain.documents[split])
        assert list(packed.labels[split]) == list(plain.labels[split])


def _write_categories(folder):
    folder.mkdir()
    (folder / "jokes").write_text("%\n".join(f"Joke number {i}.\n" for i in range(25)))
    (folder / "quotes").write_text("%\n".join(f"Quote number {i}, said someone.\n" for i in range(15)))
    (folder / "jokes.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (folder / "jokes.u8").symlink_to(folder / "jokes")
    (folder / ".hidden").write_text("not a class")
    (folder / "subdir").mkdir()
    return folder


def test_directory_files_are_classes(tmp_path):
    docs, labels, names = text.read_text_path(_write_categories(tmp_path / "cats"))
    assert names == ("jokes", "quotes")
    assert len(docs) == 40 and labels.count(0) == 25 and labels.count(1) == 15
    assert docs[0] == "Joke number 0."


def test_splits_are_disjoint_deterministic_and_cover_the_corpus():
    docs = [f"document {i}" for i in range(50)] + ["document 3"]  # one duplicate
    labels = list(range(51))
    first = text.split_documents(docs, labels)
    again = text.split_documents(list(docs), list(labels))
    assert first == again
    sets = {s: set(first[s][0]) for s in ("train", "valid", "test")}
    assert len(sets["valid"]) == len(sets["test"]) == 5 and len(sets["train"]) == 40
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert set().union(*sets.values()) == set(docs)
    # A document's split depends only on its text: dropping others keeps most assignments.
    shuffled = text.split_documents(docs[::-1], labels[::-1])
    assert set(shuffled["test"][0]) == sets["test"]
    with pytest.raises(ValueError, match="at least 3 distinct documents"):
        text.split_documents(["a", "a", "b"], [0, 0, 0])


def test_vocabulary_keeps_top_k_with_unknown_token():
    vocab = text.Vocabulary.build([["b", "a", "a", "c"], ["b", "a", "d"]], max_size=2)
    assert vocab.tokens == ("<pad>", "<unk>", "<eos>", "a", "b")  # ties broken alphabetically
    assert vocab.encode(["a", "d", "b", "zzz"]).tolist() == [3, text.UNK, 4, text.UNK]
    assert vocab.encode("ab?").tolist() == [3, 4, text.UNK]  # strings are characters
    assert vocab.decode([4, 1, 0]) == ["b", "<unk>", "<pad>"]
    assert text.Vocabulary.build([["x", "y"]]).size == 5
    assert text.tokenize("The cat's hat, 2 of them!", "word") == ["the", "cat's", "hat", ",", "2", "of",
                                                                "them", "!"]


def test_text_path_language_model_dataset(tmp_path):
    folder = _write_categories(tmp_path / "lm")
    name = f"text:{folder}"
    ds = datasets.load_text(name, level="char", seq_len=8)
    assert datasets.load_text(name, level="char", seq_len=8) is ds  # cached
    vocab = datasets.vocabulary(name, "char")
    train = ds.splits["train"]
    assert train["x"].dtype == np.int32 and train["x"].shape[1] == 8
    # y is x shifted by one token across the concatenated stream.
    np.testing.assert_array_equal(train["y"][:, :-1], train["x"][:, 1:])
    np.testing.assert_array_equal(train["y"][:-1, -1], train["x"][1:, 0])
    corpus = datasets.load_corpus(name)
    first_doc = corpus.documents["train"][0]
    assert vocab.decode(train["x"][0]) == [*first_doc, "<eos>"][:8]
    assert text.EOS in np.asarray(train["x"])
    assert ds.info.num_classes == vocab.size and ds.info.x_scale is None
    batch = ds.sample(jax.random.key(0), "valid", 5)
    assert batch["x"].shape == batch["y"].shape == (5, 8) and batch["x"].dtype == np.int32


def test_every_sequence_length_windows_the_same_document_stream(tmp_path):
    name = f"text:{_write_categories(tmp_path / 'lm')}"
    vocab = datasets.vocabulary(name, "char")
    docs = datasets.load_corpus(name).documents["train"]
    stream = [int(t) for doc in docs for t in (*vocab.encode(doc), text.EOS)]
    for seq_len in (3, 5):
        train = datasets.load_text(name, level="char", seq_len=seq_len).splits["train"]
        n = (len(stream) - 1) // seq_len
        np.testing.assert_array_equal(np.asarray(train["x"]).ravel(), stream[:n * seq_len])
        np.testing.assert_array_equal(np.asarray(train["y"]).ravel(), stream[1:n * seq_len + 1])


def test_registered_classification_dataset_pads_with_zero(tmp_path):
    datasets.register_text("my_cats", _write_categories(tmp_path / "cls"))
    assert "my_cats" in datasets.text_corpora()
    ds = datasets.load_text("my_cats", level="word", seq_len=6, target="class", vocab_size=4)
    vocab = datasets.vocabulary("my_cats", "word", 4)
    assert vocab.size == 7
    x, y = np.asarray(ds.splits["train"]["x"]), np.asarray(ds.splits["train"]["y"])
    assert x.shape == (len(y), 6) and set(y) <= {0, 1} and ds.info.num_classes == 2
    jokes = x[y == 0]
    assert (jokes[:, 4:] == text.PAD).all() and (jokes[:, :4] != text.PAD).all()  # "joke number N ."
    assert (x == text.UNK).any()  # words beyond the top 4


def test_missing_corpora_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LOPT_FORTUNES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install fortunes-min"):
        text._fortunes()
    monkeypatch.setenv("LOPT_WORDNET_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(datasets.DatasetNotFoundError, match="apt-get install wordnet-base"):
        text._wordnet()
    with pytest.raises(datasets.DatasetNotFoundError, match="does not exist"):
        datasets.load_corpus(f"text:{tmp_path / 'missing.txt'}")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Unknown text corpus 'novels'"):
        datasets.load_text("novels")
    with pytest.raises(ValueError, match="level='byte'"):
        datasets.load_text("fortunes", level="byte")
    with pytest.raises(ValueError, match="seq_len=0"):
        datasets.load_text("fortunes", seq_len=0)
    with pytest.raises(ValueError, match="target='label'"):
        datasets.load_text("fortunes", target="label")
    with pytest.raises(ValueError, match="vocab_size=0"):
        datasets.load_text("fortunes", vocab_size=0)
    with pytest.raises(ValueError, match="too few for one sequence"):
        datasets.load_text("fortunes", seq_len=10**7)
    with pytest.raises(TypeError, match="name=3"):
        datasets.register_text(3, "/tmp")


def test_fortunes_corpus():
    corpus = datasets.load_corpus("fortunes")
    assert {"fortunes", "literature", "riddles"} <= set(corpus.class_names)
    sizes = [corpus.size(s) for s in ("train", "valid", "test")]
    assert sizes[1] == sizes[2] and sizes[0] >= 8 * sizes[1]
    assert all("\n%\n" not in doc for doc in corpus.documents["train"])


def test_wordnet_corpus():
    corpus = datasets.load_corpus("wordnet")
    assert len(corpus.class_names) == 45 and corpus.class_names[3] == "noun.Tops"
    assert [corpus.size(s) for s in ("train", "valid", "test")] == [93_627, 11_703, 11_703]
    assert set(np.unique(corpus.labels["train"])) == set(range(45))
