"""The pure quantization maths: it rounds exactly as PyTorch's fake-quant ops, and error falls with bits."""

from __future__ import annotations

import pytest
import torch

from engine.core.errors import ConfigError
from engine.deploy import qmaths as maths


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_per_tensor_matches_torch(bits, symmetric):
    x = torch.randn(64, 32, 3, 3) * 2 + 0.3
    qmin, qmax = maths.int_range(bits, symmetric)
    scale, zero_point = maths.scale_zero_point(*maths.minmax_range(x), bits, symmetric)
    ours = maths.fake_quantize(x, scale, zero_point, qmin, qmax)
    theirs = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), qmin, qmax)
    assert torch.equal(ours, theirs)
    assert ours.unique().numel() <= 2**bits


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_per_channel_matches_torch(bits, symmetric):
    x = torch.randn(16, 8, 3, 3) * torch.linspace(0.1, 5, 16).view(-1, 1, 1, 1)
    qmin, qmax = maths.int_range(bits, symmetric)
    scale, zero_point = maths.scale_zero_point(*maths.minmax_range(x, axis=0), bits, symmetric)
    ours = maths.fake_quantize(x, scale, zero_point, qmin, qmax, axis=0)
    theirs = torch.fake_quantize_per_channel_affine(x, scale, zero_point.int(), 0, qmin, qmax)
    assert torch.equal(ours, theirs)


def test_quantize_tensor_matches_torch_on_a_linear_weight_with_a_shifted_range():
    w = torch.rand(10, 40) * 3 - 0.5  # mostly positive: asymmetric quantization needs a zero point
    qmin, qmax = maths.int_range(5, False)
    scale, zp = maths.scale_zero_point(*maths.minmax_range(w, 0), 5, False)
    expected = torch.fake_quantize_per_channel_affine(w, scale, zp.int(), 0, qmin, qmax)
    ours = maths.quantize_tensor(w, 5, symmetric=False, per_channel=True)
    assert torch.equal(ours, expected)
    assert (zp != 0).all()


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_reconstruction_error_falls_as_bits_grow(per_channel, symmetric):
    w = torch.randn(32, 16, 3, 3)
    errors = [maths.reconstruction_error(w, maths.quantize_tensor(w, b, symmetric=symmetric,
                                                                  per_channel=per_channel))
              for b in (2, 3, 4, 5, 6, 7, 8, 12, 16)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-8 and errors[0] > 1e-2
    assert torch.equal(maths.quantize_tensor(w, 32), w)  # 32 bits is float


def test_per_channel_is_more_accurate_than_per_tensor_when_channels_differ_in_scale():
    w = torch.randn(16, 64) * torch.logspace(-2, 0, 16).view(-1, 1)
    per_tensor = maths.reconstruction_error(w, maths.quantize_tensor(w, 4, per_channel=False))
    per_channel = maths.reconstruction_error(w, maths.quantize_tensor(w, 4, per_channel=True))
    assert per_channel < per_tensor / 2


def test_percentile_clips_an_outlier_and_mse_is_no_worse_than_minmax():
    x = torch.randn(10_000)
    x[0] = 100.0
    lo, hi = maths.percentile_range(x, 99.9)
    assert hi < 10 and lo > -10
    minmax = maths.reconstruction_error(x, maths.quantize_tensor(x, 4, observer="minmax"))
    mse = maths.reconstruction_error(x, maths.quantize_tensor(x, 4, observer="mse"))
    assert mse < minmax


def test_symmetric_two_bits_is_ternary():
    w = torch.randn(1000)
    assert set(maths.quantize_tensor(w, 2, per_channel=False).unique().tolist()) == {
        -w.abs().max().item(), 0.0, w.abs().max().item()}


def test_the_straight_through_estimator_passes_gradients_inside_the_range():
    w = torch.randn(8, 4, requires_grad=True)
    out = maths.fake_quantize_ste(w, 4)
    assert torch.allclose(out.detach(), maths.quantize_tensor(w.detach(), 4))
    out.sum().backward()
    assert torch.allclose(w.grad, torch.ones_like(w))  # min-max ranges: nothing saturates, gradient is 1


def test_the_straight_through_estimator_stops_gradients_where_the_grid_saturates():
    w = torch.randn(1, 1000)
    w[0, 0] = 50.0  # the percentile observer clips this outlier
    w.requires_grad_(True)
    maths.fake_quantize_ste(w, 4, observer="percentile", percentile=99.0).sum().backward()
    assert w.grad[0, 0] == 0 and w.grad[0, 1:].mean() > 0.9


@pytest.mark.parametrize("bits", [1, 33, 0, -4, 2.5, "8", True])
def test_bit_widths_outside_2_to_32_are_refused(bits):
    with pytest.raises(ConfigError, match=r"bits must be a whole number of bits in \[2, 32\]"):
        maths.quantize_tensor(torch.randn(4, 4), bits)


def test_average_bits_weights_layers_by_size():
    assert maths.average_bits({"a": 8, "b": 2}, {"a": 100, "b": 300}) == pytest.approx(3.5)
