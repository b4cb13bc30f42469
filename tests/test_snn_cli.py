"""``stablernn sg plot`` and ``stablernn snn-design``."""
from __future__ import annotations

import json

import pytest

from stablernn.cli import main


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_sg_plot_writes_figure(tmp_path, capsys, suffix):
    out = tmp_path / f"sg.{suffix}"
    assert _run(["sg", "plot", "--out", str(out), "--dampening", "0.5", "--sharpness", "2", "--tail", "2.0"]) == 0
    assert out.stat().st_size > 5000
    assert "wrote" in capsys.readouterr().out


def test_sg_plot_errors(tmp_path, capsys):
    assert _run(["sg", "plot", "--out", str(tmp_path / "x.jpg")]) == 2
    assert "error:" in capsys.readouterr().err
    assert _run(["sg", "plot", "--out", str(tmp_path / "nodir" / "x.png")]) == 2
    assert _run(["sg", "plot", "--out", str(tmp_path / "x.png"), "--shapes", "nope"]) == 2
    assert "unknown surrogate" in capsys.readouterr().err


def test_sg_plot_aliases(tmp_path):
    out = tmp_path / "a.png"
    assert _run(["sg", "plot", "--out", str(out), "--shapes", "fast_sigmoid,snntorch_atan,norse_super"]) == 0


def test_snn_design_prints_and_writes_json(tmp_path, capsys):
    js = tmp_path / "design.json"
    code = _run(["snn-design", "--task", "digits", "--cell", "lif", "--layers", "1", "--width", "16", "--tau", "2",
                 "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Condition III: dampening γ" in out and "Condition IV: sharpness s" in out
    d = json.loads(js.read_text())
    assert d["cell"] == "lif" and len(d["layers_design"]) == 1
    assert d["layers_design"][0]["reports"][2]["condition"] == "III"


def test_snn_design_errors(capsys):
    assert _run(["snn-design", "--cell", "gru"]) == 2
    assert "lif or alif" in capsys.readouterr().err
    assert _run(["snn-design", "--conditions", "I,V", "--width", "8", "--layers", "1"]) == 2
    assert "unknown condition" in capsys.readouterr().err


def test_snn_design_fallback_option_reaches_the_design(tmp_path, capsys):
    """``--fallback`` picks what Condition IV does without a root (the exponential SG has none here)."""
    got = {}
    for fb in ("clip", "match"):
        js = tmp_path / f"{fb}.json"
        code = _run(["snn-design", "--task", "digits", "--cell", "lif", "--layers", "1", "--width", "16",
                     "--shape", "exponential", "--conditions", "IV", "--fallback", fb, "--json", str(js)])
        assert code == 0, capsys.readouterr().err
        got[fb] = json.loads(js.read_text())["layers_design"][0]["reports"][0]["fallback"]
    assert got["clip"].startswith("clip:") and got["match"].startswith("match:"), got
    assert _run(["snn-design", "--width", "8", "--layers", "1", "--fallback", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "match" in err and "\n" not in err.strip()
