import pytest
import torch

from hmsa.models import fusion
from hmsa.models.fusion import Fused, ScaleOutput
from hmsa.models.heads import resize
from hmsa.models.loss import SegmentationLoss, class_balanced_weights, subsample


def test_scale_one_gives_exactly_the_single_scale_result(tiny_model):
    model = tiny_model("hmsa")
    x = torch.rand(1, 3, 64, 96)
    single = resize(model.run_scale(x, 1.0)["logits"], (64, 96))
    assert torch.equal(model.predict(x, scales=[1.0])["logits"], single)


def test_order_of_scales_does_not_matter(tiny_model):
    model = tiny_model("hmsa")
    x = torch.rand(1, 3, 64, 96)
    a = model.predict(x, scales=[0.5, 1.0, 2.0])["logits"]
    b = model.predict(x, scales=[2.0, 0.5, 1.0])["logits"]
    assert torch.equal(a, b)


def test_unseen_scales_work(tiny_model):
    model = tiny_model("hmsa")
    x = torch.rand(2, 3, 64, 96)
    out = model.predict(x, scales=[0.25, 1.0, 1.5])
    assert out["logits"].shape == (2, 19, 64, 96) and torch.isfinite(out["logits"]).all()
    assert set(out["attention"]) == {0.25, 1.0, 1.5}
    assert all(a.shape == (2, 1, 64, 96) and 0 <= a.min() and a.max() <= 1 for a in out["attention"].values())


@pytest.mark.parametrize("size", [(61, 97), (33, 50), (17, 23)])
def test_sizes_not_divisible_by_the_output_stride(tiny_model, size):
    for kind in ("hmsa", "single", "explicit"):
        model = tiny_model(kind).train()
        out = model(torch.rand(2, 3, *size))
        loss = SegmentationLoss()(out, torch.randint(0, 19, (2, *size)))["total"]
        assert torch.isfinite(loss)
        loss.backward()
        pred = model.eval().predict(torch.rand(1, 3, *size), scales=[0.5, 1.0, 2.0])
        assert pred["logits"].shape == (1, 19, *size)


def test_gradients_reach_the_attention_head(tiny_model):
    model = tiny_model("hmsa").train()
    out = model(torch.rand(2, 3, 64, 96))
    loss = SegmentationLoss()(out, torch.randint(0, 19, (2, 64, 96)))
    loss["total"].backward()
    grads = [p.grad for p in model.attn_head.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_training_outputs_per_kind(tiny_model):
    x = torch.rand(2, 3, 64, 96)
    hmsa = tiny_model("hmsa").train()(x)
    assert set(hmsa["per_scale"]) == {0.5, 1.0} and set(hmsa["attention"]) == {0.5, 1.0}
    single = tiny_model("single").train()(x)
    assert single["per_scale"] == {} and single["attention"] == {}
    explicit = tiny_model("explicit").train()(x)
    assert set(explicit["per_scale"]) == {0.5, 1.0, 2.0}


def test_hmsa_joint_is_the_blend_of_its_two_scales(tiny_model):
    model = tiny_model("hmsa").train()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 96)
    model.eval()  # BN in eval so that separate passes agree with the joint pass
    joint = model(x)["joint"].logits()
    lo, hi = model.run_scale(x, 0.5), model.run_scale(x, 1.0)
    # section 3: U(a * p_0.5) + (1 - U(a)) * p_1.0, each first at its own scale's input size
    size, lo_size = x.shape[-2:], (32, 48)
    a, p_lo = resize(lo["attn"], lo_size), resize(lo["logits"], lo_size)
    blend = resize(a * p_lo, size) + (1 - resize(a, size)) * resize(hi["logits"], size)
    assert joint.shape[-2:] == size  # fused at the crop size
    assert torch.allclose(joint, blend, atol=1e-5)
    assert not torch.allclose(joint, resize(a * p_lo, size))  # the 1.0 pass contributes


