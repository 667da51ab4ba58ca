"""The agents a `worldssm serve` server steps: copies of a Gymnasium env ("real"), dreams of a
trained model ("dream"), or both ("mixed": the first half real, the rest dreams).

Every live agent steps every tick: with its remote controller's action when one arrived in time,
else with the fallback (a uniformly random action, or its last action repeated). An agent whose
episode ended waits for its controller's `reset`; an agent nobody controls starts its next
episode at once, so the world goes on when nobody is connected. With a model, real agents also
get the model's prediction for the step they take (reward and continue probability), from one
batched engine call per tick.

Everything a request could get wrong is checked before anything changes: a rejected `step` or
`reset` leaves every agent as it was.
"""

from __future__ import annotations

import numpy as np

from worldssm.choices import FALLBACKS, MODES
from worldssm.errors import WorldssmError
from worldssm.remote.protocol import ProtocolError



class World:
    """N agents stepped together.

    Args:
        env_id: a Gymnasium id (real and mixed modes; the model's env in dream mode).
        mode: "real", "dream" or "mixed".
        agents: agents in the world.
        model: a trained WorldModel (dream and mixed modes; optional in real mode, where it adds
            predictions).
        contexts: `worldssm.dream.Contexts` dreams start from (dream and mixed modes).
        fallback: how an agent acts without its controller's action: "repeat" or "random".
        seed: seeds the episodes (agent i's first episode: seed + i) and the fallback.
        max_steps: dream episodes are truncated after this many steps.
        env_kwargs: the Gymnasium env's keyword arguments.
        device: the engine's device.
    """

    def __init__(self, env_id: str, mode: str = "real", agents: int = 1, model=None, contexts=None,
                 fallback: str = "repeat", seed: int = 0, max_steps: int = 500, env_kwargs: dict | None = None,
                 device: str = "cpu"):
        from worldssm.errors import require
        from worldssm.spaces import space_from_dict, space_to_dict

        gym = require("gymnasium", "gymnasium>=1.0")
        if mode not in MODES:
            raise WorldssmError(f"mode must be one of {MODES}, got {mode!r}")
        if fallback not in FALLBACKS:
            raise WorldssmError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if agents < 1:
            raise WorldssmError(f"agents must be >= 1, got {agents}")
        if mode != "real" and (model is None or contexts is None):
            raise WorldssmError(f"{mode} mode needs a model and the contexts its dreams start from")
        self.env_id, self.mode, self.n, self.fallback, self.seed = env_id, mode, agents, fallback, seed
        n_real = agents if mode == "real" else (agents + 1) // 2 if mode == "mixed" else 0
        self.kind = np.array(["real"] * n_real + ["dream"] * (agents - n_real))
        self.envs: dict[int, object] = {}
        if n_real:
            if env_id not in gym.registry:
                raise WorldssmError(f"real agents are copies of a Gymnasium env; {env_id!r} is not a registered id")
            for i in range(n_real):
                self.envs[i] = gym.make(env_id, **dict(env_kwargs or {}))
            probe = self.envs[0]
            obs_space, act_space = space_to_dict(probe.observation_space), space_to_dict(probe.action_space)
        self.dreams = None
        if mode != "real":
            from worldssm.dream import Dreams

            self.dreams = Dreams(model, agents - n_real, contexts, max_steps=max_steps, device=device)
            dream_obs = space_to_dict(self.dreams.observation_space)
            if not n_real:
                obs_space, act_space = dream_obs, model.action_space
        if model is not None and n_real:
            from worldssm.spaces import require_same_spaces

            require_same_spaces(env_id, obs_space, act_space, model, hint="serve the env the model was trained on")
        self.observation_space, self.action_space = obs_space, act_space
        self._act = space_from_dict(act_space)
        self.engine = None
        if model is not None and n_real:
            from worldssm.engine import Engine

            self.engine = Engine(model, n_real, device=device)
            self.slots = self.engine.join(n_real)
        self.rng = np.random.default_rng(seed)
        self._act.seed(seed)
        self.obs: list = [None] * agents
        self.done = np.zeros(agents, bool)
        self.first = np.ones(agents, bool)
        self.last_action: list = [None] * agents
        self.tick = 0
        for i in range(agents):
            self._reset_one(i, seed + i)

    # ----- episodes ----------------------------------------------------------------------------
    def _reset_one(self, i: int, seed) -> np.ndarray:
        if self.kind[i] == "real":
            obs, _ = self.envs[i].reset(seed=None if seed is None else int(seed))
        else:
            row = i - len(self.envs)
            rng = np.random.default_rng(seed) if seed is not None else self.rng
            self.dreams.start(np.array([row]), rng)
            obs = self.dreams.obs[row]
        self.obs[i] = np.asarray(obs)
        self.done[i], self.first[i], self.last_action[i] = False, True, None
        return self.obs[i]

    def reset(self, ids: list[int], seed=None) -> dict[int, np.ndarray]:
        """New episodes for `ids` (agent i seeded `seed + k` for the k-th id, when `seed` is given)."""
        self.check_ids(ids)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise ProtocolError("bad_message", f"seed must be a non-negative int or nil, got {seed!r}")
        return {i: self._reset_one(i, None if seed is None else seed + k) for k, i in enumerate(ids)}

    def release(self, ids) -> None:
        """Agents nobody controls any more: one whose episode has ended starts its next one."""
        for i in ids:
            if self.done[i]:
                self._reset_one(i, None)

    def check_ids(self, ids) -> None:
        bad = [i for i in ids if not 0 <= i < self.n]
        if bad:
            raise ProtocolError("unknown_agent", f"no agent {bad[0]} (ids are 0..{self.n - 1})")

    # ----- actions -----------------------------------------------------------------------------
    def check_action(self, agent: int, action) -> np.ndarray:
        """The action as the space's dtype, or ProtocolError("bad_action") naming the agent."""
        space = self.action_space
        if space["type"] == "discrete":
            a = np.asarray(action)
            if a.shape != () or a.dtype == bool or not np.issubdtype(a.dtype, np.integer) \
                    or not 0 <= int(a) < int(space["n"]):
                raise ProtocolError("bad_action", f"agent {agent}: a Discrete({space['n']}) action is an int in "
                                                  f"[0, {space['n']}), got {_show(action)}")
            return np.int64(a)
        a = np.asarray(action) if isinstance(action, np.ndarray | list | float | int) else None
        shape = tuple(space["shape"])
        if a is None or a.dtype == bool or a.dtype.kind not in "fiu" or a.shape != shape:
            raise ProtocolError("bad_action", f"agent {agent}: a Box action is a number array of shape {shape}, "
                                              f"got {_show(action)}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ProtocolError("bad_action", f"agent {agent}: the action holds NaN or infinity")
        low, high = np.asarray(space["low"], np.float32), np.asarray(space["high"], np.float32)
        if ((a < low) | (a > high)).any():
            raise ProtocolError("bad_action", f"agent {agent}: the action is outside the Box bounds")
        return a

    def _fallback(self, i: int):
        if self.fallback == "repeat" and self.last_action[i] is not None:
            return self.last_action[i]
        return self._act.sample()

    # ----- one tick ----------------------------------------------------------------------------
    def step(self, actions: dict[int, np.ndarray], controlled: set[int]) -> tuple[dict[int, dict], list[int]]:
        """Advance every live agent: `actions` (checked) for the agents that sent one, the fallback
        for the rest. Agents nobody controls that ended start again. Returns each agent's
        result and the ids that acted with the fallback."""
        self.tick += 1
        live = [i for i in range(self.n) if not self.done[i]]
        used, late = {}, []
        for i in live:
            if i in actions:
                used[i] = actions[i]
            else:
                used[i] = self._fallback(i)
                late.append(i)
        results: dict[int, dict] = {}
        real = [i for i in live if self.kind[i] == "real"]
        preds = self._predict(real, used) if self.engine is not None and real else {}
        for i in real:
            obs, reward, term, trunc, _ = self.envs[i].step(used[i])
            results[i] = {"obs": np.asarray(obs), "reward": float(reward), "terminated": bool(term),
                          "truncated": bool(trunc)}
            if i in preds:
                results[i]["pred"] = preds[i]
        dream = [i for i in live if self.kind[i] == "dream"]
        if dream:
            rows = np.array(dream) - len(self.envs)
            acts = np.stack([np.asarray(used[i]) for i in dream])  # the world's actions are the model's
            obs, rew, term, trunc = self.dreams.step(acts, self.rng, rows, model_space=True)
            for k, i in enumerate(dream):
                results[i] = {"obs": obs[k], "reward": float(rew[k]), "terminated": bool(term[k]),
                              "truncated": bool(trunc[k])}
        for i, r in results.items():
            self.obs[i], self.last_action[i], self.first[i] = r["obs"], used[i], False
            if r["terminated"] or r["truncated"]:
                self.done[i] = True
                if i not in controlled:
                    self._reset_one(i, None)
        return results, late

    def _predict(self, real: list[int], used: dict) -> dict[int, dict]:
        slots = self.slots[np.array(real)]
        obs = np.stack([self.obs[i] for i in real])
        acts = np.stack([np.asarray(used[i]) for i in real])
        out = self.engine.observe(slots, obs, acts, np.array([bool(self.first[i]) for i in real]))
        rew, cont = out.reward.float().cpu().numpy(), out.cont.float().cpu().numpy()
        return {i: {"reward": float(rew[k]), "cont": float(cont[k])} for k, i in enumerate(real)}

    def close(self) -> None:
        for env in self.envs.values():
            env.close()


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
