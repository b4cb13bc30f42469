"""DeepRNN / FFN / ModelConfig / build_model."""
from __future__ import annotations

import pytest
import torch

from stablernn.cells import GRUCell, LIFCell, LSTMCell
from stablernn.models import CELL_KINDS, FFN, DeepRNN, ModelConfig, build_model


@pytest.mark.parametrize("cell", [c for c in CELL_KINDS if c != "ffn"])
def test_every_cell_kind_builds_and_runs(cell):
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=cell, layers=2, width=12), input_size=5, output_size=3, seq_len=7)
    x = torch.randn(4, 7, 5)
    out = model.run(x)
    assert out.logits.shape == (4, 7, 3)
    assert len(out.states) == 2 and len(out.layer_outputs) == 2
    assert out.layer_outputs[1].shape == (4, 7, 12)


@pytest.mark.parametrize("cell", [c for c in CELL_KINDS if c != "ffn"])
def test_step_matches_run(cell):
    """The one stepping path (DeepRNN.step) and the whole-sequence path (run: fused kernels, scans) agree."""
    torch.manual_seed(0)
    extra = {"threshold": 0.3} if cell in ("lif", "alif") else {}
    model = build_model(ModelConfig(cell=cell, layers=3, width=10, **extra), input_size=4, output_size=2)
    model.double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    states = model.initial_states(2, dtype=torch.float64)
    logits = []
    for x_t in x.unbind(1):
        lt, states, per_layer = model.step(x_t, states)
        logits.append(lt)
        assert len(per_layer) == 3
    torch.testing.assert_close(torch.stack(logits, 1), model(x))


def test_states_carry_across_calls():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm", layers=2, width=8), input_size=3, output_size=2)
    x = torch.randn(2, 10, 3)
    whole = model(x)
    first = model.run(x[:, :4])
    second = model.run(x[:, 4:], first.states)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole)


def test_tied_embedding_readout_and_residual():
    torch.manual_seed(0)
    cfg = ModelConfig(cell="gru", layers=3, width=16, readout="tied", residual=True)
    model = build_model(cfg, input_size=30, output_size=30, tokens=True)
    ids = torch.randint(0, 30, (2, 5))
    logits = model(ids)
    assert logits.shape == (2, 5, 30)
    assert model.readout is None  # tied: the embedding matrix is the readout
    h = model.run(ids).layer_outputs[-1]
    torch.testing.assert_close(logits, h @ model.encoder.weight.T + model.readout_bias)


def test_linear_encoder_and_mixed_cells():
    model = DeepRNN([LSTMCell(6, 8), LIFCell(8, 8), GRUCell(8, 4)], input_size=3, output_size=2, encoder="linear")
    assert model(torch.randn(2, 5, 3)).shape == (2, 5, 2)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", layers=2, width=8, dropout=0.5), input_size=3, output_size=2)
    x = torch.randn(2, 5, 3)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_bad_inputs_are_clear():
    model = build_model(ModelConfig(cell="lstm", layers=1, width=8), input_size=3, output_size=2)
    with pytest.raises(ValueError, match=r"input has 4 features per step but the model expects 3"):
        model(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="layer 1 has input_size 5 but layer 0 outputs 8"):
        DeepRNN([LSTMCell(3, 8), LSTMCell(5, 8)], input_size=3, output_size=2)
    with pytest.raises(ValueError, match="identity"):
        DeepRNN([LSTMCell(4, 8)], input_size=3, output_size=2)
    with pytest.raises(ValueError, match="readout='tied' needs encoder='embedding'"):
        DeepRNN([LSTMCell(3, 8)], input_size=3, output_size=2, readout="tied")


@pytest.mark.parametrize("field,value,msg", [
    ("cell", "transformer", "unknown cell 'transformer'; choose one of lstm"),
    ("width", -1, "width must be a positive integer"),
    ("layers", 0, "layers must be a positive integer"),
    ("reset", "hard", "unknown reset 'hard'; choose one of subtract"),
    ("surrogate", "magic", "unknown surrogate 'magic'; choose one of"),
    ("dropout", 1.5, r"dropout must be in \[0, 1\)"),
    ("tau", 0.0, "tau must be > 0"),
])
def test_model_config_validation(field, value, msg):
    with pytest.raises(ValueError, match=msg):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("init", ["glorot", "he", "orthogonal"])
def test_ffn_layers_and_init(init):
    torch.manual_seed(0)
    ffn = FFN(30, 128, input_size=64, output_size=10, activation="relu", init=init)
    x = torch.randn(256, 64)
    hs = ffn.hidden(x)
    assert len(hs) == 30 and hs[-1].shape == (256, 128)
    assert ffn(x).shape == (256, 10)
    torch.testing.assert_close(ffn.layer_forward(3, hs[2]), hs[3])
    w = ffn.layers[5].weight
    if init == "he":
        assert w.var().item() == pytest.approx(2 / 128, rel=0.1)
    elif init == "glorot":
        assert w.var().item() == pytest.approx(2 / 256, rel=0.1)
    else:
        torch.testing.assert_close(w @ w.T, torch.eye(128), atol=1e-4, rtol=0)


def test_ffn_from_config_flattens_sequences():
    ffn = build_model(ModelConfig(cell="ffn", layers=3, width=16, activation="tanh"), input_size=8,
                      output_size=10, seq_len=8)
    assert ffn(torch.randn(5, 8, 8)).shape == (5, 10)


def test_conditions_config_is_validated():
    with pytest.raises(ValueError, match=r"unknown condition\(s\) \['V'\]"):
        ModelConfig(cell="lif", conditions=("I", "V"))
    with pytest.raises(ValueError, match="conditions apply to spiking cells"):
        ModelConfig(cell="gru", conditions=("I",))
