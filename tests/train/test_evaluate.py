"""Open-loop evaluation: alignment of targets, naive predictors, masking past the episode end."""

import json

import numpy as np
import pytest
import torch

from worldssm.errors import WorldssmError
from worldssm.train import TrainConfig, Trainer
from worldssm.train.evaluate import HORIZONS, EvalConfig, evaluate, open_loop, summary_table


def ramp_episode(n, start):
    t = np.arange(start, start + n, dtype=np.float32)
    return {
        "obs": np.stack([np.sin(t / 7), t / 100], -1).astype(np.float32),
        "action": t[:, None].copy(),  # the action carries its own step index
        "reward": (t % 3).astype(np.float32),
        "is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1, "is_terminal": np.zeros(n, bool),
    }


class Oracle:
    """Predicts o_{t+k} from the action index it is handed: exact iff the protocol aligns targets."""

    def observe_sequence(self, obs, act, first):
        from worldssm.model import Prediction

        n, c = obs.shape[:2]
        return None, Prediction(torch.zeros(n, c, 1), torch.zeros(n, c), torch.ones(n, c), torch.zeros(n, c, 1),
                                torch.full((n, c), 30.0))

    def rollout(self, state, last, actions, sample=False, generator=None):
        t = actions[..., 0].double()
        obs = torch.stack([torch.sin(t / 7), t / 100], -1)
        return None, {"obs": obs, "reward": t % 3, "cont": torch.ones_like(t)}


def test_oracle_scores_zero_and_naive_predictors_are_exact():
    episodes = [ramp_episode(90, 0), ramp_episode(40, 1000)]
    res = open_loop(Oracle(), episodes, context=8, stride=5)
    assert all(v < 1e-9 for v in res["obs_nmse"]["model"] if v is not None)  # float32 storage rounding
    assert all(v == 0.0 for v in res["reward_mae"]["model"] if v is not None)
    # Horizon 64 exists only in windows of the 90-step episode with s + 8 - 1 + 64 <= 89.
    assert res["valid_windows"][HORIZONS.index(64)] == len(range(0, 90 - 8, 5)) - sum(
        1 for s in range(0, 82, 5) if s + 7 + 64 > 89)
    # Repeat-last at k=1, computed independently.
    obs = np.concatenate([e["obs"] for e in episodes]).astype(np.float64)
    var = obs.var(0)
    errs = []
    for e in episodes:
        for s in range(0, len(e["reward"]) - 8, 5):
            d = (e["obs"][s + 8] - e["obs"][s + 7]).astype(np.float64)
            errs.append(((d**2) / var).mean())
    assert np.isclose(res["obs_nmse"]["repeat_last"][0], np.mean(errs))
    assert res["termination_f1"][0] is None  # no terminal steps anywhere: F1 undefined, not 0 or 1


