"""measure() on a hand-built model whose every number can be worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.core.point import MEASUREMENT_FIELDS
from engine.deploy.measure import ModelForm, measure, storage, tensor_bytes
from engine.model.data import Dataset, Split


def _tiny_data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(40, 1, 4, 4, generator=g), torch.arange(40) % 3, (0.0,), (1.0,), 1.0)
    return Dataset("tiny", split, split, split, 3, (1, 4, 4), ["a", "b", "c"])


def _tiny_model() -> nn.Module:
    # conv: 2x1x3x3 weights + 2 bias = 20; linear: 3x8 weights + 3 bias = 27; 47 parameters
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))


def test_dense_fp32_counts_are_exact():
    m = measure(_tiny_model(), _tiny_data(), latency=False)
    assert m.params_total == 47
    assert m.size_fp32_bytes == m.size_bytes == 47 * 4
    # conv: 8 outputs x 9 MACs = 72; linear: 8 x 3 = 24
    assert m.macs == 96
    assert m.sparsity == 0.0 and m.bits == 32.0
    assert m.latency_ms_b1 is None and not m.simulated
    assert 0.0 <= m.accuracy <= 1.0 and m.backend == "fp32 eager cpu"


def test_sparsity_and_size_use_the_cheaper_storage():
    model = _tiny_model()
    with torch.no_grad():
        model[3].weight[:, :6] = 0  # 18 of the linear's 24 weights are zero
    st = storage(model)
    assert st["sparsity"] == pytest.approx(18 / 42)
    assert st["params_nonzero"] == 47 - 18
    # linear: dense 96 B; sparse 6 x 4 B + min(bitmap 3 B, coords 24 B) = 27 B
    assert tensor_bytes(24, 6, 32, 1) == 27
    assert st["size_bytes"] == 18 * 4 + 27 + 5 * 4


def test_bits_and_quantization_params_count():
    st = storage(_tiny_model(), weight_bits={"0": 8, "3": 4}, quant_groups={"0": 2})
    assert st["bits"] == pytest.approx((8 * 18 + 4 * 24) / 42)
    # conv: 18 B + 2 groups x 8 B; linear: 12 B + 1 group x 8 B; biases 5 x 4 B
    assert st["size_bytes"] == 18 + 16 + 12 + 8 + 20


def test_latency_is_timed_on_the_runner_and_simulated_is_said():
    data = _tiny_data()
    calls = []

    class Runner(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    model = _tiny_model()
    m = measure(model, data, ModelForm(runner=Runner(model), backend="fp32 eager (simulated int4)", simulated=True,
                                       weight_bits=4, artifact=b"12345"))
    assert 32 in calls and 1 in calls  # both batch sizes ran on the runner
    assert m.latency_ms_b1 > 0 and m.latency_p90_ms_b1 >= m.latency_ms_b1
    assert m.latency_ms_b32 > 0 and m.simulated and m.file_bytes == 5 and m.bits == 4.0
    assert set(m.to_dict()) == set(MEASUREMENT_FIELDS)  # the columns and `confusion` (stored in extra)
