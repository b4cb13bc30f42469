"""The gate-saturation guard (issue 16, lsc/activity.py): LSC must not reach a radius by saturating a gated cell's
gates; the gated cells' ``gate_preactivations`` / ``shift_gate_biases_`` capability it works through."""
from __future__ import annotations

import json

import pytest
import torch

from stablernn.cells import GRUCell, LSTMCell
from stablernn.cells.ligru import LiGRUCell
from stablernn.data import DataConfig, load_task
from stablernn.lsc import LSCReport, lsc_pretrain
from stablernn.lsc.activity import (
    GATE_SATURATION_LIMIT,
    SATURATED_DERIVATIVE,
    SATURATION_Z,
    ActivityReport,
    HasGates,
    gate_saturation,
    guard_activity,
    recentre_gates_,
)
from stablernn.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def digits():
    return load_task(DataConfig(task="digits", batch_size=32))


def _x(digits, n: int = 16):
    return [next(iter(digits.train))[0][:n]]


def _lstm(digits, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell="lstm", layers=2, width=12), digits.info)


def test_saturation_threshold_is_where_the_sigmoid_derivative_is_001():
    s = torch.sigmoid(torch.tensor(SATURATION_Z, dtype=torch.float64))
    assert float(s * (1 - s)) == pytest.approx(SATURATED_DERIVATIVE, rel=1e-9)


@pytest.mark.parametrize("cell, gates", [(LSTMCell(3, 5), 3), (GRUCell(3, 5), 2), (LiGRUCell(3, 5), 1),
                                         (LiGRUCell(3, 5, stable=True), 1)])
def test_gate_preactivations_shape_and_bias_shift_moves_them_exactly(cell, gates):
    assert isinstance(cell, HasGates)
    cell.eval()
    x, st = torch.randn(4, 3), cell.initial_state(4)
    st = cell(x, st)[1]  # a non-zero state
    z = cell.gate_preactivations(x, st)
    assert z.shape == (4, gates, 5)
    delta = torch.randn(gates, 5)
    cell.shift_gate_biases_(delta)
    torch.testing.assert_close(cell.gate_preactivations(x, st), z + delta)
    with pytest.raises(ValueError, match="gate bias shift must have shape"):
        cell.shift_gate_biases_(torch.zeros(gates + 1, 5))


def test_lstm_and_gru_gate_preactivations_are_the_gates_forward_uses():
    lstm, gru = LSTMCell(3, 4), GRUCell(3, 4)
    x = torch.randn(2, 3)
    for cell in (lstm, gru):
        st = cell(x, cell.initial_state(2))[1]  # a non-zero state
        a = x @ cell.weight_ih.T + cell.bias_ih + st.h @ cell.weight_hh.T + cell.bias_hh  # nn.LSTM / nn.GRU layout
        blocks = a.unflatten(-1, (-1, cell.hidden_size))
        torch.testing.assert_close(cell.gate_preactivations(x, st), blocks[:, list(cell.SIGMOID_GATES)])
    st = lstm(x, lstm.initial_state(2))[1]
    i, f, o = torch.sigmoid(lstm.gate_preactivations(x, st)).unbind(1)
    g = (x @ lstm.weight_ih.T + lstm.bias_ih + st.h @ lstm.weight_hh.T + lstm.bias_hh)[:, 8:12]
    h, new = lstm(x, st)
    torch.testing.assert_close(new.c, f * st.c + i * torch.tanh(g))
    torch.testing.assert_close(h, o * torch.tanh(new.c))


def test_gate_saturation_none_for_ungated_zero_for_fresh_one_for_pinned(digits):
    x = _x(digits)
    tanh = build_model(ModelConfig(cell="tanh_rnn", layers=2, width=8), digits.info)
    assert gate_saturation(tanh, x) == [None, None]
    m = _lstm(digits)
    assert gate_saturation(m, x) == [0.0, 0.0]
    with torch.no_grad():
        m.cells[0].bias_ih.add_(20.0)  # every gate of layer 0 pinned open (the candidate g too, not counted)
    sat = gate_saturation(m, x)
    assert sat[0] == 1.0 and sat[1] == 0.0


def test_guard_recentres_a_layer_lsc_saturated_and_says_so(digits):
    x = _x(digits)
    m = _lstm(digits)
    before = gate_saturation(m, x)
    with torch.no_grad():
        m.cells[1].bias_ih.add_(10.0)  # as if LSC had pushed layer 1's gates into saturation
    w0 = m.cells[0].bias_ih.clone()
    rep = guard_activity(m, x, (0.01, 0.9), [None, None], gates_before=before)
    g = rep.gates
    assert g["after_lsc"][1] > GATE_SATURATION_LIMIT and g["saturated"] == [1] and g["recentred"] == [1]
    assert g["final"][1] <= GATE_SATURATION_LIMIT and gate_saturation(m, x)[1] == g["final"][1]
    torch.testing.assert_close(m.cells[0].bias_ih, w0)  # the healthy layer is untouched
    assert "LSC saturated the gates of layer(s) [1]" in rep.summary()
    assert ActivityReport(**json.loads(json.dumps(rep.to_json()))).gates == g


def test_guard_leaves_a_normal_lstm_and_a_users_own_saturated_start_alone(digits):
    x = _x(digits)
    m = _lstm(digits)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rep = guard_activity(m, x, (0.01, 0.9), [None, None], gates_before=gate_saturation(m, x))
    assert rep.gates["saturated"] == [] and rep.gates["recentred"] == []
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, state[k])
    with torch.no_grad():  # saturated before LSC already (the user's init): reported, not changed
        m.cells[0].bias_ih.add_(10.0)
    before = gate_saturation(m, x)
    rep = guard_activity(m, x, (0.01, 0.9), [None, None], gates_before=before)
    assert rep.gates["after_lsc"][0] > GATE_SATURATION_LIMIT and rep.gates["recentred"] == []
    assert guard_activity(m, x, None, [None, None], gates_before=before) is None  # guard off


def test_lsc_reports_gate_saturation_for_a_gated_net(digits):
    x = _x(digits)
    m = _lstm(digits)
    report = lsc_pretrain(m, x, target=0.5, max_steps=4, progress=False, batch_size=16, measure_steps=2)
    g = report.activity["gates"]
    assert len(g["before"]) == 2 and all(0.0 <= v <= 1.0 for v in g["after_lsc"])
    assert "saturated gate units" in report.table()
    assert LSCReport.from_json(json.loads(json.dumps(report.to_json()))).activity == report.activity
    off = lsc_pretrain(_lstm(digits), x, target=0.5, max_steps=2, progress=False, batch_size=16, measure_steps=2,
                       activity=None)
    assert off.activity is None


def test_recentre_rejects_a_layer_without_gates(digits):
    m = build_model(ModelConfig(cell="tanh_rnn", layers=1, width=8), digits.info)
    with pytest.raises(ValueError, match="has no gates to recentre"):
        recentre_gates_(m, _x(digits), [0])
