import pytest
import torch

from worldssm.model import WorldModel, preset
from tests.model.wm_helpers import BOX_ACT, VEC_OBS


@pytest.fixture
def debug_model():
    torch.manual_seed(0)
    return WorldModel(preset("DEBUG"), VEC_OBS, BOX_ACT).double()
