import numpy as np
import pytest
import torch

from hmsa.evaluation.grid import SINGLE, Setting, batches_of, evaluate_grid, predict_grid, settings_for

SCALE_SETS = [(1.0,), (0.5, 1.0), (0.5, 1.0, 2.0)]
FUSIONS = ["hierarchical", "average", "max", "explicit"]


def test_each_kind_gets_only_the_rules_it_can_use(tiny_model):
    hmsa = settings_for(tiny_model("hmsa"), SCALE_SETS, FUSIONS, [False])
    assert {(s.fusion, s.scales) for s in hmsa} == {
        (SINGLE, (1.0,)), *((f, sc) for f in ("hierarchical", "average", "max") for sc in SCALE_SETS[1:])}
    single = settings_for(tiny_model("single"), SCALE_SETS, FUSIONS, [False, True])
    assert not {s.fusion for s in single} & {"hierarchical", "explicit"}
    assert len(single) == 2 * (1 + 2 * 2)  # flips x ([1.0] + 2 sets x {average, max})
    explicit = settings_for(tiny_model("explicit"), SCALE_SETS, FUSIONS, [False])
    assert [s.scales for s in explicit if s.fusion == "explicit"] == [(0.5, 1.0, 2.0)]


def test_setting_names():
    assert Setting("hierarchical", (0.25, 0.5, 1.0, 2.0), True).name == "hierarchical/0.25-0.5-1.0-2.0/flip"
    assert Setting(SINGLE, (1.0,), False).name == "single/1.0"


@pytest.mark.parametrize("kind", ["hmsa", "single", "explicit"])
def test_one_pass_grid_matches_separate_predictions(tiny_model, kind):
    model = tiny_model(kind)
    images = torch.rand(2, 3, 48, 80)
    settings = settings_for(model, SCALE_SETS, FUSIONS, [False, True])
    grid = predict_grid(model, images, settings)
    for setting in settings:
        rule = "average" if setting.fusion == SINGLE else setting.fusion  # every rule is the identity at [1.0]
        alone = model.predict(images, setting.scales, setting.flip, rule)["logits"]
        torch.testing.assert_close(grid[setting], alone, rtol=1e-4, atol=1e-5, msg=setting.name)


def test_grid_confusion_against_an_independent_count(tiny_model):
    model = tiny_model("hmsa")
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 64)
    labels = torch.randint(0, 19, (3, 32, 64))
    labels[:, :4] = 255
    settings = settings_for(model, SCALE_SETS, ["hierarchical", "average"], [False, True])
    result = evaluate_grid(model, [(images[:2], labels[:2]), (images[2:], labels[2:])], settings, torch.device("cpu"))
    for setting in settings:
        rule = "average" if setting.fusion == SINGLE else setting.fusion
        pred = model.predict(images, setting.scales, setting.flip, rule)["logits"].argmax(1).numpy()
        truth = labels.numpy()
        for c in range(19):  # IoU per class from boolean masks, no confusion matrix
            valid = truth != 255
            inter = np.sum((pred == c) & (truth == c) & valid)
            union = np.sum(((pred == c) | (truth == c)) & valid)
            expected = inter / union if union else np.nan
            np.testing.assert_allclose(result.scores(setting)["iou"][c], expected, err_msg=f"{setting.name} class {c}")
    best = result.best()
    assert result.scores(best)["miou"] == max(result.scores(s)["miou"] for s in settings)


def test_batches_split_where_the_image_size_changes():
    pairs = [(torch.zeros(3, 8, 8), torch.zeros(8, 8))] * 3 + [(torch.zeros(3, 8, 16), torch.zeros(8, 16))] * 2
    shapes = [tuple(images.shape) for images, _ in batches_of(pairs, 2)]
    assert shapes == [(2, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 16)]


def test_non_finite_logits_stop_the_evaluation_by_name(tiny_model):
    """A model whose weights hold NaN scores ~1/19 mIoU (argmax picks class 0 everywhere) and
    could be crowned; the evaluation stops instead, naming it."""
    from hmsa.models.segmenter import NonFiniteOutputError

    model = tiny_model("hmsa")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    images, labels = torch.rand(2, 3, 32, 48), torch.zeros(2, 32, 48, dtype=torch.long)
    settings = settings_for(model, SCALE_SETS, ["hierarchical"], [False])
    with pytest.raises(NonFiniteOutputError, match=r"model 'broken', evaluated at single/1\.0: 100\.0% of the logits"):
        evaluate_grid(model, [(images, labels)], settings, torch.device("cpu"), name="model 'broken'")