def test_flip_averages_the_mirrored_prediction(tiny_model):
    model = tiny_model("hmsa")
    x = torch.rand(1, 3, 64, 96)
    plain = model.predict(x, scales=[0.5, 1.0])["logits"]
    mirrored = model.predict(x.flip(-1), scales=[0.5, 1.0])["logits"].flip(-1)
    assert torch.allclose(model.predict(x, scales=[0.5, 1.0], flip=True)["logits"], (plain + mirrored) / 2, atol=1e-6)


def test_fusion_rules_per_model_kind(tiny_model):
    x = torch.rand(1, 3, 32, 48)
    with pytest.raises(ValueError, match="needs an HMSA model"):
        tiny_model("single").predict(x, scales=[0.5, 1.0], fusion_rule="hierarchical")
    with pytest.raises(ValueError, match="only on the scales it was trained on"):
        tiny_model("explicit").predict(x, scales=[1.0, 2.0])
    with pytest.raises(ValueError, match="1.0 must be in the list"):
        tiny_model("hmsa").predict(x, scales=[0.5, 2.0])
    for rule in ("average", "max"):
        assert tiny_model("hmsa").predict(x, scales=[0.5, 1.0], fusion_rule=rule)["logits"].shape == (1, 19, 32, 48)


def test_loss_parts_and_weights():
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0, 0] = 255
    logits = torch.randn(1, 3, 4, 4)
    out = {"joint": logits, "aux": logits * 2, "per_scale": {0.5: logits * 3, 1.0: logits}}
    parts = SegmentationLoss(aux_weight=0.4, scale_weight=0.05)(out, target)
    ce = torch.nn.functional.cross_entropy
    expected = ce(logits, target, ignore_index=255) + 0.4 * ce(logits * 2, target, ignore_index=255) + 0.05 * (
        ce(logits * 3, target, ignore_index=255) + ce(logits, target, ignore_index=255))
    assert torch.allclose(parts["total"], expected)


def test_class_balanced_weights():
    w = class_balanced_weights([100, 10, 1, 0], power=1.0)
    assert w[1] == pytest.approx(1.0) and w[0] == pytest.approx(0.1) and w[2] == pytest.approx(10.0) and w[3] == 0


def test_checkpointed_loss_equals_plain_upsampled_cross_entropy():
    torch.manual_seed(0)
    target = torch.randint(0, 5, (2, 32, 48))
    target[:, :4] = 255
    weights = torch.rand(5)
    low = torch.randn(2, 5, 8, 12, requires_grad=True)
    out = {"joint": low, "aux": low[:, :, ::2, ::2] * 0.5, "per_scale": {}}
    loss = SegmentationLoss(class_weights=weights)(out, target)["total"]
    loss.backward()
    grad = low.grad.clone()

    ref_low = low.detach().clone().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy
    ref = ce(resize(ref_low, (32, 48)), target, weight=weights, ignore_index=255) + 0.4 * ce(
        resize(ref_low[:, :, ::2, ::2] * 0.5, (32, 48)), target, weight=weights, ignore_index=255)
    ref.backward()
    assert torch.allclose(loss, ref) and torch.allclose(grad, ref_low.grad, atol=1e-6)


def test_a_fused_joint_is_scored_as_the_plain_fusion_with_the_same_gradients():
    torch.manual_seed(0)
    target = torch.randint(0, 5, (2, 32, 48))
    lo, hi, a = torch.randn(2, 5, 4, 6), torch.randn(2, 5, 8, 12), torch.rand(2, 1, 4, 6)

    def parts(lo, hi, a):
        return [ScaleOutput(1.0, hi), ScaleOutput(0.5, lo, a)]

    leaves = [t.clone().requires_grad_(True) for t in (lo, hi, a)]
    fused = Fused("hierarchical", parts(*leaves), (32, 48))
    loss = SegmentationLoss()({"joint": fused, "aux": fused, "per_scale": {}}, target)["total"]
    loss.backward()

    ref_leaves = [t.clone().requires_grad_(True) for t in (lo, hi, a)]
    joint = fusion.hierarchical(parts(*ref_leaves), (32, 48))
    ref = 1.4 * torch.nn.functional.cross_entropy(joint, target, ignore_index=255)
    ref.backward()
    assert torch.allclose(loss, ref)
    assert all(torch.allclose(x.grad, y.grad, atol=1e-6) for x, y in zip(leaves, ref_leaves))


