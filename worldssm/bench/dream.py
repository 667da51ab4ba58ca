"""Dream throughput: `DreamVectorEnv` env-steps per second at 1, 64, 1,024 and 16,384 envs.

Run as `worldssm bench dream [--device cpu|cuda] [--envs 1 64 1024 16384] [--seconds S]`. The
model is an untrained preset over Pendulum-v1's spaces (SMALL on the CPU, BASE on CUDA: speed
does not depend on the weights) and dreams start from windows of random-policy Pendulum
rollouts made in place (a few hundred steps). Each configuration resets once, takes a few
warm-up steps, then times `step` for `--seconds`; an env-step is one env advancing one step
(the first step after a start observes the real observation, later ones imagine; finished
dreams restart from fresh context on the next step, which the timing includes). The untrained
continue head is biased to say "the episode goes on", so dreams end by truncation at 200 steps,
as dreams of a trained model of a long episode would (an untrained head ends half of them every
step, and the restarts' burn-in would be what is timed). Before timing,
a check: the batched dreams equal stepping each one alone (the first 8 rows, 5 steps).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


ENVS = (1, 64, 1024, 16384)


def _setup(device: str, workdir: Path):
    import torch

    from worldssm.data import collect
    from worldssm.dream import Contexts
    from worldssm.envs import make
    from worldssm.model import WorldModel, preset
    from worldssm.spaces import space_to_dict

    env = make("Pendulum-v1", api="batched")
    obs_space, act_space = space_to_dict(env.single_observation_space), space_to_dict(env.single_action_space)
    env.close()
    torch.manual_seed(0)
    model = WorldModel(preset("BASE" if device == "cuda" else "SMALL"), obs_space, act_space)
    with torch.no_grad():  # an untrained continue head ends half the dreams every step: make it say "go on"
        model.cont_head[-1].bias.fill_(10.0)
    if device == "cuda":
        model = model.to(device)
    data = workdir / "data"
    collect("Pendulum-v1", 4, 250, data, seed=0)
    return model, Contexts.from_data(data, 16)


def check(model, contexts, device: str) -> None:
    """Batched dreams equal dreams stepped one at a time (AssertionError otherwise)."""
    import torch

    from worldssm.dream import DreamVectorEnv

    batch = DreamVectorEnv(model, 8, data=contexts, device=device)
    singles = [DreamVectorEnv(model, 1, data=contexts, device=device) for _ in range(8)]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (5, 8, 1)).astype(np.float32)
    # Start every single dream from the batch's own context (same windows), then step both ways.
    ctx_obs, ctx_act = contexts.draw(np.random.default_rng(11), 8)
    batch.dreams.start(np.arange(8), None, (ctx_obs, ctx_act))
    for i, one in enumerate(singles):
        one.dreams.start(np.array([0]), None, (ctx_obs[i:i + 1], ctx_act[i:i + 1]))
    for t in range(5):
        b_obs, b_rew, *_ = batch.dreams.step(actions[t], rng)
        for i, one in enumerate(singles):
            o, r, *_ = one.dreams.step(actions[t, i:i + 1], rng)
            # CUDA: a bfloat16 backbone (Engine precision "auto"), whose products round
            # differently at batch 1 and 8; a row mixed up with another is off by far more.
            tol = 3e-2 if device == "cuda" else 1e-4
            torch.testing.assert_close(torch.as_tensor(o[0]), torch.as_tensor(b_obs[i]), rtol=tol, atol=tol)
            torch.testing.assert_close(torch.as_tensor(r[0]), torch.as_tensor(b_rew[i]), rtol=tol, atol=tol)


def measure(model, contexts, n: int, seconds: float, device: str) -> dict:
    import torch

    from worldssm.dream import DreamVectorEnv

    env = DreamVectorEnv(model, n, data=contexts, device=device, max_steps=200)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (16, n, 1)).astype(np.float32)
    for i in range(5):
        env.step(actions[i % 16])
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        env.step(actions[len(times) % 16])
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    return {"envs": n, "steps": len(times), "median_ms": float(np.median(t) * 1e3),
            "p99_ms": float(np.percentile(t, 99) * 1e3), "env_steps_per_s": float(n / np.median(t)),
            "engine_impl": env.dreams.engine.impl}


def run(out_dir="tests/bench/results", device: str = "cpu", envs=ENVS, seconds: float = 3.0, workdir=None) -> dict:
    import tempfile

    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError

    if device == "cuda" and not torch.cuda.is_available():
        raise WorldssmError("--device cuda but torch sees no CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        model, contexts = _setup(device, Path(workdir or tmp))
        check(model, contexts, device)
        rows = []
        for n in envs:
            rows.append(measure(model, contexts, n, seconds, device))
            print(f"{n:>6} envs: {rows[-1]['median_ms']:.2f} ms per step, {rows[-1]['env_steps_per_s']:,.0f} env-steps/s",
                  flush=True)
    result = {"bench": "dream", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "cpus": os.cpu_count(),
              "platform": platform.platform(), "load_avg_before": os.getloadavg(),
              "versions": {"torch": torch.__version__, "numpy": np.__version__},
              "setup": {"model": "BASE" if device == "cuda" else "SMALL", "spaces": "Pendulum-v1",
                        "context": 16, "max_steps": 200, "seconds": seconds},
              "correctness": "batched dreams equal dreams stepped one at a time (8 rows, 5 steps)",
              "rows": rows}
    save_result(result, out_dir, f"dream-{'cuda' if device == 'cuda' else 'cpu'}")
    return result
