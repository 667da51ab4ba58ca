"""The lowest one-step error any predictor of swarm_v0 (vector observations) can reach, even one
that sees the whole world (the fidelity issue's targets).

    python scripts/swarm_floor.py --episodes 2 --branches 40 --out floor.json

The fidelity suite collects swarm_v0 with the greedy food seeker (10% random actions) and 32
agents. One agent's next observation depends on what the others do this tick (their random
actions), on where eaten food reappears and on where new agents spawn: draws that no observation
holds. From the full state of the world at tick t (every agent, every food item, the env's
random stream replaced), `--branches` copies take the next tick with fresh draws for the other
agents' noise and the env; for each agent, the copies in which its own action is the one it took
(the action a model is given) are draws of o_{t+1} given the whole state and that action. Their
variance is what no predictor can remove, even one given the whole state:

    E[(f(o_<=t, a_<=t) - o_{t+1})^2] >= E[Var(o_{t+1} | state_t, a_t)]

averaged in the protocol's units (`evaluate.error_units` over the collected observations) over
the agents that have lived at least 16 ticks (the open-loop protocol's first scored step), beside
repeat-last's error on the same steps. A model sees less than the state (its own view, not the
others' food or headings), so its floor is higher than this one.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

from worldssm.envs import make
from worldssm.envs.swarm.steer import food_seeking_actions
from worldssm.train.evaluate import error_units


def episode(seed: int, branches: int, every: int, agents: int = 32, max_steps: int = 300, noise: float = 0.1,
            min_age: int = 16) -> dict:
    env = make("swarm_v0", api="batched", n_agents=agents, max_steps=max_steps)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed + 7)
    born = {int(i): 0 for i in env.agent_ids}
    all_obs, spread, last = [obs], [], []
    for t in range(max_steps - 1):
        scored = t >= min_age and t % every == 0
        ids = env.agent_ids.copy()
        state = copy.deepcopy(env) if scored else None  # the whole world before this tick
        act = food_seeking_actions(env, rng, noise)
        nxt, _, term, trunc, info = env.step(act)
        all_obs.append(nxt)
        if scored:
            replay = copy.deepcopy(state).step(act)[0]  # the copy is the whole state: same draws, same tick
            assert np.array_equal(replay, nxt), "a copy of the world did not replay its own tick"
            outs, acts = [], []
            for b in range(branches):
                e = copy.deepcopy(state)
                e.rng = np.random.default_rng(10_000 * seed + 100 * t + b + 1)  # spawns and food respawns
                a = food_seeking_actions(e, np.random.default_rng(7_000_000 + 10_000 * seed + 100 * t + b), noise)
                outs.append(e.step(a)[0])
                acts.append(a)
            outs, acts = np.array(outs, np.float64), np.array(acts)  # [B, A, D], [B, A]
            for row, i in enumerate(ids):
                if t - born[int(i)] < min_age:
                    continue
                same = acts[:, row] == act[row]
                if same.sum() >= 2:
                    spread.append(outs[same, row].var(0, ddof=1))
                    last.append((nxt[row].astype(np.float64) - obs[row]) ** 2)
        for i in info["spawned_ids"]:
            born[int(i)] = t + 1
        if trunc.any() or env.num_agents == 0:
            break
        # the live agents' observations in `env.agent_ids` order: survivors', then newcomers' first ones
        obs = np.concatenate([nxt[~term], info["spawned_obs"]]).astype(np.float64)
    return {"obs": np.concatenate(all_obs), "spread": spread, "last": last}


def measure(episodes: int, branches: int, every: int) -> dict:
    eps = [episode(s, branches, every) for s in range(episodes)]
    units = error_units(np.concatenate([e["obs"] for e in eps]).astype(np.float64))
    spread = np.concatenate([np.array(e["spread"]) for e in eps]) / units
    last = np.concatenate([np.array(e["last"]) for e in eps]) / units
    floor, rep = spread.mean(1), last.mean(1)
    return {"episodes": episodes, "branches": branches, "every": every, "scored_agent_steps": int(floor.size),
            "floor": float(floor.mean()), "repeat_last": float(rep.mean()),
            "floor_over_repeat_last": float(floor.mean() / rep.mean()),
            "note": "floor: mean over scored agent-steps of Var(o_{t+1} | the whole state at t, the agent's own "
                    "action) in the protocol's units, a lower bound for any predictor's horizon-1 error "
                    "(scripts/swarm_floor.py)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=2, help="episodes of 300 ticks (seeds 0, 1, ...)")
    p.add_argument("--branches", type=int, default=40, help="copies of the world per scored tick")
    p.add_argument("--every", type=int, default=3, help="score every this many ticks")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args()
    if min(a.episodes, a.branches, a.every) < 1:
        p.error("--episodes, --branches and --every must be >= 1")
    from worldssm.bench.env import record_script_result

    res = measure(a.episodes, a.branches, a.every)
    record_script_result(res, "swarm_floor.py", a, a.out)


if __name__ == "__main__":
    main()
