"""`worldssm improve`, tiny: rounds of train -> plan (recorded), scores per round, and a loop
interrupted mid-stage that resumes where it stopped."""

import json

import pytest

from worldssm.data import RolloutDataset
from worldssm.errors import WorldssmError
from worldssm.improve import Improvement, ImproveConfig, improve

TINY = ImproveConfig(env="Pendulum-v1", rounds=1, preset="DEBUG", train_steps=4, random_agents=2, random_steps=150,
                     episodes=2, samples=4, horizon=3)


def test_rounds_record_the_planner_and_train_on_everything(tmp_path):
    out = tmp_path / "loop"
    state = improve(out, TINY)
    assert state["done"] == ["data-00", "train-00", "plan-00", "final-01"]
    score = state["scores"][0]
    assert len(score["returns"]) == 2 and score["seeds"] == [0, 1] and score["decisions"] == 200
    played = RolloutDataset.load(out / "data" / "round-01")
    assert len(played.episodes) == 2 and all(len(e["reward"]) == 201 for e in played.episodes)
    assert sorted(round(float(e["reward"].sum()), 3) for e in played.episodes) == sorted(score["returns"])
    assert json.loads((out / "round-00" / "plan.json").read_text())["returns"] == score["returns"]
    # The final test: the best round's model on seeds no round plays, not added to the data.
    final = state["final"]
    assert final["round"] == 0 and final["seeds"] == [100_000, 100_001]
    assert json.loads((out / "final.json").read_text())["returns"] == final["returns"]
    tested = RolloutDataset.load(out / "final-01")
    assert sorted(round(float(e["reward"].sum()), 3) for e in tested.episodes) == sorted(final["returns"])
    assert final["returns"] != score["returns"], "fresh seeds give other episodes"
    # More rounds on resume: round 1 trains on the random data and round 0's planner episodes.
    state = improve(out, None, resume=True, rounds=2, progress=True)  # with the progress bars a terminal shows
    assert state["done"][-3:] == ["train-01", "plan-01", "final-02"] and len(state["scores"]) == 2
    best = max(state["scores"], key=lambda s: (s["mean_return"], s["round"]))["round"]
    assert state["final"]["round"] == best
    sidecar = json.loads((out / "round-01" / "run" / "config.json").read_text())
    assert sidecar["train_config"]["steps"] == 4
    episodes = RolloutDataset.load(out / "data").episodes
    assert {e["agent"].split("/")[0] for e in episodes} == {"round-00", "round-01", "round-02"}


def test_an_ensemble_loop_trains_its_members_and_plans_with_all_of_them(tmp_path):
    import dataclasses

    out = tmp_path / "loop"
    state = improve(out, dataclasses.replace(TINY, ensemble=2))
    assert state["done"] == ["data-00", "train-00", "plan-00", "final-01"]
    assert state["scores"][0]["ensemble"] == 2 and state["final"]["ensemble"] == 2
    seeds = [json.loads((out / "round-00" / d / "config.json").read_text())["train_config"]["seed"]
             for d in ("run", "run-1")]
    assert seeds[0] != seeds[1], "the members train from different seeds"
    assert len(state["scores"][0]["returns"]) == 2


def test_a_value_is_fitted_on_each_rounds_data_and_planned_with(tmp_path):
    """By default the value is iterated in the model's dreams (Pendulum too, whose episodes only
    end by their time limit). Fitted to returns instead: CartPole's random episodes end by
    termination, so every step has a return to learn; Pendulum's time limit is shorter than the
    discount's reach, which is refused with the reason, after training, before any planning."""
    import dataclasses

    pend = improve(tmp_path / "pend", dataclasses.replace(TINY, value=True, value_iterations=30))
    fit = json.loads((tmp_path / "pend" / "round-00" / "run" / "value.json").read_text())
    assert fit["fit"]["method"] == "dreams" and fit["config"]["iterations"] == 30
    assert pend["scores"][0]["value"] == fit["fit"]
    cart = dataclasses.replace(TINY, env="CartPole-v1", random_steps=60, value=True, value_from="returns", loss_con=2.5)
    state = improve(tmp_path / "cart", cart)
    trained = json.loads((tmp_path / "cart" / "round-00" / "run" / "config.json").read_text())["model_config"]
    assert trained["loss_con"] == 2.5, "the loop's continue weight reaches the model"
    fit = json.loads((tmp_path / "cart" / "round-00" / "run" / "value.json").read_text())["fit"]
    assert state["scores"][0]["value"] == fit and fit["rows"] > 0 and fit["target_max"] > 0
    with pytest.raises(WorldssmError, match="can be valued"):
        improve(tmp_path / "pend-returns", dataclasses.replace(TINY, value=True, value_from="returns"))
    # a loop saved before values were iterated in dreams resumes fitting them to returns
    saved = json.loads((tmp_path / "cart" / "improve.json").read_text())
    del saved["config"]["value_from"], saved["config"]["value_iterations"], saved["config"]["loss_con"]
    (tmp_path / "cart" / "improve.json").write_text(json.dumps(saved))
    resumed = Improvement(tmp_path / "cart", resume=True).cfg
    assert resumed.value_from == "returns" and resumed.loss_con is None, "as the loop was made"
    assert ImproveConfig(env="CartPole-v1").loss_con == 1.0, "a new loop trains a soft continue head for its planner"


def test_an_interrupted_loop_resumes_after_its_last_finished_stage(tmp_path, monkeypatch):
    out = tmp_path / "loop"
    real_plan = Improvement._plan
    monkeypatch.setattr(Improvement, "_plan", lambda self, r: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        improve(out, TINY)
    assert json.loads((out / "improve.json").read_text())["done"] == ["data-00", "train-00"]
    monkeypatch.setattr(Improvement, "_plan", real_plan)
    trained = [p.name for p in (out / "round-00" / "run" / "checkpoints").iterdir()]
    state = improve(out, resume=True)
    assert state["done"] == ["data-00", "train-00", "plan-00", "final-01"]
    assert [p.name for p in (out / "round-00" / "run" / "checkpoints").iterdir()] == trained, "not retrained"


def test_misuse(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WorldssmError, match="not empty: pass --resume"):
        improve(tmp_path / "full", TINY)
    with pytest.raises(WorldssmError, match="nothing to resume"):
        improve(tmp_path / "none", resume=True)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        ImproveConfig(env="Pendulum-v1", rounds=0)
    with pytest.raises(WorldssmError, match="rounds must be >= 1, got 0"):  # not read as "the default"
        improve(tmp_path / "zero", TINY, rounds=0)
    with pytest.raises(WorldssmError, match="rounds must be >= 1, got 0"):
        improve(tmp_path / "full", resume=True, rounds=0)
    with pytest.raises(ValueError, match="planner must be one of"):
        ImproveConfig(env="Pendulum-v1", planner="best")
    with pytest.raises(ValueError, match="ensemble must be >= 1, got 0"):
        ImproveConfig(env="Pendulum-v1", ensemble=0)
    with pytest.raises(ValueError, match="does not go with ensemble > 1"):
        ImproveConfig(env="Pendulum-v1", ensemble=2, value=True)
