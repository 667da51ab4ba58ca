"""Tick latency of the Ray simulation: Compiled Graph against plain actor calls, in one run.

Run as `python -m worldssm.bench.tick [--out DIR] [--agents 16 256 4096] [--ticks N] [--rounds R]`.
Setup: swarm_v0 (vector observations, discrete actions, greedy agents) in real mode, 2
EnvActors and 1 EngineActor on a local Ray, a DEBUG world model built from the env's spaces.
Per tick the EnvActors and the EngineActor time their own work: `act_ms` (the slower EnvActor's
policies and packing of the engine's payload), `env_ms` (the slower EnvActor's act plus env
step), `engine_ms` (the EngineActor's unpacking + model + packing, of which `model_ms` is the
model). The env step and the engine's observe can run at the same time (see
`worldssm.sim.simulation`), so the actors' work on the tick is counted along its longest
chain of dependencies as the graph was built (`TickResult.work_ms`). What is left of the driver's wall time per tick is
the Ray overhead (transport, scheduling, waiting for a core, and the driver's own packing of
controls and reading of results): `overhead_ms = latency_ms - work_ms`, reported as the median
of per-tick values, and split into `driver_ms` (the driver's own validation, packing and
reading) and the rest (`transport_ms`). `hop_ms_p50` splits the tick's wall time by the hops of
the graph, from timestamps taken in each process (one host, one monotonic clock): driver -> last
EnvActor starting to act, last act done -> EngineActor starting, EngineActor done -> driver
holding the result. The Compiled Graph runs with its threads pinned to cores
(`SimConfig.pin_cpus`, see `sim.executors.CompiledExecutor`); `pinned_cpus` records where.

Before timing, a correctness check runs: both executors must leave bit-identical engine states
after the same ticks; the benchmark refuses to report otherwise. Imports ray only inside `run`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time


ENV = "swarm_v0"


def _source(preset: str = "DEBUG"):
    from worldssm.envs import make
    from worldssm.model import ModelSource
    from worldssm.spaces import space_to_dict

    env = make(ENV, api="batched", n_agents=1)
    return ModelSource.of_preset(preset, space_to_dict(env.single_observation_space),
                                 space_to_dict(env.single_action_space), seed=0)


# The GPU host's scenarios (issue: 1,024 real agents p50 <= 2 ms, 16,384 dream agents <= 8 ms):
# (name, mode, agents, dream fraction). BASE model, EngineActor on the GPU, 4 EnvActors on CPU cores.
GPU_SCENARIOS = (("real 1,024", "real", 1024, 0.0), ("dream 16,384", "dream", 16384, 1.0),
                 ("mixed 16,384", "mixed", 16384, 0.5))


def error_text(exc) -> str:
    """An arm's failure for the record: its type and message, without terminal colours or Ray's
    (pid=..., ip=..., actor_id=...) detail."""
    text = re.sub(r"\x1b\[[0-9;]*m|\s*\(pid=[^)]*\)", "", f"{type(exc).__name__}: {exc}")
    return text[:2000]


def run_gpu(out_dir="tests/bench/results", ticks: int = 200, warmup: int = 20, env_actors: int = 4,
            scenarios=GPU_SCENARIOS, state_dtype: str | None = None) -> dict:
    """The tick on a GPU host: EngineActor on the GPU (BASE), EnvActors on CPU cores; each
    scenario through the Compiled Graph, plain Ray calls and the local backend (no Ray: the
    same actors' code called in this process), so the Ray share is visible. Writes
    `tick-cuda-<time>.json`. `state_dtype` is the engine's SSM state storage (None: the model's)."""
    import numpy as np
    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError
    from worldssm.sim import SimConfig, Simulation, start_ray

    if not torch.cuda.is_available():
        raise WorldssmError("bench tick --device cuda needs a CUDA device")
    source = _source("BASE")
    ray = start_ray(num_cpus=os.cpu_count())
    load_before = os.getloadavg()
    results = []
    for name, mode, n, dream in scenarios:
        row = {"scenario": name, "mode": mode, "agents": n}
        for label, kw in (("compiled", {"executor": "compiled"}), ("plain", {"executor": "plain"}),
                          ("local", {"backend": "local"})):
            cfg = SimConfig(model=source, env=ENV, env_kwargs={"max_steps": 100_000}, agents=n, mode=mode,
                            dream_fraction=dream, env_actors=env_actors, engine_actors=1, agent="greedy",
                            dream_agent="random", device="cuda", seed=0, snapshot_every=10_000, timeout_s=300.0,
                            engine_state_dtype=state_dtype, **kw)
            try:
                with Simulation(cfg) as sim:
                    row[label] = _measure(sim, warmup, ticks)
            except Exception as exc:  # noqa: BLE001 - one arm failing is recorded, the others still run
                row[label] = {"error": error_text(exc)}
            m = row[label]
            print(f"{name:>13} {label:>8}: " + (m["error"] if "error" in m else
                  f"p50 {m['latency_ms']['p50']:.2f} ms p99 {m['latency_ms']['p99']:.2f} (env {m['env_ms_p50']:.2f}, "
                  f"engine {m['engine_ms_p50']:.2f}, model {m['model_ms_p50']:.2f}, overhead "
                  f"{m['overhead_ms']['p50']:.2f}) {m['agent_steps_per_s']:,.0f} agent-steps/s"), flush=True)
        results.append(row)
    result = {
        "bench": "tick", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(0), "cpus": os.cpu_count(), "platform": platform.platform(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                     "numpy": np.__version__},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "setup": {"env": ENV, "env_actors": env_actors, "engine_actors": 1, "model": "BASE", "engine": "cuda",
                  "agent": "greedy (real), random (dream)", "ticks": ticks, "warmup": warmup,
                  "state_dtype": state_dtype or "float32",
                  "ray": f"local, {os.cpu_count()} CPUs, token auth, loopback"},
        "results": results,
    }
    save_result(result, out_dir, "tick-cuda")
    return result


def _config(source, agents: int, executor: str, seed: int = 0):
    from worldssm.sim import SimConfig

    return SimConfig(model=source, env=ENV, env_kwargs={"max_steps": 100_000}, agents=agents, mode="real",
                     env_actors=2, engine_actors=1, agent="greedy", executor=executor, seed=seed,
                     snapshot_every=10_000, timeout_s=120.0)


def correctness_check(source) -> None:
    """Compiled and plain executors must give the same engine states (AssertionError if not)."""
    import numpy as np

    from worldssm import codec
    from worldssm.sim import Simulation
    from worldssm.sim.messages import EngineSnapshot

    states = []
    for executor in ("compiled", "plain"):
        with Simulation(_config(source, 16, executor, seed=1)) as sim:
            for _ in range(5):
                sim.tick()
            raw = sim.ray.get(sim.engine_actors[0].snapshot.remote())
            states.append(codec.unpackb(EngineSnapshot.from_bytes(raw).slab_bytes))
    a, b = states
    assert np.array_equal(a["slots"], b["slots"]), "executors own different slots"
    for k in a["state"]:
        assert np.array_equal(a["state"][k], b["state"][k]), f"executors disagree on state {k}"


def engine_impls(source, agents, reps: int = 200) -> list[dict]:
    """Median time of one `Engine.observe` of `n` agents with the numpy and the PyTorch step
    (this process), checked to agree first. `engine_impls_one_thread` runs it on one thread."""
    import numpy as np
    import torch

    from worldssm.engine import Engine
    from worldssm.model import ModelSource

    torch.set_num_threads(1)
    if isinstance(source, dict):
        source = ModelSource.from_dict(source)
    model = source.load()
    rows = []
    for n in agents:
        rng = np.random.default_rng(n)
        engines = {impl: Engine(model, n, impl=impl) for impl in ("numpy", "torch")}
        obs = rng.standard_normal((n, *model.obs_shape)).astype(np.float32)
        act = rng.integers(0, int(source.action_space["n"]), n)
        resets = np.ones(n, bool)
        row, outs = {"agents": n}, {}
        for impl, eng in engines.items():
            slots = eng.join(n)
            outs[impl] = eng.observe(slots, obs, act, resets).reward
            times = []
            for _ in range(max(30, reps * 16 // max(n, 16))):
                t0 = time.perf_counter()
                eng.observe(slots, obs, act)
                times.append(time.perf_counter() - t0)
            row[f"{impl}_ms"] = float(np.median(times) * 1e3)
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-4, atol=1e-5)
        rows.append(row)
    return rows


def engine_impls_one_thread(source, agents) -> list[dict]:
    """`engine_impls` in a fresh process with one BLAS and one PyTorch thread, as the
    EngineActors run (Ray sets OMP_NUM_THREADS=1 in its workers). numpy's BLAS reads its thread
    count when it loads, so this process cannot change its own; with 2 BLAS threads on 2 busy
    cores one run measured the numpy step at 256 agents at 7.9 ms instead of 0.64 ms."""
    import subprocess

    from worldssm import codec
    from worldssm.bench.env import THREAD_VARS

    code = ("import json, sys; from worldssm import codec; from worldssm.bench.tick import engine_impls; "
            "a = codec.unpackb(sys.stdin.buffer.read()); print(json.dumps(engine_impls(a['source'], a['agents'])))")
    run = subprocess.run([sys.executable, "-c", code], input=codec.packb({"source": source.to_dict(), "agents": list(agents)}),
                         capture_output=True, env={**os.environ, **{v: "1" for v in THREAD_VARS}}, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"the engine step comparison failed:\n{run.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


def _measure(sim, warmup: int, ticks: int) -> dict:
    import numpy as np

    cpus = list(getattr(sim._exec, "cpus", []) or [])

    for _ in range(warmup):
        sim.tick()
    rows = [sim.tick() for _ in range(ticks)]
    if any(r.recovered for r in rows):
        raise RuntimeError("an actor failed during the benchmark")
    lat = np.array([r.latency_ms for r in rows])
    env = np.array([r.env_ms for r in rows])
    eng = np.array([r.engine_ms for r in rows])
    model = np.array([r.model_ms for r in rows])
    driver = np.array([r.driver_ms for r in rows])
    work = np.array([r.work_ms for r in rows])
    over = lat - work
    hops = np.array([r.hop_ms for r in rows])  # [ticks, 3]
    agents = np.array([r.agents for r in rows])
    return {
        "ticks": ticks, "agents_mean": float(agents.mean()),
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        "env_ms_p50": float(np.median(env)), "act_ms_p50": float(np.median([r.act_ms for r in rows])),
        "engine_ms_p50": float(np.median(eng)), "work_ms_p50": float(np.median(work)),
        "model_ms_p50": float(np.median(model)),
        "overhead_ms": {"p50": float(np.percentile(over, 50)), "p99": float(np.percentile(over, 99))},
        "driver_ms_p50": float(np.median(driver)),
        "transport_ms_p50": float(np.median(over - driver)),
        "hop_ms_p50": {k: float(np.median(hops[:, i])) for i, k in enumerate(
            ("driver_to_env", "env_to_engine", "engine_to_driver"))},
        "agent_steps_per_s": float(agents.sum() / (lat.sum() / 1e3)),
        "pinned_cpus": {"env_actors": cpus[:-2], "engine_actor": cpus[-2:-1], "driver": cpus[-1:]} if cpus else None,
    }


def run(out_dir="tests/bench/results", agents=(16, 256, 4096), ticks: int = 200, warmup: int = 20,
        rounds: int = 3) -> dict:
    """Run the benchmark and write `tick-<time>.json` under `out_dir`; returns the result.

    Each agent count runs `rounds` rounds of (Compiled Graph, plain calls), each on fresh actors
    (where the OS places new processes moves a run's p50 by up to 30% from run to run); each
    executor's reported stats are from its median round by p50, and every round's p50 is kept.
    """
    import numpy as np
    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.sim import Simulation, start_ray

    source = _source()
    impls = engine_impls_one_thread(source, agents)  # before Ray's processes share the cores
    ray = start_ray(num_cpus=2)
    correctness_check(source)
    load_before = os.getloadavg()
    results = []
    for n in agents:
        n_ticks = ticks if n <= 1024 else max(20, ticks // 4)
        row = {"agents": n}
        runs = {"compiled": [], "plain": []}
        for _ in range(rounds):
            for executor in ("compiled", "plain"):
                with Simulation(_config(source, n, executor)) as sim:
                    runs[executor].append(_measure(sim, warmup, n_ticks))
        for executor, ms in runs.items():
            ms = sorted(ms, key=lambda m: m["latency_ms"]["p50"])
            row[executor] = dict(ms[len(ms) // 2], p50_ms_rounds=[m["latency_ms"]["p50"] for m in ms])
        row["speedup_compiled_vs_plain"] = row["plain"]["latency_ms"]["p50"] / row["compiled"]["latency_ms"]["p50"]
        results.append(row)
        print(_line(row), flush=True)
    result = {
        "bench": "tick", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": "cpu", "cpus": os.cpu_count(), "platform": platform.platform(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                     "numpy": np.__version__},
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "setup": {"env": ENV, "mode": "real", "env_actors": 2, "engine_actors": 1, "model": "DEBUG",
                  "agent": "greedy", "torch_threads": 1, "engine_impl": _config(source, 16, "compiled").engine_impl,
                  "ray": "local, 2 CPUs, token auth, loopback",
                  "engine_observe": "a fresh process before Ray starts, one BLAS and one PyTorch thread"},
        "correctness": "compiled and plain executors gave bit-identical engine states; the numpy and "
                       "PyTorch engine steps agree to rtol 1e-4",
        "results": results,
        "engine_observe_ms": impls,
    }
    save_result(result, out_dir, "tick")
    return result


def _line(row: dict) -> str:
    c, p = row["compiled"], row["plain"]
    return (f"{row['agents']:>5} agents | compiled p50 {c['latency_ms']['p50']:.2f} ms p99 {c['latency_ms']['p99']:.2f} "
            f"(act {c['act_ms_p50']:.2f}, env {c['env_ms_p50']:.2f}, engine {c['engine_ms_p50']:.2f}, "
            f"work {c['work_ms_p50']:.2f}, overhead {c['overhead_ms']['p50']:.2f} "
            f"= driver {c['driver_ms_p50']:.2f} + transport {c['transport_ms_p50']:.2f}; hops "
            f"{'/'.join(f'{v:.2f}' for v in c['hop_ms_p50'].values())}) | "
            f"plain p50 {p['latency_ms']['p50']:.2f} ms p99 {p['latency_ms']['p99']:.2f} "
            f"(overhead {p['overhead_ms']['p50']:.2f}) | x{row['speedup_compiled_vs_plain']:.2f}")


def main(argv=None) -> int:
    """`python -m worldssm.bench.tick ARGS` is `worldssm bench tick ARGS` (one parser)."""
    from worldssm.cli import main as cli

    return cli(["bench", "tick", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
