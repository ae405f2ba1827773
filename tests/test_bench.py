import json

from hmsa.bench.__main__ import main

from .conftest import PROJECT_ROOT


def test_bench_writes_figures_and_keeps_others(tmp_path, capsys):
    out = tmp_path / "benchmarks.json"
    out.write_text(json.dumps({"train_images_per_s": {"value": 1.0, "unit": "images/s", "conditions": "x"}}))
    main(["--suite", "data", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures["train_images_per_s"]["value"] == 1.0  # another suite's figure survives
    for key in ("synthcity_images_per_s", "ingest_images_per_s", "ingest_parallel_speedup"):
        assert figures[key]["value"] > 0
    assert "ingest_images_per_s" in capsys.readouterr().out


def test_training_bench_measures_memory_ratios(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the bench reads conf/base from the project root
    out = tmp_path / "benchmarks.json"
    main(["--suite", "training", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    # explicit attention on three scales saves more for backward than HMSA on two, HMSA more than single
    assert figures["train_memory_ratio_explicit_over_hmsa"]["value"] > 1.5
    assert 1.0 < figures["train_memory_ratio_hmsa_over_single"]["value"] < 2.0
    assert figures["train_images_per_s"]["value"] > 0
    for kind in ("hmsa", "explicit"):  # conf/claims' memory format against contiguous, side by side
        ratio = figures[f"train_time_ratio_channels_last_over_contiguous_{kind}"]
        assert ratio["value"] > 0 and "bf16 autocast" in ratio["conditions"]
        # the loss at the label size: a part of the step, and what its checkpoint costs
        assert 0 < figures[f"train_loss_share_{kind}_crop64"]["value"] < 1
        assert figures[f"train_time_ratio_loss_checkpoint_{kind}_crop64"]["value"] > 0
        assert figures[f"train_time_ratio_aux_loss_at_logits_{kind}_crop64"]["value"] > 0
    # the project's loop against a bare PyTorch loop on the same data, and the loader layouts
    assert figures["train_loop_overhead"]["value"] > 0 and "bare" in figures["train_loop_overhead"]["conditions"]
    assert figures["train_time_ratio_loader_workers"]["value"] > 0
    assert figures["train_time_ratio_hmsa_over_single"]["value"] > 0


def test_loss_bench_compares_the_same_loss_with_and_without_its_checkpoint():
    import torch

    from hmsa.bench.training import _leaves
    from hmsa.models import ModelConfig, build_model
    from hmsa.models.loss import SegmentationLoss

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="explicit", trunk="resnet18", output_stride=16, num_classes=5, aspp_channels=8,
                                    low_level_channels=8, decoder_channels=8, aux_channels=8, attn_channels=8)).train()
    images, target = torch.rand(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    outputs = model(images)
    first, second = _leaves(outputs), _leaves(outputs)
    checkpointed, plain = SegmentationLoss()(first, target)["total"], SegmentationLoss(recompute=False)(second, target)["total"]
    assert torch.allclose(checkpointed, plain)
    checkpointed.backward()
    plain.backward()
    grads = [(a.logits.grad, b.logits.grad) for a, b in zip(first["joint"].outputs, second["joint"].outputs)]
    assert grads and all(a is not None and torch.allclose(a, b, atol=1e-6) for a, b in grads)


def test_autolabel_bench_reports_throughput_and_io_share(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    out = tmp_path / "benchmarks.json"
    main(["--suite", "autolabel", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    assert figures["autolabel_images_per_s"]["value"] > 0
    assert 0 < figures["autolabel_io_share"]["value"] < 1


def test_evaluation_bench_reports_fusion_overhead(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    out = tmp_path / "benchmarks.json"
    main(["--suite", "evaluation", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    # timings on a shared machine: only that each figure was measured, not its size (make bench reports it)
    for key in ("ms_inference_overhead", "hmsa_over_avg_inference_time", "eval_images_per_s"):
        assert figures[key]["value"] > 0 and figures[key]["unit"]
    assert "ms)" in figures["ms_inference_overhead"]["conditions"]


def test_models_bench_counts_parameters_and_flops(tmp_path):
    out = tmp_path / "benchmarks.json"
    main(["--suite", "models", "--quick", "--out", str(out)])
    figures = json.loads(out.read_text())
    # the paper's HRNet-W48 + OCR + attention head: about 72 M parameters (the authors' log says 72.2 M)
    assert 70 < figures["params_M/hrnet_w48_ocr"]["value"] < 74
    assert figures["params_M/hrnet_w18_small_ocr"]["value"] < figures["params_M/resnet50_deeplabv3plus_os8"]["value"]
    assert figures["gflops/hrnet_w48_ocr"]["value"] > 2 * figures["gflops/hrnet_w18_small_ocr"]["value"]


def test_model_flops_grow_with_the_pixels():
    from hmsa.bench.models import PAIRS, size_of

    for fields in (PAIRS["hrnet_w18_small_ocr"], PAIRS["resnet18_deeplabv3plus_os16"]):
        small, large = size_of(fields, (64, 128))[1], size_of(fields, (128, 256))[1]
        assert 3.9 < large / small < 4.1  # fully convolutional (OCR's relation is linear in pixels too)
