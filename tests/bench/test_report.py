"""The README's tables from result files: improve rounds, dreams with bfloat16 states, fidelity, the step."""

from worldssm.bench.report import dream_table, fidelity_table, improve_tables, step_table


def _score(r, returns):
    return {"round": r, "returns": returns, "mean_return": sum(returns) / len(returns), "mean_decision_ms": 600.0 + r,
            "planner": "CEMPlanner", "planner_config": {"samples": 64, "horizon": 24, "iterations": 3}}


def test_improve_table_lists_every_round():
    d = {"config": {"env": "CartPole-v1", "preset": "SMALL", "train_steps": 3000, "mean_rows": 0.5, "seed": 7},
         "scores": [_score(0, [500.0, 170.0]), _score(1, [500.0, 500.0])]}
    row = improve_tables([("improve-x.json", d), ("empty.json", {"config": d["config"], "scores": []})])[-1]
    assert row == ("| CartPole-v1 | SMALL, 3,000 | 0.5 | 7 | CEMPlanner (64, 24, 3) | 335.0, 500.0 | 1 of 2, 2 of 2 | "
                   "not run (file predates it) | 600, 601 | improve-x.json |")
    final = dict(_score(1, [500.0, 430.0]), seeds=[100_007, 100_008])
    row = improve_tables([("improve-z.json", dict(d, final=final))])[-1]
    assert "| round 1, 465.0 (1 of 2) | 600, 601 |" in row
    noted = improve_tables([("improve-y.json", dict(d, note="shared the cores"))])[-1]
    assert noted.endswith("| 600, 601 | improve-y.json: shared the cores |")
    valued = improve_tables([("improve-v.json", dict(d, config=dict(d["config"], value=True)))])[-1]
    assert "| CEMPlanner (64, 24, 3) + value | 335.0, 500.0 |" in valued
    dreamt = improve_tables([("improve-w.json", dict(d, config=dict(d["config"], value=True, value_from="dreams",
                                                                     loss_con=1.0)))])[-1]
    assert dreamt.startswith("| CartPole-v1 | SMALL, 3,000, continue x1 | 0.5 | 7 | CEMPlanner (64, 24, 3) + value in dreams |")


def test_dream_table_shows_the_cpu_arithmetic_ceiling():
    d = {"device": "cpu", "git_sha": "abcdef012", "setup": {"model": "SMALL", "spaces": "Pendulum-v1"},
         "rows": [{"envs": 1024, "median_ms": 40.0, "p99_ms": 42.0, "env_steps_per_s": 25600.0, "floor_ms": 8.0}],
         "arithmetic_floor": {"flops_per_env_step": 1.5e6, "gemm_gflops": {"float32": 200.0, "bfloat16": 400.0}}}
    text = "\n".join(dream_table("dream-cpu.json", d))
    assert "| 1,024 | 40.00 / 42.00 | 25,600 | 8.00 | 128,000 |" in text
    assert "1.50 MFLOP per env" in text and "200 GFLOP/s in float32 (400 in bfloat16)" in text


def test_dream_table_names_the_state_dtype_and_its_drift():
    at = {k: {"obs_mean": 0.1 * i, "reward_mean": 0.01 * i} for i, k in enumerate(("1", "10", "100", "1000"), 1)}
    d = {"device": "NVIDIA H200", "git_sha": "abcdef012", "setup": {"model": "BASE", "spaces": "Pendulum-v1",
                                                                   "state_dtype": "bfloat16"},
         "rows": [{"envs": 4, "median_ms": 1.0, "p99_ms": 2.0, "env_steps_per_s": 4000.0, "state_bytes_per_env": 296960}],
         "drift": {"steps": 1000, "dreams": 64, "state_bf16": {"at_step": at}, "weights": {"at_step": at}}}
    text = "\n".join(dream_table("dream-x.json", d))
    assert "bfloat16 SSM states, 296,960 state bytes per env" in text
    assert "bfloat16 against float32 SSM states 0.1000 at step 1, 0.400 at step 1000" in text


def test_fidelity_table_marks_a_continue_f1_of_the_old_evaluation():
    def rec(f1, over):
        cont = {"f1": f1, "terminal_steps": 9, **({"over": over} if over else {})}
        ev = {"horizons": [1, 8, 32], "obs_nmse": {"model": [0.01, 0.02, 0.3], "repeat_last": [0.1, 1.0, 3.0]},
              "reward_mae": {"model": [0.0], "mean": [0.04]}, "continue": cont}
        return {"preset": "SMALL", "train_steps": 6000,
                "backbones": {"mamba2": {"eval": ev, "targets": {"continue_f1": f1}, "train_seconds": 500.0}}}

    def file(env, f1, over):
        return {"git_sha": "abcdef0", "device": "cpu", "envs": {env: rec(f1, over)}}

    rows = fidelity_table([("a.json", file("CartPole-v1", 0.81, None)), ("b.json", file("Hopper-v5", 0.95, "episodes"))])
    cart, hopper = (next(r for r in rows if r.startswith(f"| {e} ")) for e in ("CartPole-v1", "Hopper-v5"))
    assert "| 0.810* |" in cart and "| 0.950 |" in hopper
    assert rows[-1].startswith("\\* continue F1 over the few ends inside")
    newer = fidelity_table([("a.json", file("CartPole-v1", 0.81, None)), ("c.json", file("CartPole-v1", 0.95, "episodes"))])
    assert not any("*" in r for r in newer), "the newer file replaces the old record and its mark"


def test_fidelity_table_names_the_loss_weights_a_run_recorded():
    ev = {"horizons": [1], "obs_nmse": {"model": [0.01], "repeat_last": [0.1]}, "reward_mae": {"model": [0.0], "mean": [0.04]},
          "continue": {"f1": 0.9, "over": "episodes"}}

    def file(env, **weights):
        return {"git_sha": "abcdef0", "device": "cpu", "envs": {env: {"preset": "SMALL", "train_steps": 6000, "backbones": {
            "mamba2": {"eval": ev, "targets": {"continue_f1": 0.9}, "train_seconds": 500.0, **weights}}}}}

    rows = fidelity_table([("a.json", file("Hopper-v5", loss_rec=10.0, loss_con=5.0)), ("b.json", file("CartPole-v1")),
                           ("c.json", file("Pendulum-v1", loss_rec=10.0))])
    hopper, cart, pend = (next(r for r in rows if r.startswith(f"| {e} ")) for e in ("Hopper-v5", "CartPole-v1", "Pendulum-v1"))
    assert "| SMALL, 6,000, reconstruction x10, continue x5 |" in hopper
    assert "| SMALL, 6,000 |" in cart and "| SMALL, 6,000, reconstruction x10 |" in pend


def test_step_table_gives_the_whole_world_models_byte_bound_fraction_where_recorded():
    env = {"device": "GPU", "git_sha": "abcdef012", "torch": "2.11", "triton": "3.6"}
    row = {"arm": "fused+graph", "batch": 1, "median_us": 25.0, "p99_us": 30.0, "bound_us": 1.5, "fraction_of_bound": 0.06}
    wm = {"arm": "world_model fused+graph", "batch": 1, "median_us": 40.0, "p99_us": 41.0}
    old = step_table("step-x.json", {"env": env, "rows": [row, wm]})
    assert old[-1].endswith("| 40.0 |")
    new = step_table("step-x.json", {"env": env, "rows": [row, dict(wm, bound_us=2.0, fraction_of_bound=0.05)]})
    assert new[-1].endswith("| 40.0 (0.05 of its byte bound) |")
