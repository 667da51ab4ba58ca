"""The public API: `import worldssm as ws` is light, resolves exactly worldssm.api's names, and
`ws.load` gives a model in eval mode."""

import subprocess
import sys

import pytest

import worldssm
from worldssm import api


def test_the_lazy_names_are_the_api():
    assert worldssm.API == set(api.__all__)
    for name in api.__all__:
        assert getattr(worldssm, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        worldssm.nothing  # noqa: B018


def test_import_worldssm_and_a_leaf_module_stays_light():
    code = ("import sys, worldssm; from worldssm import codec, errors; "
            "print(sorted(m for m in ('torch', 'gymnasium', 'worldssm.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_load_gives_the_model_in_eval_mode(pendulum_run):
    import worldssm as ws

    model = ws.load(pendulum_run)
    assert isinstance(model, ws.WorldModel) and not model.training
    assert model.obs_space["shape"] == [3] and model.action_space["type"] == "box"
    with pytest.raises(ws.WorldssmError):
        ws.load(pendulum_run / "no-such-dir")
