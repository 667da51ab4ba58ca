"""What `worldssm play` does each tick, without a window: reality, the dreams beside it, who
drives, re-syncing, forks, recording and the latency readout. The pygame app (`app.py`) only turns
keys into calls of this class and draws what it holds, so the tests drive this class directly
and drive the app with injected events.

A **track** is one dream of one agent: a slot of the engine that was burned in on the agent's last
`context` real steps and then advances by imagination with the same actions the agent takes. The
controlled agent of a single-agent env has the main track (re-synced to reality every K steps,
or free) and up to `max_forks` forks (branched from reality when asked, never re-synced). In
swarm_v0 any agent can be given a track (`toggle_dream`); its predicted position is its last real
position moved by the predicted velocities.

Views: "both" shows reality and the dreams, stepped with the same actions; "real" shows reality
only (the dreams go on unseen); "dream" steps the controlled agent's dreams only, reality frozen
(single-agent envs), and the agent or the human acts on what the dream shows.
"""

from __future__ import annotations

import collections
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldssm.agents.base import AgentInfo
from worldssm.errors import WorldssmError

VIEWS = ("both", "real", "dream")
HISTORY = 200  # steps of error and observation traces kept for drawing


@dataclass
class Track:
    """One dream of one agent."""

    agent: int  # the real agent's id
    slot: int  # its slot in the engine
    name: str  # "dream", "fork 1", ... (single-agent) or "dream" (swarm)
    fork: bool = False  # forks run free: never re-synced
    obs: np.ndarray | None = None  # the dream's current observation
    observe: bool = True  # the next step observes `obs` (a real observation) instead of imagining
    first: bool = False  # ... as the first step of an episode
    since_sync: int = 0  # steps imagined since the dream was last set to reality
    ended: bool = False  # the model predicted the episode's end
    fresh: bool = False  # it stepped this tick: its prediction is compared with reality
    pos: np.ndarray | None = None  # swarm_v0: predicted position
    reward: float = 0.0  # predicted return since the last sync
    errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    trace: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY))


