"""The README's tables from result files: improve rounds and dreams with bfloat16 states."""

from worldssm.bench.report import dream_table, improve_tables


def _score(r, returns):
    return {"round": r, "returns": returns, "mean_return": sum(returns) / len(returns), "mean_decision_ms": 600.0 + r,
            "planner": "CEMPlanner", "planner_config": {"samples": 64, "horizon": 24, "iterations": 3}}


def test_improve_table_lists_every_round():
    d = {"config": {"env": "CartPole-v1", "preset": "SMALL", "train_steps": 3000, "mean_rows": 0.5, "seed": 7},
         "scores": [_score(0, [500.0, 170.0]), _score(1, [500.0, 500.0])]}
    row = improve_tables([("improve-x.json", d), ("empty.json", {"config": d["config"], "scores": []})])[-1]
    assert row == ("| CartPole-v1 | SMALL, 3,000 | 0.5 | 7 | CEMPlanner (64, 24, 3) | 335.0, 500.0 | 1 of 2, 2 of 2 | "
                   "600, 601 | improve-x.json |")


def test_dream_table_names_the_state_dtype_and_its_drift():
    at = {k: {"obs_mean": 0.1 * i, "reward_mean": 0.01 * i} for i, k in enumerate(("1", "10", "100", "1000"), 1)}
    d = {"device": "NVIDIA H200", "git_sha": "abcdef012", "setup": {"model": "BASE", "spaces": "Pendulum-v1",
                                                                   "state_dtype": "bfloat16"},
         "rows": [{"envs": 4, "median_ms": 1.0, "p99_ms": 2.0, "env_steps_per_s": 4000.0, "state_bytes_per_env": 296960}],
         "drift": {"steps": 1000, "dreams": 64, "state_bf16": {"at_step": at}, "weights": {"at_step": at}}}
    text = "\n".join(dream_table("dream-x.json", d))
    assert "bfloat16 SSM states, 296,960 state bytes per env" in text
    assert "bfloat16 against float32 SSM states 0.1000 at step 1, 0.400 at step 1000" in text
