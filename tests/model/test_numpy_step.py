"""The numpy step against the model's PyTorch path (`observe_slots`, `imagine_slots`, `decode`).

Every parameter is drawn at random first (`randomise_parameters`): with the model's own
initialisation the reward head's output layer is zero, so a wrong reward matrix still gave 0 = 0.
"""

import dataclasses

import numpy as np
import pytest
import torch

from tests.model.wm_helpers import BOX_ACT, DISC_ACT, IMG_OBS, VEC_OBS, random_batch, randomise_parameters
from worldssm.model import WorldModel, preset
from worldssm.model.numpy_step import NumpyStep, supports

TOL = dict(rtol=1e-4, atol=1e-5)  # float32 numpy against float32 PyTorch


@pytest.fixture(autouse=True, params=["numpy ops", "torch ops", "numpy products in pieces", "by size"])
def ops(request, monkeypatch):
    """Every test four times: the step's element-wise work and products all in numpy, all in
    PyTorch, all in numpy with every product cut into column pieces, and each by its size as in
    use (`numpy_step.TORCH_FROM`, `ONE_THREAD_MNK`, `ONE_THREAD_PIECES`; most batches here are
    small, so "by size" is mostly numpy)."""
    from worldssm.model import numpy_step

    if request.param != "by size":
        limit = 0 if request.param == "torch ops" else 1 << 60
        monkeypatch.setattr(numpy_step, "TORCH_FROM", limit)
        monkeypatch.setattr(numpy_step, "ONE_THREAD_MNK", 1 << 12 if request.param.endswith("pieces") else limit)
        monkeypatch.setattr(numpy_step, "ONE_THREAD_PIECES", 1 << 30)
    return request.param

MATRIX_OBS = {"type": "box", "shape": [2, 3], "dtype": "float32",
              "low": np.full((2, 3), -np.inf, np.float32), "high": np.full((2, 3), np.inf, np.float32)}
PART_BOUNDED_ACT = {"type": "box", "shape": [2], "dtype": "float32",  # one bounded dim, one not
                    "low": np.array([-1.0, -np.inf], np.float32), "high": np.array([1.0, np.inf], np.float32)}


def _square_config():
    """DEBUG with most matrices square (D = W = H*P = V*K = R = 32, two hidden MLP layers): a
    transposed matrix or two swapped heads keep their shapes, so only the values can show it."""
    cfg = preset("DEBUG")
    return dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, d_model=32, n_heads=4, head_dim=8),
                               latent_vars=4, latent_classes=8, mlp_width=32, mlp_layers=2, reward_bins=32)


CASES = {
    "box": (preset("DEBUG"), VEC_OBS, BOX_ACT),
    "discrete": (preset("DEBUG"), VEC_OBS, DISC_ACT),
    "matrix-obs-part-bounded-box": (preset("DEBUG"), MATRIX_OBS, PART_BOUNDED_ACT),
    "square-discrete": (_square_config(), VEC_OBS, DISC_ACT),
}


def random_model(case: str, seed: int = 0) -> WorldModel:
    cfg, obs_space, act_space = CASES[case]
    return randomise_parameters(WorldModel(cfg, obs_space, act_space).eval(), seed)


def random_inputs(model, b: int, rng):
    """obs [B, *obs_shape] and actions [B] / [B, *act_shape]; Box actions reach past their bounds
    (where the scaling clips) and into the unbounded dims' symlog."""
    obs = (rng.standard_normal((b, *model.obs_shape)) * 3).astype(np.float32)
    space = model.action_space
    if space["type"] == "discrete":
        return obs, rng.integers(0, space["n"], b).astype(np.int64)
    return obs, (rng.standard_normal((b, *space["shape"])) * 3).astype(np.float32)


