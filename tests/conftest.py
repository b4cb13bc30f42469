"""Fixtures shared by several test files."""
from __future__ import annotations

import builtins

import pytest

from stablernn.data import DataConfig, load_task


@pytest.fixture
def no_ray(monkeypatch):
    """``import ray`` fails as on a machine without it (whether or not ray is installed here)."""
    real_import = builtins.__import__

    def fake(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)


@pytest.fixture(scope="module")
def digits():
    """The digits task in batches of 32 (files that need another batch size define their own)."""
    return load_task(DataConfig(task="digits", batch_size=32))
