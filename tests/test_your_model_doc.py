"""docs/your-model.md: every Python example runs as written (shortened: width 12, a few LSC steps). Examples that
import snnTorch or Norse are skipped with the reason when the library is not installed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-model.md"


def _blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.+?)```", DOC.read_text(), re.S)
    # a block without its own data (the design example) continues the block before it
    return [b if "load_task(" in b else blocks[i - 1] + b for i, b in enumerate(blocks)]


def _shorten(code: str) -> str:
    code = code.replace("48", "12").replace("width=32", "width=12").replace("(32,)", "(12,)")
    return code.replace("progress=False)", "progress=False, max_steps=3, measure_steps=2, batch_size=4)")


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_doc_example_runs(index, capsys):
    code = _blocks()[index]
    for lib in ("snntorch", "norse"):
        if f"import {lib}" in code:
            pytest.importorskip(lib, reason=f"{lib} is not installed (bash benchmarks/install_peers.sh)")
    exec(compile(_shorten(code), f"{DOC.name} example {index}", "exec"), {"__name__": "doc_example"})
    assert "LSC:" in capsys.readouterr().out  # each example prints its LSC report


def test_doc_covers_every_library():
    text = DOC.read_text()
    for heading in ("## torch.nn", "## snnTorch", "## Norse", "## SpikingJelly", "generic step protocol",
                    "--model module.path:factory"):
        assert heading in text