class Twin:
    """The numpy step and the PyTorch path stepping the same agents, each on its own slab; every
    call checks the outputs (z, reward, continue logit, h, the decoded observation) and both slabs whole."""

    def __init__(self, model, capacity: int):
        self.model, self.step = model, NumpyStep(model)
        self.ref = model.initial_state(capacity)  # name -> tensor [S, ...]
        self.fast = {k: v.numpy().copy() for k, v in self.ref.items()}

    def observe(self, slots, obs, action, reset):
        got = self.step.observe(self.fast, slots, obs, action, reset)
        with torch.inference_mode():
            t = torch.as_tensor
            want = self._outputs(self.model.observe_slots(self.ref, t(slots), t(obs), t(action), t(reset)))
        return self._check(got, want)

    def imagine(self, slots, z, action):
        got = self.step.imagine(self.fast, slots, z, action)
        with torch.inference_mode():
            t = torch.as_tensor
            want = self._outputs(self.model.imagine_slots(self.ref, t(slots), t(z), t(action)))
        return self._check(got, want)

    def _outputs(self, pred):
        z = self.model.latent(pred.prior_logp)  # the expectation [B, V*K]
        return z.numpy(), pred.reward.numpy(), pred.cont_logit.numpy(), pred.h.numpy(), self.model.decode(z, pred.h).numpy()

    def _check(self, got, want):
        got = (*got, self.step.decode(got[0], got[3]))
        for name, g, w in zip(("z", "reward", "continue logit", "h", "decoded obs"), got, want):
            assert g.dtype == np.float32 and g.shape == w.shape, name
            np.testing.assert_allclose(g, w, **TOL, err_msg=name)
        for k, v in self.ref.items():
            np.testing.assert_allclose(self.fast[k], v.numpy(), **TOL, err_msg=k)
        return got


def run_sequence(twin: Twin, steps: int = 8, seed: int = 1) -> list[tuple]:
    """Observe and imagine over `steps` steps: all agents or a subset in shuffled order, resets
    at random rows; imagine feeds a subset the latent its observe predicted. Returns the outputs."""
    rng = np.random.default_rng(seed)
    agents = np.array([7, 0, 3, 5, 1, 8])  # slots 2, 4, 6 stay empty and must stay zero
    outs = []
    for t in range(steps):
        rows = agents if t % 3 == 0 else rng.permutation(agents)[:4]
        reset = np.full(rows.size, t == 0) | (rng.random(rows.size) < 0.3)
        obs, act = random_inputs(twin.model, rows.size, rng)
        outs.append(twin.observe(rows, obs, act, reset))
        sub = np.arange(0, rows.size, 2)
        _, act = random_inputs(twin.model, sub.size, rng)
        outs.append(twin.imagine(rows[sub], outs[-1][0][sub], act))
    return outs


@pytest.mark.parametrize("case", list(CASES))
def test_numpy_step_matches_torch(case):
    model = random_model(case)
    outs = run_sequence(Twin(model, capacity=9))
    reward, cont = np.concatenate([o[1] for o in outs]), np.concatenate([o[2] for o in outs])
    # Not the degenerate agreement of a zero head: the heads' outputs vary across agents and steps.
    assert reward.std() > 0.1 and cont.std() > 0.02
    assert len({o[0].tobytes() for o in outs}) > 1, "the latents must differ"


def _transposed(lin):
    return dataclasses.replace(lin, w=np.ascontiguousarray(lin.w.T))