def test_aux_terms_at_the_logits_size_score_against_labels_subsampled_at_their_centres():
    torch.manual_seed(0)
    target = torch.randint(0, 5, (2, 32, 48))
    target[:, :6] = 255
    lo, hi, a = torch.randn(2, 5, 4, 6), torch.randn(2, 5, 8, 12), torch.rand(2, 1, 4, 6)
    parts = [ScaleOutput(1.0, hi), ScaleOutput(0.5, lo, a)]
    out = {"joint": Fused("hierarchical", parts, (32, 48)), "aux": Fused("hierarchical", parts, (32, 48)),
           "per_scale": {0.5: lo, 1.0: hi}}
    got = SegmentationLoss(aux_size="logits")(out, target)

    # the centre of each 4x4 block at stride 4, of each 8x8 block at stride 8
    assert torch.equal(subsample(target, (8, 12)), target[:, 2::4, 2::4])
    assert torch.equal(subsample(target, (4, 6)), target[:, 4::8, 4::8])
    ce = torch.nn.functional.cross_entropy
    main = ce(fusion.hierarchical(parts, (32, 48)), target, ignore_index=255)
    aux = ce(fusion.hierarchical(parts, (8, 12)), target[:, 2::4, 2::4], ignore_index=255)
    scales = ce(lo, target[:, 4::8, 4::8], ignore_index=255) + ce(hi, target[:, 2::4, 2::4], ignore_index=255)
    assert torch.allclose(got["main"], main) and torch.allclose(got["aux"], aux)
    assert torch.allclose(got["total"], main + 0.4 * aux + 0.05 * scales)
    # the paper's way scores the same aux logits upsampled to the label size: a different number
    assert not torch.allclose(SegmentationLoss()(out, target)["aux"], aux)
    with pytest.raises(ValueError, match="aux_loss_size"):
        SegmentationLoss(aux_size="half")


def test_a_batch_with_only_ignore_labels_gives_zero_loss_not_nan(tiny_model):
    model = tiny_model("hmsa").train()
    out = model(torch.rand(2, 3, 32, 48))
    for weights in (None, torch.rand(19)):
        loss = SegmentationLoss(class_weights=weights)(out, torch.full((2, 32, 48), 255))["total"]
        assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", ["hmsa", "single", "explicit"])
def test_recomputing_the_loss_changes_its_memory_not_its_numbers(tiny_model, kind):
    from hmsa.bench.training import saved_activation_bytes

    torch.manual_seed(0)
    model = tiny_model(kind).train()
    images, target = torch.rand(2, 3, 64, 96), torch.randint(0, 19, (2, 64, 96))
    target[:, :8] = 255
    weights = torch.rand(19)
    results = []
    for recompute in (True, False):
        model.zero_grad()
        loss = SegmentationLoss(class_weights=weights, recompute=recompute)(model(images), target)["total"]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_on, grads_on), (loss_off, grads_off) = results
    # bit for bit: the recomputed forward is the same computation
    assert torch.equal(loss_on, loss_off) and len(grads_on) == len(grads_off) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads_on, grads_off))
    # kept, the label-size tensors (at least one 19-class map of the batch per term) are saved for backward
    kept = saved_activation_bytes(model, images, target, recompute=False)
    recomputed = saved_activation_bytes(model, images, target, recompute=True)
    assert kept - recomputed >= 2 * 19 * 64 * 96 * 4


