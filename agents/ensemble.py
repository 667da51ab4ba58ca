"""Planning over an ensemble of world models: a pessimistic imagination against model exploitation.

A planner searches for the actions its model rates best, so it finds the states where the model is
wrong in its favour: on CartPole-v1 a model trained on random-policy data rates a cart running at
2 m/s as safe, and the planner drives it off the track (26 of 30 recorded failures of one loop).
Models trained on the same data from different seeds agree where the data is and disagree where
it is not. `EnsembleEngine` holds the same agents in M engines (one per model) and answers the
planner's calls as one engine: every call goes to every member, the slots they hand out must
agree, and `imagine` returns the members' mean reward and the **lowest** member's continue
probability, so a state that any member expects to end counts as ending (PETS-style ensembles;
the pessimistic continue is MOReL's halting without a hand-set threshold).

The cost is M model steps per imagined step; the planner's search is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from worldssm.errors import WorldssmError
from worldssm.spaces import spaces_differ


class EnsembleError(WorldssmError):
    """The members of an ensemble do not fit together (spaces, slots)."""


class EnsembleEngine:
    """M engines (`worldssm.engine.Engine`, one model each) that a planner drives as one.

    Args:
        engines: two or more engines over models of the same observation and action spaces,
            with the same slots in use (fresh engines of one capacity).
        cont: "min" (the lowest member's continue, the default) or "mean" (the members' mean
            log continue). On CartPole-v1 (one seed, 10 episodes) both beat every member alone:
            5 and 6 of 10 episodes at 500 against none (tests/bench/results/experiments/
            planner-ensemble-CartPole-v1-seed1.json).

    Raises:
        EnsembleError: fewer than two engines, spaces that differ (the field is named), or slabs
            whose capacity or slots in use differ.
        ValueError: an unknown `cont`.
    """

    def __init__(self, engines, cont: str = "min"):
        if cont not in ("min", "mean"):
            raise ValueError(f"EnsembleEngine: cont must be 'min' or 'mean', got {cont!r}")
        self.cont = cont
        engines = list(engines)
        if len(engines) < 2:
            raise EnsembleError(f"an ensemble needs at least 2 engines, got {len(engines)}")
        first = engines[0]
        for i, e in enumerate(engines[1:], 1):
            for space in ("action_space", "obs_space"):
                field = spaces_differ(getattr(e, space), getattr(first, space))
                if field is not None:
                    raise EnsembleError(f"ensemble member {i}: {space} differs from member 0's in {field} "
                                        f"({getattr(e, space).get(field)!r} against {getattr(first, space).get(field)!r})")
            if e.capacity != first.capacity or e.slab.num_free != first.slab.num_free:
                raise EnsembleError(f"ensemble member {i}: capacity {e.capacity} with {e.slab.num_free} free slots, "
                                    f"member 0: {first.capacity} with {first.slab.num_free}; give every member a "
                                    "fresh engine of one capacity")
            if e.sample != first.sample:
                raise EnsembleError(f"ensemble member {i}: sample={e.sample}, member 0: sample={first.sample}")
        self.engines = engines
        self.action_space, self.obs_space, self.sample = first.action_space, first.obs_space, first.sample

    @property
    def slab(self):
        return self.engines[0].slab

    @property
    def capacity(self) -> int:
        return self.engines[0].capacity

    @property
    def impl(self) -> str:
        return self.engines[0].impl

    @property
    def device(self):
        """Member 0's device, where `imagine`'s outputs live."""
        return self.engines[0].device

    def to_host(self, *tensors):
        """`Engine.to_host` through member 0 (the outputs of `imagine` live on its device)."""
        return self.engines[0].to_host(*tensors)

    def _all(self, name: str, *args, **kwargs):
        """Call `name` on every member; the slots they return must be the same."""
        outs = [getattr(e, name)(*args, **kwargs) for e in self.engines]
        if isinstance(outs[0], np.ndarray):
            for i, o in enumerate(outs[1:], 1):
                if not np.array_equal(o, outs[0]):
                    raise EnsembleError(f"ensemble member {i} answered {name} with slots {o[:8].tolist()}..., member 0 "
                                        f"with {outs[0][:8].tolist()}...: the members' slabs have diverged")
        return outs[0]

    def join(self, n: int) -> np.ndarray:
        return self._all("join", n)

    def leave(self, slots) -> None:
        self._all("leave", slots)

    def fork(self, slots, n: int = 1) -> np.ndarray:
        return self._all("fork", slots, n)

    def fork_observed(self, slots, obs, n: int = 1, resets=None) -> np.ndarray:
        return self._all("fork_observed", slots, obs, n, resets)

    def observe(self, slots, obs, actions, resets=None, decode: bool = False, latents: bool = True):
        """Every member observes; the prediction returned is member 0's."""
        return self._all("observe", slots, obs, actions, resets, decode, latents)

    def imagine(self, slots, actions, decode: bool = False, latents: bool = True):
        """Every member imagines the step; the reward is their mean, the continue probability the
        lowest member's (cont="mean": exp of their mean log continue; `log_cont` its log); z, obs
        and h are member 0's."""
        outs = [e.imagine(slots, actions, decode, latents) for e in self.engines]
        reward = torch.stack([o.reward.float() for o in outs]).mean(0)
        logs = torch.stack([o.log_cont.float() for o in outs])
        log_cont = logs.min(0).values if self.cont == "min" else logs.mean(0)
        return outs[0]._replace(reward=reward, log_cont=log_cont, cont=log_cont.exp())


def planning_engine(engines, cont: str = "min"):
    """What a planner imagines with: the one engine, or the `EnsembleEngine` of several."""
    engines = list(engines)
    return engines[0] if len(engines) == 1 else EnsembleEngine(engines, cont=cont)
