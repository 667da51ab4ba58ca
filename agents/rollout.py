"""Running an agent for whole episodes of a real env: the score of a planner or any `Agent`.

    result = run_episodes(agent, "Pendulum-v1", episodes=10, seed=0)
    result.returns, result.mean_return, result.decision_ms

The `episodes` episodes run side by side as agents of one batched env (copy i reset with seed
`seed + i`, each copy plays one episode and leaves), so a planner decides for all of them in
one call per tick; `decision_ms` times each of those calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from worldssm.agents.base import AgentInfo


@dataclass(frozen=True)
class EpisodeResult:
    """What `run_episodes` measured: per-episode returns and lengths (episode i is copy i, reset
    with seed + i) and the wall time of every decision (one `act` call for all live agents)."""

    returns: np.ndarray  # float64 [episodes]
    lengths: np.ndarray  # int64 [episodes]
    decision_ms: np.ndarray  # float64 [ticks]

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    def summary(self) -> dict:
        """JSON-ready numbers: returns, lengths, their means, decision latency p50/p99."""
        ms = self.decision_ms
        return {"returns": self.returns.round(3).tolist(), "lengths": self.lengths.tolist(),
                "mean_return": self.mean_return, "std_return": float(self.returns.std()),
                "decision_ms_p50": float(np.median(ms)) if ms.size else None,
                "decision_ms_p99": float(np.percentile(ms, 99)) if ms.size else None}


def run_episodes(agent, env_id: str, episodes: int = 10, seed: int = 0, env_kwargs: dict | None = None,
                 max_ticks: int = 100_000, progress=None) -> EpisodeResult:
    """Let `agent` act in `episodes` episodes of the Gymnasium id `env_id`, all at once.

    Args:
        agent: anything with `act(obs [A, ...], info: AgentInfo) -> actions [A, ...]`; its rows
            are the live episodes (ids 0..episodes-1; an episode's row goes when it ends).
        env_id: a Gymnasium id (`worldssm.envs.make` with the batched API).
        episodes: episodes to play, side by side.
        seed: copy i resets with seed + i.
        env_kwargs: extra keyword arguments of the env.
        max_ticks: a bound on ticks (an env that never ends is an error, not a hang).
        progress: optional callable(tick, live agents) called after each tick.

    Raises:
        ValueError: episodes < 1, or the episodes did not end within `max_ticks`.
    """
    from worldssm.envs import make

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make(env_id, api="batched", n_agents=episodes, autoreset="off", **dict(env_kwargs or {}))
    try:
        obs, info = env.reset(seed=seed)
        ids = np.asarray(info["agent_ids"], np.int64)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, np.int64)
        first = np.ones(ids.size, bool)
        times = []
        for tick in range(max_ticks):
            if ids.size == 0:
                break
            t0 = time.perf_counter()
            actions = agent.act(obs, AgentInfo(ids=ids, tick=tick, first=first))
            times.append(time.perf_counter() - t0)
            obs, reward, term, trunc, _ = env.step(actions)
            returns[ids] += reward
            lengths[ids] += 1
            live = ~(np.asarray(term) | np.asarray(trunc))
            ended = ids[~live]
            if ended.size and hasattr(agent, "forget"):
                agent.forget(ended)
            ids, obs, first = ids[live], obs[live], np.zeros(int(live.sum()), bool)
            if progress is not None:
                progress(tick, ids.size)
        else:
            raise ValueError(f"{env_id}: {ids.size} episodes still running after {max_ticks} ticks")
    finally:
        env.close()
    return EpisodeResult(returns, lengths, np.array(times) * 1e3)


def check_env_spaces(env_id: str, model, where: str) -> None:
    """WorldssmError unless the observation and action spaces of the env `env_id` are those of
    `model` (anything with `obs_space` and `action_space` SPACE dicts); the error names the env,
    `where` the model came from, which space and the field that differs."""
    from worldssm.envs import make
    from worldssm.spaces import require_same_spaces, space_to_dict

    probe = make(env_id, api="batched", n_agents=1)
    try:
        require_same_spaces(env_id, space_to_dict(probe.single_observation_space),
                            space_to_dict(probe.single_action_space), model, where)
    finally:
        probe.close()


def plan_in_env(checkpoint, env_id: str | None = None, cfg=None, episodes: int = 10, seed: int = 0,
                device: str = "cpu", progress: bool = False, value: bool = False) -> dict:
    """A planner over the model of `checkpoint` plays `episodes` episodes of the real env.

    Args:
        checkpoint: a run or checkpoint directory, or a list of two or more: the planner then
            imagines with all their models (`agents.ensemble.EnsembleEngine`: mean reward, the
            lowest continue probability).
        env_id: the Gymnasium id to act in (default: the one the model was trained on); its
            spaces must be the model's.
        cfg: a `PlannerConfig` or preset name (default "fast").
        episodes, seed: as `run_episodes` (the planner's candidates are seeded with `seed` too).
        device: where the model imagines.
        progress: show a progress bar over ticks.
        value: plan with the value saved in the run (`worldssm improve --value`; see
            `agents.value`): what follows each plan's horizon.

    Returns:
        JSON-ready dict: env, checkpoint, planner settings, `EpisodeResult.summary()` fields,
        imagined agent-steps per decision and per second, engine impl and device.

    Raises:
        WorldssmError: the env's spaces differ from the model's (the field is named).
    """
    import dataclasses

    from worldssm.agents.ensemble import planning_engine
    from worldssm.agents.planners import make_planner, preset_config
    from worldssm.engine import Engine
    from worldssm.errors import WorldssmError
    from worldssm.model import load_model

    checkpoints = list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    if not checkpoints:
        raise WorldssmError("plan_in_env: no checkpoint given")
    if value and len(checkpoints) > 1:
        raise WorldssmError("plan_in_env: a saved value belongs to one model; plan an ensemble without value=True")
    cfg = preset_config(cfg)
    engines = []
    for ckpt in checkpoints:
        model, sidecar = load_model(ckpt, device=device)
        trained_on = sidecar.get("data", {}).get("env_id")
        env_id = env_id or trained_on
        if not env_id:
            raise WorldssmError(f"{ckpt}: the run records no env; pass env_id")
        check_env_spaces(env_id, model, str(ckpt))
        engines.append(Engine(model, capacity=episodes * (cfg.samples * cfg.particles + 1), device=device,
                              sample=cfg.particles > 1, seed=seed))
    engine = planning_engine(engines)
    fitted = None
    if value:
        from worldssm.agents.value import load_value
        from worldssm.checkpoint import resolve_checkpoint

        fitted = load_value(resolve_checkpoint(checkpoints[0]).parent.parent)  # RUN/checkpoints/step-N -> RUN
    # Capture the CUDA graphs of every batch the search will step (episodes x candidates, down to
    # one episode still running) and of every observe (one row per running episode) before the
    # first decision: a first use mid-episode stalls that decision for seconds (CartPole on an
    # H100: a p99 of 4,978 ms against a p50 of 77; 2,021 with the imagine batches warmed alone).
    t_warm = time.perf_counter()
    for e in engines:
        e.warm([n * cfg.samples * cfg.particles for n in range(1, episodes + 1)], verbs=("imagine",))
        e.warm(range(1, episodes + 1), verbs=("observe",))
    warmup_s = time.perf_counter() - t_warm
    planner = make_planner(engine, cfg, seed=seed, value=fitted)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="tick", desc=f"plan {env_id}", dynamic_ncols=True)
    try:
        result = run_episodes(planner, env_id, episodes, seed,
                              progress=(lambda tick, live: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    per_decision = cfg.imagined_steps
    batch = episodes * cfg.samples * cfg.particles  # rows of one imagined step while every episode runs
    raw = raw_imagine_rate(engine, batch, seed)
    planned = planner.imagined_steps_per_second()
    return {"env": env_id, "checkpoint": str(checkpoints[0]) if len(checkpoints) == 1 else [str(c) for c in checkpoints],
            "ensemble": len(checkpoints), "episodes": episodes, "seed": seed,
            "planner": type(planner).__name__, "planner_config": dataclasses.asdict(cfg),
            **result.summary(), "imagined_steps_per_agent_decision": per_decision,
            "imagined_steps_per_s": planned, "raw_step_batch": batch, "raw_steps_per_s": raw,
            "planning_overhead": raw / planned - 1 if planned else None,
            "engine_impl": engine.impl, "device": device, "value": None if fitted is None else fitted.fit,
            "warmup_s": warmup_s}


def raw_imagine_rate(engine, batch: int, seed: int = 0, reps: int = 30) -> float:
    """Agent-steps/s of the engine's bare `imagine` over `batch` rows (median of `reps` timed
    calls after 3 warm-ups): the step a planner's search pays for, without the search."""
    from worldssm.spaces import space_from_dict

    if batch > engine.slab.num_free:
        raise ValueError(f"raw_imagine_rate: {batch} rows need as many free slots; the engine has {engine.slab.num_free} free")
    space = space_from_dict(engine.action_space)
    space.seed(seed)
    actions = np.stack([space.sample() for _ in range(batch)])
    slots = engine.join(batch)
    try:
        times = []
        for i in range(reps + 3):
            t0 = time.perf_counter()
            out = engine.imagine(slots, actions)
            out.reward.cpu()  # waits for the device
            if i >= 3:
                times.append(time.perf_counter() - t0)
    finally:
        engine.leave(slots)
    return batch / float(np.median(times))
