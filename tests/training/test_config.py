import pytest
from omegaconf import OmegaConf
from pydantic import ValidationError

from hmsa.training.config import TrainerConfig


@pytest.mark.parametrize("field", ["channels_last", "recompute_loss"])
@pytest.mark.parametrize(("given", "expected"), [("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")])
def test_on_off_settings_accept_the_bare_on_off_of_params_and_yaml(field, given, expected):
    # `kedro run --params trainer.channels_last=on` and YAML 1.1 both turn a bare on/off into a boolean
    raw = OmegaConf.to_container(OmegaConf.from_dotlist([f"{field}={given}"]))
    assert getattr(TrainerConfig.model_validate(raw), field) == expected


@pytest.mark.parametrize("field", ["channels_last", "recompute_loss"])
def test_on_off_settings_still_refuse_other_values(field):
    with pytest.raises(ValidationError, match=field):
        TrainerConfig.model_validate({field: "yes please"})