def test_a_head_matrix_read_transposed_or_swapped_fails(monkeypatch):
    """Each mistake below keeps every shape in the square model, and the comparison of
    `test_numpy_step_matches_torch` must catch each one."""
    model = random_model("square-discrete")
    run_sequence(Twin(model, capacity=9), steps=3)  # the right weights agree
    w = model.step_weights()
    rep = dataclasses.replace
    wrong = {
        "prior output transposed": rep(w, prior_head=rep(w.prior_head, out=_transposed(w.prior_head.out))),
        "reward output transposed": rep(w, reward_head=rep(w.reward_head, out=_transposed(w.reward_head.out))),
        "continue hidden layer transposed": rep(w, cont_head=rep(w.cont_head, hidden=(
            w.cont_head.hidden[0], rep(w.cont_head.hidden[1], linear=_transposed(w.cont_head.hidden[1].linear))))),
        "prior and reward heads swapped": rep(w, prior_head=w.reward_head, reward_head=w.prior_head),
        "continue head on the reward head's hidden layers": rep(w, cont_head=rep(w.cont_head, hidden=w.reward_head.hidden)),
    }
    for name, weights in wrong.items():
        monkeypatch.setattr(model, "step_weights", lambda weights=weights: weights)
        with pytest.raises(AssertionError):
            run_sequence(Twin(model, capacity=9), steps=3)
            pytest.fail(f"{name}: the numpy step still agreed with PyTorch")


def test_numpy_step_follows_in_place_weight_updates():
    model = random_model("discrete")
    twin = Twin(model, capacity=4)
    rng = np.random.default_rng(2)
    slots, reset = np.arange(3), np.ones(3, bool)
    obs, act = random_inputs(model, 3, rng)
    before = twin.observe(slots, obs, act, reset)[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(random_batch(VEC_OBS, DISC_ACT, 2, 5))[0].backward()
    opt.step()  # in place: the version counters move, the step takes the view again
    after_step = twin.observe(slots, obs, act, reset)[1]
    model.load_state_dict(random_model("discrete", seed=7).state_dict())  # copies in place too
    after_load = twin.observe(slots, obs, act, reset)[1]
    assert not np.allclose(after_step, before) and not np.allclose(after_load, after_step)


def test_a_reset_row_reads_no_old_state_and_other_rows_stay():
    model = random_model("box")
    step = NumpyStep(model)
    slab = {k: v.numpy().copy() for k, v in model.initial_state(6).items()}
    rng = np.random.default_rng(3)
    obs, act = random_inputs(model, 5, rng)
    step.observe(slab, np.arange(5), obs, act, np.ones(5, bool))
    for v in slab.values():
        v[2] = np.nan  # row 2 resets below: its old state must never be read
    untouched = {k: v[3:].copy() for k, v in slab.items()}
    obs, act = random_inputs(model, 3, rng)
    got = step.observe(slab, np.array([0, 1, 2]), obs, act, np.array([False, False, True]))
    assert all(np.isfinite(x).all() for x in got)
    for k, v in slab.items():
        assert np.isfinite(v[2]).all() and np.array_equal(v[3:], untouched[k]), k
    fresh = {k: v.numpy().copy() for k, v in model.initial_state(1).items()}
    want = step.observe(fresh, np.array([0]), obs[2:], act[2:], np.array([True]))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[2:], w, **TOL)


def test_which_models_the_numpy_step_runs():
    cpu = torch.device("cpu")
    cfg = preset("DEBUG")
    model = WorldModel(cfg, VEC_OBS, BOX_ACT)
    assert supports(model, False, cpu) is None
    assert "sampled" in supports(model, True, cpu)
    assert "cuda" in supports(model, False, torch.device("cuda"))
    bb = cfg.backbone
    bf16 = WorldModel(dataclasses.replace(cfg, backbone=dataclasses.replace(bb, state_dtype="bfloat16")), VEC_OBS, BOX_ACT)
    gru = WorldModel(dataclasses.replace(cfg, backbone=dataclasses.replace(bb, kind="gru")), VEC_OBS, BOX_ACT)
    image = WorldModel(cfg, IMG_OBS, BOX_ACT)
    assert supports(bf16, False, cpu) == "bfloat16 states"
    assert supports(gru, False, cpu) == "the gru backbone"
    assert supports(image, False, cpu) == "image observations"
    assert supports(WorldModel(cfg, VEC_OBS, BOX_ACT).double(), False, cpu) == "weights are not float32"
    with pytest.raises(ValueError, match="step_weights cannot describe this model: image observations"):
        image.step_weights()


