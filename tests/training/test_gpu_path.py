"""The CUDA code path, checked without a GPU: what each setting turns on, decided from the
device, and the OCR head under mixed precision."""

import pytest
import torch

from hmsa.models.config import ModelConfig
from hmsa.models.segmenter import build_model
from hmsa.training.config import TrainerConfig
from hmsa.training.loop import _precision, for_device

CUDA = torch.device("cuda", 0)  # a device object only: nothing is moved there
SMALL = dict(trunk="hrnet_w18_small", output_stride=4, head="ocr", ocr_mid_channels=16, ocr_key_channels=8,
             attn_channels=8)


def _sync_bn(model) -> int:
    return sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


@pytest.fixture
def cudnn_benchmark():
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.benchmark = before


def test_cuda_under_ddp_syncs_batchnorm_uses_channels_last_and_autotunes(cudnn_benchmark):
    model = for_device(build_model(ModelConfig(**SMALL)), TrainerConfig(), CUDA, world=2)
    assert _sync_bn(model) > 0 and not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.backends.cudnn.benchmark


def test_one_gpu_keeps_plain_batchnorm_and_the_cpu_takes_only_channels_last_by_its_rule(cudnn_benchmark, monkeypatch):
    assert _sync_bn(for_device(build_model(ModelConfig(**SMALL)), TrainerConfig(), CUDA, world=1)) == 0
    torch.backends.cudnn.benchmark = False
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    model = for_device(build_model(ModelConfig(**SMALL)), TrainerConfig(), cpu, world=2)
    assert _sync_bn(model) == 0 and not torch.backends.cudnn.benchmark
    assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # oneDNN: channels-last
    model = for_device(build_model(ModelConfig(**SMALL)), TrainerConfig(channels_last="off"), cpu, world=1)
    assert not model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    model = for_device(build_model(ModelConfig(**SMALL)), TrainerConfig(), cpu, world=1)
    assert not model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_mixed_precision_is_picked_from_the_device(monkeypatch):
    cpu = torch.device("cpu")
    assert _precision(TrainerConfig(precision="auto"), cpu) is None  # CPU: fp32 unless bf16 is asked for
    assert _precision(TrainerConfig(precision="bf16"), cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="trainer.precision fp16 needs a CUDA device"):
        _precision(TrainerConfig(precision="fp16"), cpu)
    assert _precision(TrainerConfig(precision="fp32"), CUDA) is None
    assert _precision(TrainerConfig(precision="fp16"), CUDA) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _precision(TrainerConfig(precision="auto"), CUDA) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _precision(TrainerConfig(precision="auto"), CUDA) is torch.float16  # then GradScaler is on


def test_hrnet_ocr_hmsa_runs_under_autocast():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, num_classes=5)).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        full = model.predict(images, scales=(0.5, 1.0))["logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.predict(images, scales=(0.5, 1.0))["logits"]
    assert torch.isfinite(mixed).all()
    assert (mixed.float().argmax(1) == full.argmax(1)).float().mean() > 0.9
