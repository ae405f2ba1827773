import pytest
from omegaconf import OmegaConf
from pydantic import ValidationError

from hmsa.training.config import TrainerConfig


@pytest.mark.parametrize(("given", "expected"), [("channels_last=on", "on"), ("channels_last=off", "off"),
                                                 ("channels_last='on'", "on"), ("channels_last=auto", "auto")])
def test_channels_last_accepts_the_bare_on_off_of_params_and_yaml(given, expected):
    # `kedro run --params trainer.channels_last=on` and YAML 1.1 both turn a bare on/off into a boolean
    raw = OmegaConf.to_container(OmegaConf.from_dotlist([given]))
    assert TrainerConfig.model_validate(raw).channels_last == expected


def test_channels_last_still_refuses_other_values():
    with pytest.raises(ValidationError, match="channels_last"):
        TrainerConfig.model_validate({"channels_last": "yes please"})