def _arrays(x):
    if dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            yield from _arrays(getattr(x, f.name))
    elif isinstance(x, tuple):
        for y in x:
            yield from _arrays(y)
    elif isinstance(x, np.ndarray):
        yield x


def test_step_weights_are_read_only_float32_copies():
    model = random_model("matrix-obs-part-bounded-box")
    w = model.step_weights()
    arrays = list(_arrays(w))
    # One inference step reads every parameter and buffer of this model: the view holds them all.
    tensors = [*model.parameters(), *model.buffers()]
    assert sum(a.size for a in arrays) == sum(t.numel() for t in tensors)
    assert all(a.dtype == (np.bool_ if a is w.action.bounded else np.float32) for a in arrays)
    assert not any(a.flags.writeable for a in arrays)
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.reward_head = w.prior_head
    np.testing.assert_array_equal(w.reward_head.out.w, model.reward_head[-1].weight.detach().numpy().T)
    with torch.no_grad():
        model.reward_head[-1].weight.add_(1.0)
    assert not np.array_equal(w.reward_head.out.w, model.reward_head[-1].weight.detach().numpy().T)


def test_consecutive_slots_update_the_slab_in_place_and_match_torch():
    """A run of consecutive ascending slots takes the in-place (slice) path; descending or gapped
    runs gather and scatter. Both agree with the PyTorch step, resets included."""
    from worldssm.model.numpy_step import _as_slice

    assert _as_slice(np.array([2, 3, 4, 5])) == slice(2, 6) and _as_slice(np.array([7])) == slice(7, 8)
    for gathered in ([5, 4, 3], [2, 4], [0, 2, 1, 3], []):
        assert _as_slice(np.array(gathered, dtype=np.int64)) is None
    twin = Twin(random_model("box"), capacity=9)
    rng = np.random.default_rng(5)
    for t, rows in enumerate(([2, 3, 4, 5], [3, 4], [5, 4, 3], [2, 3, 4, 5, 6], [6, 8])):
        rows = np.array(rows)
        reset = np.full(rows.size, t == 0) | (rng.random(rows.size) < 0.3)
        obs, act = random_inputs(twin.model, rows.size, rng)
        z = twin.observe(rows, obs, act, reset)[0]
        _, act = random_inputs(twin.model, rows.size, rng)
        twin.imagine(rows, z, act)


def run_large_batch(steps: int, seed: int) -> None:
    """300 agents on consecutive slots observe (a slice of the slab), then imagine in reverse
    order (gathered, not a slice), `steps` times, each call checked against the PyTorch step."""
    twin = Twin(random_model("discrete"), capacity=310)
    rng = np.random.default_rng(seed)
    rows = np.arange(5, 305)
    for t in range(steps):
        obs, act = random_inputs(twin.model, rows.size, rng)
        z = twin.observe(rows, obs, act, np.full(rows.size, t == 0) | (rng.random(rows.size) < 0.1))[0]
        _, act = random_inputs(twin.model, rows.size, rng)
        twin.imagine(rows[::-1].copy(), z[::-1].copy(), act)


def test_a_large_batch_matches_torch():
    """"By size", 300 rows send the heads and MLPs to PyTorch's ops while the smaller products
    stay numpy's; every path must still agree with the PyTorch step."""
    run_large_batch(steps=3, seed=6)


def test_rows_step_in_passes_and_match_torch(monkeypatch):
    """A batch larger than `ROWS_PER_PASS` steps in passes of that many rows (observe, imagine
    and decode); the outputs and the slab must be those of one pass, in the slots' order."""
    from worldssm.model import numpy_step

    monkeypatch.setattr(numpy_step, "ROWS_PER_PASS", 4)
    run_sequence(Twin(random_model("box"), capacity=9))  # 6 and 4 rows: passes of 4 and 2
    monkeypatch.setattr(numpy_step, "ROWS_PER_PASS", 64)
    run_large_batch(steps=2, seed=7)
