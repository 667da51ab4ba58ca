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

`--checkpoint RUN` times a trained model instead (dreams start from the run's data).
`--state-dtype bfloat16` stores the SSM states in bfloat16 (`Engine(state_dtype=...)`, half an
agent's bytes) and adds `drift`: the same dreams imagined 1,000 steps with bfloat16 and float32
states, same weights and actions, compared step by step (see `drift`).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


ENVS = (1, 64, 1024, 16384)


def _setup(device: str, workdir: Path, checkpoint=None):
    import torch

    from worldssm.data import collect
    from worldssm.dream import Contexts
    from worldssm.envs import make
    from worldssm.model import WorldModel, preset
    from worldssm.spaces import space_to_dict

    if checkpoint is not None:
        from worldssm.dream import _source

        return _source(checkpoint, None, 16, device)
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


def _random_actions(space, shape: tuple, rng) -> np.ndarray:
    """Uniform random actions [*shape, ...] of a DreamVectorEnv's single action space."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, shape).astype(np.int64)
    return rng.uniform(space.low, space.high, (*shape, *space.shape)).astype(np.float32)


def check(model, contexts, device: str, state_dtype=None) -> None:
    """Batched dreams equal dreams stepped one at a time (AssertionError otherwise)."""
    import torch

    from worldssm.dream import DreamVectorEnv

    batch = DreamVectorEnv(model, 8, data=contexts, device=device, state_dtype=state_dtype)
    singles = [DreamVectorEnv(model, 1, data=contexts, device=device, state_dtype=state_dtype) for _ in range(8)]
    rng = np.random.default_rng(0)
    actions = _random_actions(batch.single_action_space, (5, 8), rng)
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


def measure(model, contexts, n: int, seconds: float, device: str, state_dtype=None) -> dict:
    import torch

    from worldssm.dream import DreamVectorEnv

    env = DreamVectorEnv(model, n, data=contexts, device=device, max_steps=200, state_dtype=state_dtype)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = _random_actions(env.single_action_space, (16, n), rng)
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
            "engine_impl": env.dreams.engine.impl, "state_bytes_per_env": env.dreams.engine.slab.slot_nbytes}


def arithmetic_floor(model, n: int = 1024, seconds: float = 1.0) -> dict:
    """What this CPU's arithmetic allows a dream step, whatever the code around the products.

    `flops_per_env_step`: the matrix products of one imagined step with decoding (torch's
    FlopCounterMode over `Engine.imagine(..., decode=True)`, n dreams, divided by n).
    `gemm_gflops`: the best float32 matrix-product rate numpy reaches here at the step's shapes
    ([n, 384] @ [384, 256] and [n, 256] @ [256, 256]), each the median over `seconds`, and
    PyTorch's bfloat16 rate at the same shapes (what a bfloat16 CPU step could reach at best).
    A row's floor is envs x flops / rate: no step that does these products is faster.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from worldssm.engine import Engine
    from worldssm.spaces import space_from_dict

    eng = Engine(model, n, impl="torch")
    slots = eng.join(n)
    acts = _random_actions(space_from_dict(model.action_space), (n,), np.random.default_rng(0))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        eng.imagine(slots, acts, decode=True)
    flops = counter.get_total_flops() / n
    rates = {"float32": 0.0, "bfloat16": 0.0}
    rng = np.random.default_rng(0)
    for k, m in ((384, 256), (256, 256)):
        a, b = rng.standard_normal((n, k), np.float32), rng.standard_normal((k, m), np.float32)
        ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
        for name, f in (("float32", lambda: a @ b), ("bfloat16", lambda: ta @ tb)):
            times, deadline = [], time.perf_counter() + seconds
            f()
            while time.perf_counter() < deadline or len(times) < 5:
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            rates[name] = max(rates[name], 2 * n * k * m / float(np.median(times)) / 1e9)
    return {"flops_per_env_step": flops, "gemm_gflops": rates,
            "note": "floor_ms = envs x flops_per_env_step / gemm rate; the ceiling in env-steps/s is its inverse"}


def drift(model, contexts, device: str, steps: int = 1000, n: int = 64, seed: int = 0) -> dict:
    """How far dreams with bfloat16 SSM states drift from the same dreams with float32 states.

    `n` dreams burn in the same real context windows in two engines that differ only in
    `state_dtype` (same weights, the engine's default precision), then imagine `steps` steps
    with the same random actions. Per step, the decoded observations differ by |d| (in units of
    the context data's per-dimension standard deviation, averaged over dimensions) and the
    rewards by |dr|. For scale, the same is measured between two float32-state engines whose
    weights differ: the engine's default precision and float32 (on the CPU both are float32,
    so that pair is identical).

    Returns: {"steps", "dreams", "state_bf16": {...}, "weights": {...}, "obs_std"}, each pair
    with the mean and max over dreams of the observation and reward divergence at steps 1, 10,
    100 and `steps`, and over the whole rollout.
    """
    import torch

    from worldssm.engine import Engine
    from worldssm.spaces import space_from_dict

    rng = np.random.default_rng(seed)
    ctx_obs, ctx_act = contexts.draw(rng, n)
    ctx_obs = np.asarray(ctx_obs, np.float32)
    std = ctx_obs.reshape(-1, *ctx_obs.shape[2:]).std(0).astype(np.float32) + 1e-6
    weights = next(model.parameters()).dtype
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def rollout(state_dtype, precision):
        model.to(weights)  # an Engine casts the backbone in place: start from the same weights
        model.load_state_dict(state)
        eng = Engine(model, n, device=device, state_dtype=state_dtype, precision=precision, graphs="off")
        slots = eng.join(n)
        for t in range(ctx_act.shape[1]):
            eng.observe(slots, ctx_obs[:, t], ctx_act[:, t], resets=np.full(n, t == 0))
        out = eng.observe(slots, ctx_obs[:, -1], acts[0], decode=True)
        obs, rew = [out.obs.float().cpu().numpy()], [out.reward.cpu().numpy()]
        for t in range(1, steps):
            out = eng.imagine(slots, acts[t], decode=True)
            obs.append(out.obs.float().cpu().numpy())
            rew.append(out.reward.cpu().numpy())
        return np.stack(obs), np.stack(rew)  # [steps, n, ...], [steps, n]

    acts = _random_actions(space_from_dict(model.action_space), (steps, n), rng)  # the model's own bounds
    with torch.no_grad():
        ref = rollout("float32", "auto")
        bf16 = rollout("bfloat16", "auto")
        full = rollout("float32", "float32")
    model.to(weights)
    model.load_state_dict(state)

    def compare(a, b) -> dict:
        d_obs = (np.abs(a[0] - b[0]) / std).reshape(steps, n, -1).mean(-1)  # [steps, n]
        d_rew = np.abs(a[1] - b[1])
        at = {str(k): {"obs_mean": float(d_obs[k - 1].mean()), "obs_max": float(d_obs[k - 1].max()),
                       "reward_mean": float(d_rew[k - 1].mean()), "reward_max": float(d_rew[k - 1].max())}
              for k in sorted({1, 10, 100, steps}) if k <= steps}
        return {"at_step": at, "obs_mean": float(d_obs.mean()), "obs_max": float(d_obs.max()),
                "reward_mean": float(d_rew.mean()), "reward_max": float(d_rew.max())}

    return {"steps": steps, "dreams": n, "obs_std": std.tolist(), "state_bf16": compare(ref, bf16),
            "weights": compare(ref, full)}


def run(out_dir="tests/bench/results", device: str = "cpu", envs=ENVS, seconds: float = 3.0, workdir=None,
        checkpoint=None, state_dtype=None, drift_steps: int = 1000) -> dict:
    import tempfile

    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError

    if device == "cuda" and not torch.cuda.is_available():
        raise WorldssmError("--device cuda but torch sees no CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        model, contexts = _setup(device, Path(workdir or tmp), checkpoint)
        drifted = drift(model, contexts, device, drift_steps) if state_dtype == "bfloat16" else None
        if drifted is not None:
            s = drifted["state_bf16"]
            print(f"bfloat16 states over {drifted['steps']} steps: observations off by {s['obs_mean']:.4f} std "
                  f"(max {s['obs_max']:.4f}), rewards by {s['reward_mean']:.4f} (max {s['reward_max']:.4f})", flush=True)
        check(model, contexts, device, state_dtype)
        floor = arithmetic_floor(model, seconds=min(1.0, seconds)) if device != "cuda" else None
        rows = []
        for n in envs:
            rows.append(measure(model, contexts, n, seconds, device, state_dtype))
            line = f"{n:>6} envs: {rows[-1]['median_ms']:.2f} ms per step, {rows[-1]['env_steps_per_s']:,.0f} env-steps/s"
            if floor is not None:
                rows[-1]["floor_ms"] = n * floor["flops_per_env_step"] / (floor["gemm_gflops"]["float32"] * 1e6)
                line += f" (float32 products alone: {rows[-1]['floor_ms']:.2f} ms)"
            print(line, flush=True)
    result = {"bench": "dream", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "cpus": os.cpu_count(),
              "platform": platform.platform(), "load_avg_before": os.getloadavg(),
              "versions": {"torch": torch.__version__, "numpy": np.__version__},
              "setup": {"model": str(checkpoint) if checkpoint else ("BASE" if device == "cuda" else "SMALL"),
                        "spaces": "the run's" if checkpoint else "Pendulum-v1",
                        "context": 16, "max_steps": 200, "seconds": seconds,
                        "state_dtype": state_dtype or model.cfg.backbone.state_dtype},
              "drift": drifted, "arithmetic_floor": floor,
              "correctness": "batched dreams equal dreams stepped one at a time (8 rows, 5 steps)",
              "rows": rows}
    save_result(result, out_dir, f"dream-{'cuda' if device == 'cuda' else 'cpu'}")
    return result
