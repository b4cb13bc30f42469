"""NIR export of stablernn LIF nets: imported by snnTorch (feed-forward LIF layers) and Norse (recurrent LIF
layers), the imported nets give the same spike trains. Skipped with the reason without nir / the importer."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from stablernn import ALIFCell, DeepRNN, LIFCell, export_nir

nir = pytest.importorskip("nir", reason="nir is not installed (bash benchmarks/install_peers.sh)")


def _net(recurrent: bool) -> DeepRNN:
    torch.manual_seed(0)
    cells = [LIFCell(8, 16, reset="mult_leak", tau=5.0, recurrent=recurrent),
             LIFCell(16, 12, reset="mult_leak", tau=torch.linspace(2.0, 10.0, 12), recurrent=recurrent)]
    with torch.no_grad():
        for c in cells:
            c.weight_ih.mul_(3.0)
        cells[0].bias.fill_(0.1)
    return DeepRNN(cells, input_size=8, output_size=5)


def _record(net: torch.nn.Module, kind: type) -> list[list[torch.Tensor]]:
    mods = [m for m in net.modules() if isinstance(m, kind)]
    rec: list[list[torch.Tensor]] = [[] for _ in mods]
    for i, m in enumerate(mods):
        m.register_forward_hook(lambda _m, _a, out, i=i: rec[i].append(out[0] if isinstance(out, tuple) else out))
    return rec


def _check_spikes(model: DeepRNN, rec: list[list[torch.Tensor]], x: torch.Tensor) -> None:
    ours = model.run(x).layer_outputs
    assert len(rec) == len(ours)
    for l, (theirs, mine) in enumerate(zip(rec, ours, strict=True)):
        theirs = torch.stack(theirs, 1).to(mine.dtype)
        assert 0.02 < float(mine.detach().mean()) < 0.9, f"layer {l}: too few / many spikes to compare"
        assert torch.equal(theirs, mine.detach()), f"layer {l}: spike trains differ"


def test_snntorch_imports_the_export_with_identical_spikes(tmp_path):
    snn = pytest.importorskip("snntorch", reason="snntorch is not installed (bash benchmarks/install_peers.sh)")
    from snntorch.import_nir import import_from_nir

    model = _net(recurrent=False)
    path = tmp_path / "net.nir"
    nir.write(str(path), export_nir(model))  # through the file format
    net = import_from_nir(nir.read(str(path)))
    rec = _record(net, snn.Leaky)
    x = torch.rand(3, 30, 8)
    logits = []
    with torch.no_grad():
        for x_t in x.unbind(1):
            out = net(x_t)
            logits.append(out[0] if isinstance(out, tuple) else out)
    _check_spikes(model, rec, x)
    torch.testing.assert_close(torch.stack(logits, 1), model(x).detach(), rtol=0, atol=0)


def test_norse_imports_the_recurrent_export_with_identical_spikes():
    norse = pytest.importorskip("norse.torch", reason="norse is not installed (bash benchmarks/install_peers.sh)")
    from norse.torch.module.lif_box import LIFBoxCell

    model = _net(recurrent=True).double()
    graph = export_nir(model, resistance="one")  # Norse's importer ignores R: τ/dt is folded into the weights
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = norse.from_nir(graph, dt=1e-4).double()  # Norse stores float32: compare in float64
    finally:
        logging.disable(logging.NOTSET)
    rec = _record(net, LIFBoxCell)
    x = torch.rand(3, 30, 8, dtype=torch.float64)
    state, logits = None, []
    with torch.no_grad():
        for x_t in x.unbind(1):
            y, state = net(x_t, state)
            logits.append(y)
    _check_spikes(model, rec, x)
    torch.testing.assert_close(torch.stack(logits, 1), model(x).detach(), rtol=0, atol=1e-6)  # float32 weights


def test_export_writes_the_documented_graph():
    model = _net(recurrent=True)
    g = export_nir(model)
    assert {"input", "fc0", "lif0.lif", "lif0.w_rec", "fc1", "lif1.lif", "readout", "output"} <= set(g.nodes)
    lif = g.nodes["lif1.lif"]
    decay = model.cells[1].decay.double().numpy()
    assert abs(1 - 1e-4 / lif.tau - decay).max() < 1e-12 and abs(lif.r - lif.tau / 1e-4).max() < 1e-9
    assert ("lif0.w_rec", "lif0.lif") in g.edges and abs(g.nodes["lif0.w_rec"].weight.diagonal()).max() == 0


def test_export_refuses_what_nir_cannot_hold():
    with pytest.raises(ValueError, match="mult_leak"):
        export_nir(DeepRNN([LIFCell(3, 4)], input_size=3, output_size=2))
    with pytest.raises(ValueError, match="adaptive"):
        export_nir(DeepRNN([ALIFCell(3, 4, reset="mult_leak")], input_size=3, output_size=2))
    with pytest.raises(TypeError, match="DeepRNN"):
        export_nir(LIFCell(3, 4))
    with pytest.raises(ValueError, match="resistance"):
        export_nir(_net(True), resistance="ohm")
