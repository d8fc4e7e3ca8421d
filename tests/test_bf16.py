"""bf16 as a deployable form (issue #23 item 5): real bf16 weights and compute, its storage counted in 16 bits,
timed beside the fp32 model, and refused by name where the CPU has no BF16 instructions or the checkpoint is not
a float model."""

from __future__ import annotations

import pytest
import torch

import engine.deploy.bf16
import engine.deploy.measure
from engine.core.context import RunContext
from engine.core.errors import ConfigError
from engine.deploy.bf16 import Bf16Runner, bf16_form, has_bf16
from engine.deploy.measure import ModelForm, measure
from engine.methods.tasks import run_task


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """cnn_s trained briefly on digits (bf16 must keep a trained model's accuracy, not a random one's)."""
    from engine.methods.train import TrainTask
    from engine.model.checkpoint import load_checkpoint
    from engine.model.train import TrainConfig

    out = str(tmp_path_factory.mktemp("bf16") / "cnn_s")
    run_task("train", TrainTask(dataset="digits", model="cnn_s", out=out, latency=False,
                                train=TrainConfig(epochs=2)), RunContext())
    model, _ = load_checkpoint(out)
    return model.eval(), out


def test_the_runner_computes_in_bf16_and_keeps_the_float_models_predictions(trained, digits):
    model, _ = trained
    runner = Bf16Runner(model)
    assert all(p.dtype == torch.bfloat16 for p in runner.parameters())
    x, y = digits.split("test").tensors()
    with torch.inference_mode():
        fp32, bf16 = model(x), runner(x)
    assert bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16)  # it really computed in another precision
    agree = (fp32.argmax(1) == bf16.argmax(1)).float().mean().item()
    assert agree > 0.97


def test_bf16_storage_is_half_of_fp32_without_scales(trained, digits, monkeypatch):
    model, _ = trained
    monkeypatch.setattr(engine.deploy.bf16, "has_bf16", lambda: True)
    form = bf16_form(model, ModelForm())
    m = measure(model, digits, form, latency=False)
    assert m.bits == 16.0
    assert m.size_bytes * 2 == m.size_fp32_bytes  # every parameter in 2 bytes, no per-group scales
    assert abs(m.file_bytes - m.size_fp32_bytes / 2) < 0.05 * m.size_fp32_bytes  # the bf16 safetensors
    assert "bf16" in m.backend


def test_refused_by_name_without_bf16_instructions(trained, monkeypatch):
    model, _ = trained
    monkeypatch.setattr(engine.deploy.bf16, "has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="AVX512-BF16 or AMX-BF16"):
        bf16_form(model, ModelForm())


def test_refused_for_int8_and_simulated_forms(trained, monkeypatch):
    model, _ = trained
    monkeypatch.setattr(engine.deploy.bf16, "has_bf16", lambda: True)
    with pytest.raises(ConfigError, match="already quantized"):
        bf16_form(model, ModelForm(runner=model, backend="int8 torch.ao FX (x86)"))
    with pytest.raises(ConfigError, match="simulated"):
        bf16_form(model, ModelForm(simulated=True))


@pytest.mark.skipif(not has_bf16(), reason="this CPU has no AVX512-BF16 or AMX-BF16: bf16 is refused here")
def test_measure_times_bf16_beside_fp32(trained):
    _, checkpoint = trained
    points = run_task("measure", {"checkpoint": checkpoint, "runtime": ["torch", "torch_bf16"]}, RunContext())
    fp32, bf16 = (p.measurement for p in points)
    assert (fp32.runtime, bf16.runtime) == ("torch", "torch_bf16")
    assert bf16.bits == 16.0 and fp32.bits == 32.0
    assert abs(bf16.accuracy - fp32.accuracy) < 0.03
    # the bf16 form was timed in the same rounds as the fp32 model: a speed-up with its interval
    assert bf16.speedup_lo_b1 <= bf16.speedup_b1 <= bf16.speedup_hi_b1
    assert bf16.speedup_b32 is not None and bf16.machine == fp32.machine