def test_the_loss_skips_the_label_value_the_data_use_for_no_class():
    from hmsa.data.labels import IGNORE_INDEX
    from hmsa.models import loss

    assert loss.IGNORE_INDEX == IGNORE_INDEX and SegmentationLoss().ignore_index == IGNORE_INDEX


def test_the_authors_explicit_head_gives_unnormalised_weights_and_builds_no_aux_head(tiny_model):
    chen, authors = tiny_model("explicit"), tiny_model("explicit", explicit_head="authors", explicit_channels=24)
    head = authors.scale_attn_head.body
    assert [type(m).__name__ for m in head] == ["Conv2d", "ReLU", "Conv2d"]
    assert (head[0].kernel_size, head[0].out_channels, head[2].kernel_size) == ((3, 3), 24, (1, 1))
    assert head[0].bias is None and head[2].bias is None
    assert authors.aux_head is None and chen.aux_head is not None
    assert not any(name.startswith("aux_head") for name in authors.state_dict())

    torch.manual_seed(1)
    features = [torch.randn(2, authors.seg_head.out_channels, 5, 6) for _ in range(3)]
    raw = authors.scale_attn_head(features)
    assert torch.equal(raw, head(torch.cat(features, dim=1)))  # the head's output is the weight, as it is
    assert not torch.allclose(raw.sum(dim=1), torch.ones(2, 5, 6), atol=1e-3)
    assert torch.allclose(chen.scale_attn_head(features).sum(dim=1), torch.ones(2, 5, 6), atol=1e-6)

    images = torch.rand(1, 3, 64, 64)
    outs = authors.scale_outputs(images, authors.cfg.train_scales)
    weights = authors._scale_weights(outs)
    fused = authors.fuse_outputs(outs, "explicit", (64, 64))[0]
    by_hand = sum(resize(weights[:, i:i + 1], (64, 64)) * resize(outs[s]["logits"], (64, 64))
                  for i, s in enumerate(authors.cfg.train_scales))
    assert torch.allclose(fused, by_hand, atol=1e-5)
    train = authors.train()(images)
    assert train["aux"] is None
    parts = SegmentationLoss(aux_weight=0.4, scale_weight=0.05)(train, torch.randint(0, 19, (1, 64, 64)))
    assert "aux" not in parts
    assert torch.allclose(parts["total"], parts["main"] + 0.05 * parts["scales"])


def test_an_aux_weight_of_zero_builds_no_aux_head_and_its_loss_has_no_aux_term():
    from hmsa.models import ModelConfig, build_model
    from hmsa.training.config import RoleConfig

    from .conftest import TINY

    without = RoleConfig(registered_model_name="m", model=TINY, trainer={"aux_weight": 0.0})
    with_aux = RoleConfig(registered_model_name="m", model=TINY, trainer={"aux_weight": 0.4})
    assert (without.model.aux_head, with_aux.model.aux_head) == (False, True)
    # the same rule when the model block arrives already validated
    assert RoleConfig(registered_model_name="m", model=ModelConfig(**TINY), trainer={"aux_weight": 0}).model.aux_head is False

    torch.manual_seed(0)
    model = build_model(without.model).train()
    assert model.aux_head is None and not any(k.startswith("aux_head") for k in model.state_dict())
    torch.manual_seed(0)
    reference = build_model(with_aux.model).train()
    assert sum(p.numel() for p in reference.parameters()) > sum(p.numel() for p in model.parameters())
    images, target = torch.rand(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    out = model(images)
    assert out["aux"] is None
    parts = SegmentationLoss(aux_weight=0.0, scale_weight=0.05)(out, target)
    assert sorted(parts) == ["main", "scales", "total"]
    assert torch.allclose(parts["total"], parts["main"] + 0.05 * parts["scales"])
    parts["total"].backward()  # trains without the head
    assert model.attn_head.body[0][0].weight.grad is not None
    assert "aux" in SegmentationLoss(aux_weight=0.4)(reference(images), target)
