"""hmsa's HRNetV2 against an independent implementation: timm's HRNet, ported from the HRNet
authors' code, keeps their module names. A timm state_dict saved to a file (no download)
loads through ``model.pretrained: <path>`` and fills every trunk tensor, with matching shapes;
only timm's classification modules are left over."""

import pytest
import timm  # a test dependency (requirements.txt, the test extra)
import torch

from hmsa.models.trunks import build_trunk

#: hmsa's trunk name -> timm's name of the same network (hmsa's small one is HRNet's W18-Small-v2)
SAME_NETWORK = {"hrnet_w18_small": "hrnet_w18_small_v2", "hrnet_w48": "hrnet_w48"}
#: the modules of HRNet's ImageNet classifier that a segmentation trunk has no use for
CLASSIFICATION_ONLY = {"incre_modules", "downsamp_modules", "final_layer", "classifier"}


@pytest.mark.parametrize("ours, theirs", SAME_NETWORK.items())
def test_a_timm_hrnet_state_dict_fills_every_trunk_tensor(ours, theirs, tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model(theirs, pretrained=False).state_dict()
    path = tmp_path / f"{theirs}.pth"
    torch.save(reference, path)
    trunk = build_trunk(ours, 4, str(path)).state_dict()

    assert all(name in reference for name in trunk), [n for n in trunk if n not in reference][:5]
    for name, tensor in trunk.items():
        assert tensor.shape == reference[name].shape, name
        assert torch.equal(tensor, reference[name]), name  # loaded, not left at its initialisation
    ignored = {name.split(".")[0] for name in reference if name not in trunk}
    assert ignored == CLASSIFICATION_ONLY
    counts = {"hrnet_w18_small": (864, 126), "hrnet_w48": (1830, 126)}[ours]
    assert (len(trunk), len(reference) - len(trunk)) == counts  # matched, ignored


def test_timms_hrnet_w18_small_is_another_network_and_is_refused_by_name(tmp_path):
    """timm's ``hrnet_w18_small`` is HRNet's W18-Small-v1 (one 32-plane bottleneck in stage 1):
    its weights do not fit hmsa's ``hrnet_w18_small`` (v2), and the error says so."""
    from hmsa.models.trunks import PretrainedWeightsError

    path = tmp_path / "v1.pth"
    torch.save(timm.create_model("hrnet_w18_small", pretrained=False).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="do not fit trunk hrnet_w18_small"):
        build_trunk("hrnet_w18_small", 4, str(path))
