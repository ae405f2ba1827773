"""How a model runs: the documented rules for channels-last and inference precision, and a
runtime's predictions against plain fp32 ones."""

import pytest
import torch

from hmsa.evaluation.grid import Setting, evaluate_grid, predict_grid
from hmsa.runtime import device as rt_mod
from hmsa.runtime.device import Runtime, inference_dtype, runtime, uses_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)  # device objects only: nothing moves to CUDA


def test_channels_last_auto_follows_the_device_and_onednn(monkeypatch):
    assert uses_channels_last("auto", CUDA)
    assert uses_channels_last("on", CPU) and not uses_channels_last("off", CUDA)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert uses_channels_last("auto", CPU)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not uses_channels_last("auto", CPU)


def test_inference_precision_auto_is_bf16_only_where_the_hardware_runs_it(monkeypatch):
    monkeypatch.setattr(rt_mod, "cpu_has_native_bf16", lambda: True)
    assert inference_dtype("auto", CPU) is torch.bfloat16
    monkeypatch.setattr(rt_mod, "cpu_has_native_bf16", lambda: False)
    assert inference_dtype("auto", CPU) is None  # emulated bf16 is slower than fp32
    assert inference_dtype("fp32", CUDA) is None and inference_dtype("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert inference_dtype("auto", CUDA) is torch.float16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        inference_dtype("fp16", CPU)
    with pytest.raises(ValueError, match="unknown value 'half'"):
        inference_dtype("half", CPU)


def test_runtime_puts_model_and_images_in_its_layout():
    rt = runtime("cpu", "fp32", "on")
    model = rt.model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    assert not model.training and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert rt.images(torch.rand(1, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    assert rt.describe() == "cpu, channels-last, fp32"


def test_bf16_channels_last_scores_nearly_as_fp32_does(tiny_model):
    """The same model scored by the fp32 runtime and by channels-last bf16: the bf16 logits
    are bf16 and close to fp32's, every pixel is counted once, few predictions move."""
    model = tiny_model("hmsa")
    images, labels = torch.rand(2, 3, 48, 80), torch.randint(0, model.cfg.num_classes, (2, 48, 80))
    setting = Setting("hierarchical", (0.5, 1.0, 2.0), True)
    fast_rt = Runtime(CPU, True, torch.bfloat16)
    fast_model = fast_rt.model(tiny_model("hmsa"))
    with fast_rt.autocast():
        logits = predict_grid(fast_model, fast_rt.images(images), [setting])[setting]
    exact = predict_grid(model, images, [setting])[setting]
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), exact, atol=0.1, rtol=0.05)
    plain = evaluate_grid(model, [(images, labels)], [setting], CPU).confusions[setting]
    fast = evaluate_grid(fast_model, [(images, labels)], [setting], fast_rt).confusions[setting]
    assert plain.sum() == fast.sum() == labels.numel()
    assert abs(plain.sum(0) - fast.sum(0)).sum() / 2 <= 0.05 * labels.numel()  # predictions that moved