class PlaySession:
    """Reality and dreams of one env, stepped together.

    Args:
        model: a trained WorldModel (spaces must be the env's).
        env_id: a Gymnasium id or "swarm_v0".
        env_kwargs: the env's keyword arguments.
        agents: agents in the env (1 for Gymnasium ids; swarm_v0's population).
        agent: who drives the controlled agent when the human does not: "planner", "random",
            "pattern", "greedy" (swarm_v0) or an import path "package.module:Name".
        others: swarm_v0: the agent of every agent the human does not drive.
        context: real steps a dream is burned in on.
        resync: re-sync the main dream to reality every this many steps (0: run free).
        max_forks: forks kept at once (a new one replaces the oldest).
        record_dir: where `record` writes shards.
        device: the engine's device.
        seed: seeds the env's episodes, the agents and the planner.
        planner: the planner preset when `agent` is "planner".
        human: the human drives at the start (else `agent` does until the human takes over).
        image_size: pixel frames are drawn from observations (image models), else env renders.
    """

    def __init__(self, model, env_id: str, env_kwargs: dict | None = None, agents: int = 1, agent: str = "random",
                 others: str = "greedy", context: int = 16, resync: int = 0, max_forks: int = 2,
                 record_dir=None, device: str = "cpu", seed: int = 0, planner: str = "fast", human: bool = True):
        from worldssm import envs

        if context < 1 or resync < 0 or max_forks < 0:
            raise ValueError(f"need context >= 1, resync >= 0 and max_forks >= 0; got {context}, {resync}, {max_forks}")
        self.model, self.env_id, self.env_kwargs = model, env_id, dict(env_kwargs or {})
        self.swarm, self.n_agents = env_id == "swarm_v0", agents
        if not self.swarm and agents != 1:
            raise ValueError(f"{env_id} is played with one agent (got agents={agents}); swarm_v0 takes more")
        kwargs = dict(self.env_kwargs)
        if not self.swarm:
            kwargs.update(autoreset="off")
        self.env = envs.make(env_id, api="batched", n_agents=agents, render_mode="rgb_array", **kwargs)
        try:  # whatever fails from here on, the env made above is closed
            self._build(model, agents, agent, others, context, resync, max_forks, record_dir, device, seed, planner, human)
        except BaseException:
            self.env.close()
            raise

    def _build(self, model, agents, agent, others, context, resync, max_forks, record_dir, device, seed, planner,
               human):
        from worldssm.agents.registry import make_agent
        from worldssm.engine import Engine
        from worldssm.spaces import require_same_spaces, space_to_dict

        env_id = self.env_id
        self.obs_space = space_to_dict(self.env.single_observation_space)
        self.act_space = space_to_dict(self.env.single_action_space)
        require_same_spaces(env_id, self.obs_space, self.act_space, model,
                            hint="play the env the model was trained on (or pass its --env-kwargs)")
        self.image = model.obs_kind == "image"
        self.context, self.resync, self.max_forks, self.seed = context, resync, max_forks, seed
        self.tracks_cap = max(8, 2 * agents if self.swarm else 1 + max_forks)
        self.engine = Engine(model, self.tracks_cap, device=device)
        self.record_dir = Path(record_dir) if record_dir is not None else Path("recordings")
        self.view, self.human, self.paused = "both", bool(human), False
        self.agent_name, self.planner = agent, None
        self.driver = None
        if agent == "planner":  # the planner imagines with its own engine: its candidates need room
            from worldssm.agents.planners import make_planner, preset_config

            cfg = preset_config(planner)
            self.planner_engine = Engine(model, cfg.samples * cfg.particles + 2, device=device)
            self.planner = make_planner(self.planner_engine, cfg, seed=seed)
        try:
            if agent != "planner" and not (self.swarm and agent == "greedy"):
                self.driver = make_agent(agent, self.act_space, env=self.env, seed=seed)
            self.others = make_agent(others, self.act_space, env=self.env, seed=seed + 1) if self.swarm else None
        except ValueError as exc:  # an unknown name, or greedy outside swarm_v0
            raise WorldssmError(f"agent: {exc} (play also takes 'planner')") from None
        self.tick = 0
        self.episode = 0
        self.latency_ms: collections.deque = collections.deque(maxlen=300)
        self.decide_ms: collections.deque = collections.deque(maxlen=300)
        self.returns = {"real": 0.0}
        self.message, self.message_tick = "", 0  # the last thing the session wants the player to know, and when
        self.recorder = None
        self.recorded_shards: list[Path] = []
        self.recorded_steps = 0
        # Names of recorded agents and shards: this session's start and a random tag (two sessions
        # in one second do not collide), then the recording's number (episode numbers restart in each).
        self._stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self._recordings = 0
        self._scale = self._obs_scale()
        self.tracks: list[Track] = []
        self._forks_made = 0
        self.reset()

    def say(self, text: str) -> None:
        """Tell the player something (the HUD shows it for a few seconds)."""
        self.message, self.message_tick = text, self.tick

    # ----- episodes -----------------------------------------------------------------------------
    def reset(self) -> None:
        """A new real episode (seed + episode number); the dreams start again from it."""
        if hasattr(self, "ids"):
            self._close_recording(self.ids)
        for track in list(self.tracks):
            self._drop(track)
        obs, info = self.env.reset(seed=self.seed + self.episode)
        self.episode_seed = self.seed + self.episode
        self.episode += 1
        self.ids = np.asarray(info["agent_ids"], np.int64)
        self.obs = np.asarray(obs)
        self.last_reward = np.zeros(self.ids.size, np.float32)
        self.first = np.ones(self.ids.size, bool)
        self.history = {int(i): ([o], []) for i, o in zip(self.ids, self.obs)}
        self.returns = {"real": 0.0}
        self.real_trace: collections.deque = collections.deque(maxlen=HISTORY)
        self.controlled = None if self.swarm else int(self.ids[0])
        self._replan()
        self._open_recording(self.ids)
        if self.recorder is not None and not self._rec_open and self.recorder.pending_steps:
            self._write()
        if not self.swarm:
            self._add_track(int(self.ids[0]), "dream")

    def _replan(self) -> None:
        """The driving agent starts afresh (a new episode, or it now sees another world)."""
        self._plan_first = True
        if self.planner is not None:
            self.planner.forget(list(self.planner._slot))

    @property
    def positions(self) -> np.ndarray:
        """swarm_v0: the real positions of the live agents [A, 2] (row order of `ids`)."""
        return np.asarray(self.env.pos)

    # ----- tracks -------------------------------------------------------------------------------
    def _add_track(self, agent: int, name: str, fork: bool = False) -> Track:
        if self.engine.slab.num_free == 0:
            raise WorldssmError(f"no room for another dream ({self.tracks_cap} at most)")
        track = Track(agent=agent, slot=int(self.engine.join(1)[0]), name=name, fork=fork)
        self.tracks.append(track)
        self._sync(track)
        return track

    def _drop(self, track: Track) -> None:
        self.engine.leave(np.array([track.slot]))
        self.tracks.remove(track)

    def _sync(self, track: Track) -> None:
        """Burn the track in on its agent's last `context` real steps; its next step observes the
        current real observation."""
        obs, acts = self.history[track.agent]  # o_0..o_t and a_0..a_{t-1}
        obs = obs[-self.context:]
        acts = acts[len(acts) - (len(obs) - 1):]  # the actions between those observations
        slot = np.array([track.slot])
        self.engine.reset(slot)
        t0 = time.perf_counter()
        for t in range(len(obs) - 1):
            self.engine.observe(slot, obs[t][None], np.asarray(acts[t])[None], np.array([t == 0]))
        self.latency_ms.append((time.perf_counter() - t0) * 1e3 / max(1, len(obs) - 1))
        track.obs = np.array(obs[-1])
        track.observe, track.first = True, len(obs) == 1
        track.since_sync, track.ended, track.reward = 0, False, 0.0
        if self.swarm:
            row = int(np.flatnonzero(self.ids == track.agent)[0])
            track.pos = self.positions[row].astype(np.float64).copy()

    def sync(self) -> None:
        """Set every dream that is not a fork to reality now."""
        for track in self.tracks:
            if not track.fork:
                self._sync(track)
        self.say("dreams set to reality")

    def fork(self) -> Track:
        """A new dream of the controlled agent branched from its current real state."""
        if self.controlled is None:
            raise WorldssmError("no agent is controlled: click one to take it over first")
        forks = [t for t in self.tracks if t.fork and t.agent == self.controlled]
        if len(forks) >= self.max_forks:
            if self.max_forks == 0:
                raise WorldssmError("forks are off (max_forks=0)")
            self._drop(forks[0])
        self._forks_made += 1
        track = self._add_track(self.controlled, f"fork {self._forks_made}", fork=True)
        self.say(f"forked {track.name} from reality")
        return track

    def toggle_dream(self, agent: int | None = None) -> bool:
        """swarm_v0: give `agent` (default: the controlled one) a dream, or take it away; True
        when it dreams now."""
        agent = self.controlled if agent is None else int(agent)
        if agent is None or agent not in set(self.ids.tolist()):
            raise WorldssmError("choose a live agent first (click it)")
        mine = [t for t in self.tracks if t.agent == agent and not t.fork]
        if mine:
            for track in mine:
                self._drop(track)
            self.say(f"agent {agent}: real")
            return False
        self._add_track(agent, "dream")
        self.say(f"agent {agent}: dreaming")
        return True

    # ----- control ------------------------------------------------------------------------------
    def set_view(self, view: str) -> None:
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if view == "dream" and self.swarm:
            raise WorldssmError("the dream-only view freezes reality, which swarm_v0's other agents live in; "
                                "give agents dreams with t instead")
        if (view == "dream") != (self.view == "dream"):
            self._replan()  # what the agent sees changes between reality and the dream
        self.view = view

    def cycle_view(self) -> str:
        order = [v for v in VIEWS if not (self.swarm and v == "dream")]
        self.set_view(order[(order.index(self.view) + 1) % len(order)])
        return self.view

    def select(self, agent: int | None) -> None:
        """swarm_v0: the human takes over `agent` (None: gives control back)."""
        if agent is not None and agent not in set(self.ids.tolist()):
            raise WorldssmError(f"agent {agent} is not in the env")
        self.controlled = agent
        self.say("no agent controlled" if agent is None else f"controlling agent {agent}")

    def agent_at(self, point) -> int | None:
        """swarm_v0: the live agent nearest to arena `point` within two body radii, or None."""
        if self.ids.size == 0:
            return None
        d = np.linalg.norm(self.positions - np.asarray(point, np.float64)[None], axis=1)
        i = int(np.argmin(d))
        return int(self.ids[i]) if d[i] <= 2 * self.env.cfg.agent_radius + 0.5 else None

    # ----- one tick -----------------------------------------------------------------------------
    def step(self, human_action=None) -> None:
        """Advance one tick with the human's action for the controlled agent (ignored while an
        agent drives it)."""
        self.tick += 1
        main = [t for t in self.tracks if t.agent == self.controlled]
        if self.view == "dream" and not main:
            self._add_track(self.controlled, "dream")
            main = [t for t in self.tracks if t.agent == self.controlled]
        played = main[0].obs if self.view == "dream" else self._row_obs(self.controlled)
        mine = self._decide(played, human_action)
        if self.view == "dream":
            self._advance([(t, mine) for t in main if not t.ended])
            for track in main:
                track.trace.append(np.asarray(track.obs, np.float32).reshape(-1)[:8])
                if track.ended and not track.fork:
                    self.say(f"{track.name} ended (predicted): return {track.reward:.1f}; set to reality")
                    self._sync(track)
            return
        actions = self._actions(mine)
        self._step_real(actions)

    def _row_obs(self, agent):
        if agent is None:
            return None
        rows = np.flatnonzero(self.ids == agent)
        return self.obs[rows[0]] if rows.size else None

    def _decide(self, played, human_action):
        """The controlled agent's action (None when there is no controlled agent)."""
        if self.controlled is None or played is None:
            return None
        if self.human:
            if human_action is None:
                raise ValueError("the human drives: step needs the human's action")
            return np.asarray(human_action)
        info = AgentInfo(ids=np.array([self.controlled]), tick=self.tick, first=np.array([self._plan_first]))
        self._plan_first = False
        t0 = time.perf_counter()
        if self.planner is not None:
            action = self.planner.act(np.asarray(played)[None], info)[0]
        elif self.driver is not None:
            action = self.driver.act(np.asarray(played)[None], info)[0]
        else:  # swarm_v0's greedy drives it: its row of the others' actions
            action = None
        self.decide_ms.append((time.perf_counter() - t0) * 1e3)
        return action

    def _actions(self, mine) -> np.ndarray:
        if self.swarm:
            actions = np.asarray(self.others.act(self.obs, AgentInfo(ids=self.ids, tick=self.tick, first=self.first)))
            if mine is not None and self.controlled is not None:
                actions = actions.copy()
                actions[np.flatnonzero(self.ids == self.controlled)[0]] = mine
            return actions
        return np.asarray(mine)[None]

    def _step_real(self, actions: np.ndarray) -> None:
        """Reality's tick (the batched API: rows that ended report their final observation, new
        agents come in `info["spawned_ids"]`), the dreams' step beside it, then the comparison."""
        ids, before = self.ids, self.obs
        for i, a in zip(ids.tolist(), actions):
            self.history[i][1].append(np.array(a))
        by_agent = {int(i): a for i, a in zip(ids, actions)}
        self._advance([(t, by_agent[t.agent]) for t in self.tracks if not t.ended and t.agent in by_agent])
        next_obs, reward, term, trunc, info = self.env.step(actions)
        reward = np.asarray(reward, np.float32)
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        ended = term | trunc
        self._record(ids, before, actions, next_obs, reward, term, ended)
        mine = ids == self.controlled
        self.returns["real"] += float(reward[mine].sum() if mine.any() else reward.mean() if reward.size else 0.0)
        spawned = np.asarray(info.get("spawned_ids", np.zeros(0)), np.int64)
        alive = ~ended
        self.ids = np.concatenate([ids[alive], spawned])
        self.obs = np.concatenate([np.asarray(next_obs)[alive],
                                   np.asarray(info.get("spawned_obs", next_obs[:0])).astype(next_obs.dtype, copy=False)])
        self.last_reward = np.concatenate([reward[alive], np.zeros(spawned.size, np.float32)])
        self.first = np.r_[np.zeros(int(alive.sum()), bool), np.ones(spawned.size, bool)]
        for i in ids[ended].tolist():
            del self.history[i]
        for track in [t for t in self.tracks if t.agent not in self.history and t.agent not in spawned]:
            self._drop(track)
        for i, o in zip(self.ids.tolist(), self.obs):
            h = self.history.setdefault(i, ([], []))
            h[0].append(np.array(o))
            if len(h[0]) > self.context + 1:
                del h[0][0]
                del h[1][0]
        self._open_recording(spawned)
        self._compare()
        if self.controlled is not None and self.controlled not in self.history:
            if self.swarm:
                self.say(f"agent {self.controlled} left the arena")
                self.controlled = None
            else:
                self.say(f"episode over: return {self.returns['real']:.1f}")
                self.reset()
                return
        if self.swarm and self.ids.size == 0:
            self.reset()
            return
        self._resync()

    def _advance(self, pairs: list) -> None:
        """One model step for the given (track, action) pairs: one observe call for tracks whose
        next step is real, one imagine call for the rest."""
        if not pairs:
            return
        t0 = time.perf_counter()
        groups = [(True, [(t, a) for t, a in pairs if t.observe]), (False, [(t, a) for t, a in pairs if not t.observe])]
        for observe, group in groups:
            if not group:
                continue
            slots = np.array([t.slot for t, _ in group])
            acts = np.stack([np.asarray(a) for _, a in group])
            if observe:
                out = self.engine.observe(slots, np.stack([t.obs for t, _ in group]), acts,
                                          np.array([t.first for t, _ in group]), decode=True)
            else:
                out = self.engine.imagine(slots, acts, decode=True)
            pred = out.obs.float().cpu().numpy()
            rew, cont = out.reward.float().cpu().numpy(), out.cont.float().cpu().numpy()
            for k, (t, _) in enumerate(group):
                t.obs = self._clip(pred[k])
                t.observe, t.first, t.fresh = False, False, True
                t.since_sync += 1
                t.reward += float(rew[k])
                t.ended = bool(cont[k] < 0.5)
                if self.swarm and not self.image:  # the vector's first two entries: velocity / max_speed
                    vel = t.obs[0:2].astype(np.float64) * self.env.cfg.max_speed
                    r, side = self.env.cfg.agent_radius, self.env.cfg.side
                    t.pos = np.clip(t.pos + vel, r, side - r)
        self.latency_ms.append((time.perf_counter() - t0) * 1e3)

    def _clip(self, obs: np.ndarray) -> np.ndarray:
        if self.image:
            return np.clip(np.rint(obs), 0, 255).astype(np.uint8)
        return obs.astype(np.float32)

    def _compare(self) -> None:
        """Each dream's error against reality at this step (and the traces the plots draw)."""
        real = self._row_obs(self.controlled)
        if real is not None:
            self.real_trace.append(np.asarray(real, np.float32).reshape(-1)[:8])
        for track in self.tracks:
            rows = np.flatnonzero(self.ids == track.agent)
            fresh, track.fresh = track.fresh, False
            if not rows.size or not fresh:
                continue
            truth = self.obs[rows[0]]
            if self.swarm and not self.image:
                track.errors.append(float(np.linalg.norm(track.pos - self.positions[rows[0]])))
            else:
                diff = np.abs(track.obs.astype(np.float64) - truth.astype(np.float64)).reshape(-1) / self._scale
                track.errors.append(float(diff.mean()))
            track.trace.append(np.asarray(track.obs, np.float32).reshape(-1)[:8])

    def _resync(self) -> None:
        """Dreams that are not forks are set to reality every `resync` steps. A dream whose model
        predicted the episode's end stays there (drawn as ended) until then, or `g`, or reality's
        own episode ends: the player sees that the model thinks it is over."""
        for track in self.tracks:
            if not track.fork and self.resync and track.since_sync >= self.resync:
                self._sync(track)

    def _obs_scale(self) -> np.ndarray:
        """Per-dimension scale of the error: 255 for images; else the spread of the observations
        of 200 random real steps (reality's own units, so every dimension counts alike)."""
        if self.model.obs_kind == "image":
            return np.array([255.0])
        from worldssm import envs
        from worldssm.agents.scripted import RandomAgent

        kwargs = {} if self.swarm else {"autoreset": "new_agent"}
        probe = envs.make(self.env_id, api="batched", n_agents=self.n_agents,
                          **{**self.env_kwargs, **kwargs})
        try:
            obs, info = probe.reset(seed=self.seed + 10_000)
            ids = np.asarray(info["agent_ids"], np.int64)
            seen, agent = [np.asarray(obs)], RandomAgent(self.act_space, self.seed)
            for tick in range(200):
                if ids.size == 0:
                    obs, info = probe.reset()
                    ids = np.asarray(info["agent_ids"], np.int64)
                nxt, _, term, trunc, info = probe.step(agent.act(obs, AgentInfo(ids, tick, np.zeros(ids.size, bool))))
                alive = ~(np.asarray(term) | np.asarray(trunc))
                ids = np.concatenate([ids[alive], np.asarray(info["spawned_ids"], np.int64)])
                obs = np.concatenate([np.asarray(nxt)[alive], np.asarray(info["spawned_obs"], nxt.dtype)])
                seen.append(obs)
        finally:
            probe.close()
        flat = np.concatenate([s.reshape(len(s), -1) for s in seen if len(s)]).astype(np.float64)
        return np.maximum(flat.std(0), 1e-3)

    # ----- recording ---------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def toggle_record(self) -> bool:
        """Start recording reality's steps, or stop and write them; True when recording."""
        if self.recorder is None:
            from worldssm.data import EpisodeRecorder

            try:
                self.record_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WorldssmError(f"cannot record into {self.record_dir}: {exc.strerror or exc}") from None
            self._recordings += 1
            tag = f"play-{self._stamp}-r{self._recordings}"
            self.recorder = EpisodeRecorder(self.obs_space, self.act_space, lambda i: f"{tag}-{i}")
            self._rec_open = {}
            self._open_recording(self.ids)
            self.say(f"recording to {self.record_dir}")
            return True
        self.stop_recording()
        return False

    def stop_recording(self) -> Path | None:
        """End every open episode here (truncated: its current observation is its last step),
        write what was recorded as one shard and stop. Returns the shard (None: no steps)."""
        if self.recorder is None:
            return None
        self._close_recording(self.ids)
        path = self._write()
        self.recorder = None
        self.say(f"recorded {path}" if path else "nothing recorded")
        return path

    def _open_recording(self, ids) -> None:
        """Agents whose episodes are recorded from their next step on (not started yet)."""
        if self.recorder is not None:
            for i in np.asarray(ids, np.int64).tolist():
                self._rec_open[i] = False

    def _close_recording(self, ids) -> None:
        """End the recorded episodes of live agents `ids` at their current observation."""
        if self.recorder is None:
            return
        rows = np.array([r for r, i in enumerate(self.ids.tolist()) if i in set(np.asarray(ids).tolist())
                         and self._rec_open.get(i)], np.int64)
        if rows.size:
            yes = np.ones(rows.size, bool)
            self.recorder.add(self.ids[rows], self.obs[rows], self._no_action(rows.size), self.last_reward[rows],
                              ~yes, yes, ~yes)
            self.recorded_steps += rows.size
        for i in np.asarray(ids).tolist():
            self._rec_open.pop(i, None)

    def _no_action(self, n: int) -> np.ndarray:
        if self.act_space["type"] == "discrete":
            return np.zeros(n, np.int64)
        return np.zeros((n, *self.act_space["shape"]), np.float32)

    def _record(self, ids, obs, actions, next_obs, reward, term, ended) -> None:
        """o_t with a_t (and the reward that led to o_t; 0 on an episode's first step) for every
        recorded agent; agents that ended add their final observation as the last step. When no
        recorded episode is left open (a single-agent episode ended), the shard is written."""
        if self.recorder is None:
            return
        rows = np.array([r for r, i in enumerate(ids.tolist()) if i in self._rec_open], np.int64)
        if rows.size:
            first = np.array([not self._rec_open[i] for i in ids[rows].tolist()], bool)
            no = np.zeros(rows.size, bool)
            self.recorder.add(ids[rows], obs[rows], np.asarray(actions)[rows],
                              np.where(first, 0.0, self.last_reward[rows]).astype(np.float32), first, no, no)
            for i in ids[rows].tolist():
                self._rec_open[i] = True
            done = rows[ended[rows]]
            yes = np.ones(done.size, bool)
            self.recorder.add(ids[done], np.asarray(next_obs)[done], self._no_action(done.size), reward[done],
                              ~yes, yes, term[done])
            self.recorded_steps += rows.size + done.size
            for i in ids[done].tolist():
                del self._rec_open[i]
        if not self._rec_open and self.recorder.pending_steps:
            self._write()

    def _write(self) -> Path | None:
        """Write the recorder's finished episodes as one shard (atomically: all or none)."""
        from worldssm.data.collect import write_shard
        from worldssm.data.format import SHARD_SUFFIX, make_header

        records = self.recorder.flush()
        if not records:
            return None
        meta = {"source": "worldssm play", "seed": self.seed, "api": "batched",
                "env_kwargs": {k: v if isinstance(v, int | float | str) else repr(v) for k, v in self.env_kwargs.items()}}
        header = make_header(self.env_id, self.obs_space, self.act_space, [], meta)
        path = self.record_dir / f"play-{self._stamp}-{len(self.recorded_shards):04d}{SHARD_SUFFIX}"
        self.recorded_shards.append(write_shard(path, header, records))
        return path

    def close(self) -> None:
        """Write what is being recorded and close the envs."""
        try:
            self.stop_recording()
        finally:
            self.env.close()