def test_evaluate_writes_json_and_plot(pendulum_data, tmp_path):
    cfg = TrainConfig(preset="DEBUG", steps=3, batch_size=2, seq_len=16, log_every=3, checkpoint_every=3)
    Trainer(pendulum_data, tmp_path / "run", cfg).run(progress=False)
    res = evaluate(tmp_path / "run", pendulum_data, tmp_path / "eval", EvalConfig(context=8))
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["eval_config"]["context"] == 8 and saved["eval_config"]["split"] == "val"
    assert saved["horizons"] == list(HORIZONS) and saved["checkpoint_step"] == 3
    assert len(saved["obs_nmse"]["model"]) == len(HORIZONS)
    assert np.isfinite([v for v in res["obs_nmse"]["model"] if v is not None]).all()
    assert (tmp_path / "eval" / "openloop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_finite_errors_are_null_in_strict_json(pendulum_run, pendulum_data, tmp_path, monkeypatch):
    import worldssm.train.evaluate as evaluate_module

    real = evaluate_module.load_model

    def overflowing(*a, **k):
        # Finite weights (they pass the load checks) whose predictions overflow to infinity.
        model, sidecar = real(*a, **k)
        with torch.no_grad():
            model.decoder[-1].bias.fill_(1e30)
        return model, sidecar

    monkeypatch.setattr(evaluate_module, "load_model", overflowing)
    res = evaluate(pendulum_run, pendulum_data, tmp_path / "eval", EvalConfig(context=8, max_windows=8))

    def refuse(token):
        raise AssertionError(f"eval.json holds the non-JSON token {token}")

    saved = json.loads((tmp_path / "eval" / "eval.json").read_text(), parse_constant=refuse)
    assert saved["obs_nmse"]["model"][0] is None and res["obs_nmse"]["model"][0] is None
    assert saved["obs_nmse"]["repeat_last"][0] is not None  # the naive predictors stay finite
    assert "   -" in summary_table(res).splitlines()[1]


def test_continue_scores_count_ends_on_observed_steps():
    import numpy as np

    from worldssm.train.evaluate import _end_pairs, _end_scores

    term = np.array([[0, 0, 1, 0], [0, 0, 0, 1]], bool)
    valid = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    cont = np.array([[0.9, 0.2, 0.9, 0.1], [0.9, 0.9, 0.8, 0.9]])  # predicts an end after t+1 = 2 in row 0 only
    s = _end_scores(*_end_pairs(cont, term, valid))  # row 0's last step is padding: its 0.1 is not counted
    assert s["terminal_steps"] == 2 and s["steps"] == 5
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and abs(s["f1"] - 2 / 3) < 1e-12


def test_continue_scores_see_every_end_of_every_episode():
    """Every step of every episode is scored, however the episodes are batched (short and long
    episodes, batches smaller than one episode), against a model whose continue head is read off
    the observation: it predicts an end exactly where the next step is terminal."""
    import numpy as np
    import torch

    from worldssm.model.world_model import Prediction
    from worldssm.train.evaluate import continue_scores

    class Oracle:  # obs[t] = 1 where the next step ends the episode
        def observe_sequence(self, obs, action, is_first):
            cont = 1.0 - obs[..., 0].double()
            z = torch.zeros_like(cont)
            return None, Prediction(z, z, cont, z, z)

    rng = np.random.default_rng(0)
    episodes = []
    for n in (3, 40, 7, 120, 2, 55):
        term = np.zeros(n, bool)
        term[-1] = bool(rng.integers(2))
        obs = np.zeros((n, 1), np.float32)
        obs[:-1, 0] = term[1:]
        episodes.append({"obs": obs, "action": np.zeros((n, 1), np.float32), "reward": np.zeros(n, np.float32),
                         "is_terminal": term})
    ends = sum(int(e["is_terminal"][-1]) for e in episodes)
    for budget in (1, 64, 100_000):
        s = continue_scores(Oracle(), episodes, steps_per_batch=budget)
        assert s["steps"] == sum(len(e["reward"]) - 1 for e in episodes)
        assert s["terminal_steps"] == ends and ends > 0
        assert s["f1"] == 1.0 and s["over"] == "episodes"
    wrong = [dict(e, obs=np.zeros_like(e["obs"])) for e in episodes]  # never predicts an end
    assert continue_scores(Oracle(), wrong)["recall"] == 0.0


def test_video_of_an_image_model(tmp_path):
    """--video: real | predicted | error per window, context frames then imagined ones."""
    from PIL import Image

    from worldssm.data import collect

    collect("swarm_v0", 4, 80, tmp_path / "data", seed=0, env_kwargs={"obs_mode": "image", "max_steps": 80})
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=2, checkpoint_every=2)
    Trainer(tmp_path / "data", tmp_path / "run", cfg).run(progress=False)
    res = evaluate(tmp_path / "run", tmp_path / "data", tmp_path / "ev",
                   EvalConfig(context=8, video=True, video_horizon=12, video_windows=2, split="all"))
    gif = Image.open(res["video"])
    assert gif.n_frames == 8 + 12
    assert gif.size == (3 * 32 * 3, 2 * 32 * 3 + 6), "two windows of three 32x32 tiles, scaled x3, under a bar"
    first = np.asarray(gif.convert("RGB")).astype(int)
    real, guess = first[6:6 + 96, :96], first[6:6 + 96, 96:192]
    assert np.abs(real - guess).max() < 3, "context frames show reality in both tiles"
    assert real.std() > 1, "a real frame is drawn"
    gif.seek(8 + 11)
    last = np.asarray(gif.convert("RGB")).astype(int)
    assert last[0, -1].tolist() != [0, 0, 0] and first[0, -1].tolist() == [0, 0, 0], "the bar fills up"
    assert last[0, 0, 0] > last[0, 0, 1], "and turns red for imagined frames"


def test_video_refuses_a_vector_model(pendulum_run, pendulum_data, tmp_path):
    with pytest.raises(WorldssmError, match="--video draws image observations"):
        evaluate(pendulum_run, pendulum_data, tmp_path / "ev", EvalConfig(video=True))
    assert not (tmp_path / "ev").exists(), "refused before anything was evaluated"
