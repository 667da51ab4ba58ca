"""`worldssm improve`: collect -> train -> plan in the real env (recorded) -> train -> ..., resumable.

Round 0 collects random-policy rollouts. Every round then trains a fresh model on all the data
so far, and lets a planner over that model play `episodes` episodes of the real env, side by
side: their returns are the round's score, and the episodes, recorded as rollouts, are the next
round's new data (so the model learns the states the planner reaches, which a random policy
seldom visits: a pendulum held upright, a cart near the edge of its track).

The directory:

    OUT/improve.json           config, finished stages, per-round scores (rewritten atomically)
    OUT/data/round-00/         random rollouts;  OUT/data/round-RR/  the planner's episodes of round RR-1
    OUT/round-RR/run/          the model trained in round RR (a normal run directory)
    OUT/round-RR/run-K/        with ensemble = M > 1: member K (1..M-1), same data, another seed
    OUT/round-RR/plan.json     the planner's score in round RR (returns, latency, settings)
    OUT/final-RR/              the final test after RR rounds: episodes on fresh seeds (not training data)
    OUT/final.json             its score and which round's model played

The final test: the round whose own episodes scored best (the later round on ties) chooses the
model, which then plays `episodes` more episodes on seeds no round played (seed + 100,000 + i).
Those returns, not the chosen round's, are the loop's result: a round's score chose the model,
so it is not an unbiased measure of it.

Every stage is recorded in improve.json when it finishes, and each leaves no half state behind:
rollouts are written to a hidden `.partial` directory and renamed when complete, a run resumes
from its last checkpoint. `improve(out, resume=True)` (`--resume`) continues after the last
finished stage; a larger `rounds` on resume adds rounds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from worldssm.atomic import atomic_write_text
from worldssm.errors import WorldssmError
from worldssm.locks import DirLock

STATE_FILE = "improve.json"
FINAL_SEED = 100_000  # the final test plays seeds seed + FINAL_SEED + i: no round plays those


@dataclass(frozen=True)
class ImproveConfig:
    """What `worldssm improve` runs."""

    env: str  # Gymnasium id, e.g. Pendulum-v1 or CartPole-v1
    rounds: int = 3  # train -> plan rounds (each plan round's episodes are the next round's data)
    preset: str = "SMALL"  # model preset (worldssm.model.PRESETS)
    train_steps: int = 3000  # gradient updates per round (every round trains a fresh model)
    mean_rows: float | None = None  # share of training rows fed the expected latent (TrainConfig.mean_rows); none: the preset's
    # Planners rank safe states by the continue probability, which SMALL's weight of 5 (kept for
    # the continue F1 of the fidelity suite) makes sharper: CartPole-v1's loop planned 142.8 /
    # 164.9 with it and 356.2 / 500 with 1 (README).
    loss_con: float | None = 1.0  # weight of the continue loss (TrainConfig.loss_con); none: the preset's
    random_agents: int = 8  # env copies collecting the random rollouts of round 0
    random_steps: int = 2500  # ticks of random collection (about agents x ticks steps)
    episodes: int = 10  # episodes the planner plays per round (its score and the next data)
    planner: str = "fast"  # planner preset (worldssm.agents.planners.PLANNER_PRESETS)
    horizon: int | None = None  # imagined steps per candidate; none: the preset's
    samples: int | None = None  # candidate sequences per agent and iteration; none: the preset's
    seed: int = 0  # seed of collection, training and planning (round r plays seeds seed + 1000 r + i)
    threads: int = 0  # torch threads for training (0: torch's default)
    # After training, fit a value of the model's state (worldssm.agents.value) and plan with it:
    # what follows a plan's horizon. "dreams": value iteration in the model's imagination;
    # "returns": the discounted returns of every episode so far (of the policies that played them).
    value: bool = False  # fit a value for each round's model and plan with it
    value_from: str = "dreams"  # how the value is fitted: dreams or returns
    value_iterations: int | None = None  # dreams: imagined steps of value iteration; none: DreamValueConfig's
    # Member 0 is round-RR/run, member k round-RR/run-k, each from its own training seed; the
    # planner imagines with all of them (agents.ensemble: their mean reward, the lowest continue),
    # so a state any member expects to end counts as ending.
    ensemble: int = 1  # models trained per round on the same data, planned with as an ensemble

    CHOICES: ClassVar[dict] = {"preset": ("DEBUG", "SMALL", "BASE"), "planner": ("fast", "default", "thorough"),
                               "value_from": ("dreams", "returns")}

    def __post_init__(self):
        for name in ("rounds", "train_steps", "random_agents", "random_steps", "episodes"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"ImproveConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("horizon", "samples", "value_iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"ImproveConfig.{name} must be >= 1 or None, got {value}")
        for name, options in self.CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"ImproveConfig.{name} must be one of {options}, got {getattr(self, name)!r}")
        if self.mean_rows is not None and not 0.0 <= self.mean_rows <= 1.0:
            raise ValueError(f"ImproveConfig.mean_rows must be in [0, 1] or None, got {self.mean_rows}")
        if self.loss_con is not None and not (self.loss_con >= 0 and math.isfinite(self.loss_con)):
            raise ValueError(f"ImproveConfig.loss_con must be finite and >= 0 or None, got {self.loss_con}")
        if self.value_iterations is not None and self.value_from != "dreams":
            raise ValueError("ImproveConfig.value_iterations applies to values fitted in dreams, not "
                             f"value_from={self.value_from!r}")
        if self.threads < 0:
            raise ValueError(f"ImproveConfig.threads must be >= 0, got {self.threads}")
        if self.ensemble < 1:
            raise ValueError(f"ImproveConfig.ensemble must be >= 1, got {self.ensemble}")
        if self.ensemble > 1 and self.value:
            raise ValueError("ImproveConfig.value fits a value of one model; it does not go with ensemble > 1")

    def planner_config(self):
        from worldssm.agents.planners import PLANNER_PRESETS

        base = PLANNER_PRESETS[self.planner]
        over = {k: v for k, v in (("horizon", self.horizon), ("samples", self.samples)) if v is not None}
        if "samples" in over:
            over["elites"] = min(base.elites, over["samples"])
        return dataclasses.replace(base, **over)


class Improvement:
    """The loop over one output directory (see the module docstring); `run()` does the work."""

    def __init__(self, out, cfg: ImproveConfig | None = None, resume: bool = False, progress: bool = False,
                 rounds: int | None = None):
        from worldssm.atomic import check_out_dir

        self.out, self.progress = check_out_dir(out, "--out"), progress
        if rounds is not None and rounds < 1:
            raise WorldssmError(f"rounds must be >= 1, got {rounds}")
        state_path = self.out / STATE_FILE
        if resume:
            if cfg is not None:
                raise WorldssmError("--resume continues with the saved settings; give only the rounds")
            if not state_path.is_file():
                raise WorldssmError(f"--resume: {state_path} does not exist (nothing to resume)")
            try:
                self.state = json.loads(state_path.read_text())
                conf = dict(self.state["config"])
                conf.setdefault("loss_con", None)  # loops saved before the field trained with the preset's
                if conf.get("value"):  # loops saved before values were fitted in dreams fitted them to returns
                    conf.setdefault("value_from", "returns")
                saved = ImproveConfig(**conf)
                self.state["done"], self.state["scores"]  # noqa: B018 - both must be there
            except (ValueError, TypeError, KeyError) as exc:
                raise WorldssmError(f"{state_path}: not a worldssm improve state ({exc})") from None
            self.cfg = dataclasses.replace(saved, rounds=max(saved.rounds, rounds or 0))
            self.state["config"] = dataclasses.asdict(self.cfg)
        else:
            if cfg is None:
                raise WorldssmError("a new improvement needs its ImproveConfig")
            if self.out.exists() and any(self.out.iterdir()):
                raise WorldssmError(f"{self.out} is not empty: pass --resume to continue it, or choose a new --out")
            from worldssm.envs import make

            make(cfg.env, api="batched").close()  # an env that cannot be built is named before anything is saved
            self.cfg = dataclasses.replace(cfg, rounds=rounds) if rounds is not None else cfg
            self.state = {"config": dataclasses.asdict(self.cfg), "done": [], "scores": []}

    # ----- stages -------------------------------------------------------------------------------
    def run(self) -> dict:
        """Run every stage not yet done; returns the state (config, done, scores)."""
        self.out.mkdir(parents=True, exist_ok=True)
        with DirLock(self.out, "improving"):
            self._save()
            self._stage("data-00", self._random_data)
            for r in range(self.cfg.rounds):
                self._stage(f"train-{r:02d}", lambda r=r: self._train(r))
                self._stage(f"plan-{r:02d}", lambda r=r: self._plan(r))
            self._stage(f"final-{self.cfg.rounds:02d}", self._final)
        return self.state

    def _stage(self, name: str, fn) -> None:
        if name in self.state["done"]:
            return
        fn()
        self.state["done"].append(name)
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=1))

    def _data(self, r: int) -> Path:
        return self.out / "data" / f"round-{r:02d}"

    def _collect(self, final: Path, **kwargs) -> dict:
        """Collect into a hidden partial directory, renamed to `final` once complete."""
        from worldssm.data import collect

        if final.exists():  # renamed, but the stage was not recorded: collected in full
            return {}
        partial = final.parent / f".{final.name}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        summary = collect(self.cfg.env, out_dir=partial, **kwargs)
        partial.rename(final)
        return summary

    def _random_data(self) -> None:
        cfg = self.cfg
        bar = self._bar(cfg.random_steps, "collect (random)")
        try:
            self._collect(self._data(0), n_agents=cfg.random_agents, steps=cfg.random_steps, seed=cfg.seed,
                          agent="random", progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()

    def _run_dir(self, r: int) -> Path:
        return self.out / f"round-{r:02d}" / "run"

    def _member_dirs(self, r: int) -> list[Path]:
        """Round r's run directories: member 0 is `_run_dir(r)`, member k `round-RR/run-k`."""
        first = self._run_dir(r)
        return [first] + [first.with_name(f"run-{k}") for k in range(1, self.cfg.ensemble)]

    def _train(self, r: int) -> None:
        from worldssm.train import TrainConfig, Trainer

        for k, run in enumerate(self._member_dirs(r)):
            started = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
            tcfg = TrainConfig(preset=self.cfg.preset, steps=self.cfg.train_steps, seed=self.cfg.seed + r + 7919 * k,
                               threads=self.cfg.threads, mean_rows=self.cfg.mean_rows,
                               loss_con=self.cfg.loss_con)
            trainer = Trainer(self.out / "data", run, tcfg, resume=started, overwrite=not started)
            trainer.run(progress=self.progress)
        run = self._run_dir(r)
        if self.cfg.value:
            from worldssm.agents.value import DreamValueConfig, ValueConfig, fit_value, fit_value_in_dreams, save_value
            from worldssm.data import RolloutDataset
            from worldssm.model import load_model

            model, _ = load_model(run)
            discount, seed = self.cfg.planner_config().discount, self.cfg.seed + r
            episodes = RolloutDataset.load(self.out / "data").episodes
            if self.cfg.value_from == "dreams":
                over = {} if self.cfg.value_iterations is None else {"iterations": self.cfg.value_iterations}
                vcfg = DreamValueConfig(discount=discount, seed=seed, **over)
                value, stats = fit_value_in_dreams(model, episodes, vcfg, progress=self.progress)
            else:
                vcfg = ValueConfig(discount=discount, seed=seed)
                value, stats = fit_value(model, episodes, vcfg)
            save_value(run, value, vcfg, stats)

    def _plan(self, r: int) -> None:
        score = self._play(r, self.cfg.seed + 1000 * r, self._data(r + 1), f"plan round {r}", self.cfg.seed + r)
        atomic_write_text(self.out / f"round-{r:02d}" / "plan.json", json.dumps(score, indent=1))
        self.state["scores"].append(score)

    def _final(self) -> None:
        """The final test (module docstring): the best round's model on fresh seeds."""
        best = max(self.state["scores"], key=lambda s: (s["mean_return"], s["round"]))
        dest = self.out / f"final-{self.cfg.rounds:02d}"
        seed = self.cfg.seed + FINAL_SEED
        score = self._play(best["round"], seed, dest, "final test", seed)
        score["chosen_by"] = "the highest mean return of its own round's episodes (the later round on ties)"
        score["episodes_dir"] = dest.name
        atomic_write_text(self.out / "final.json", json.dumps(score, indent=1))
        self.state["final"] = score

    def _play(self, r: int, seed: int, dest: Path, desc: str, planner_seed: int) -> dict:
        """Round r's model plans `episodes` episodes of the real env (seeds seed + i), recorded in
        dest; returns their score."""
        from worldssm.agents.ensemble import planning_engine
        from worldssm.agents.planners import make_planner
        from worldssm.data import RolloutDataset
        from worldssm.engine import Engine
        from worldssm.model import load_model

        cfg, pcfg = self.cfg, self.cfg.planner_config()
        runs = self._member_dirs(r)
        engine = planning_engine(Engine(load_model(run)[0], capacity=cfg.episodes * (pcfg.samples * pcfg.particles + 1),
                                        seed=cfg.seed) for run in runs)
        value = None
        if cfg.value:
            from worldssm.agents.value import load_value

            value = load_value(self._run_dir(r))
        planner = make_planner(engine, pcfg, seed=planner_seed, value=value)
        bar = self._bar(None, desc)
        try:
            self._collect(dest, n_agents=cfg.episodes, steps=100_000, seed=seed, agent=planner,
                          env_kwargs={"autoreset": "off"}, until_empty=True,
                          progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        episodes = RolloutDataset.load(dest).episodes
        returns = np.array([float(e["reward"].sum()) for e in episodes])  # in copy order (reward[0] is 0)
        ms = planner.stats
        return {"round": r, "seeds": [seed, seed + cfg.episodes - 1], "returns": returns.round(3).tolist(),
                "mean_return": float(returns.mean()), "std_return": float(returns.std()),
                "planner": type(planner).__name__, "planner_config": dataclasses.asdict(pcfg),
                "decisions": ms["decisions"], "mean_decision_ms": 1e3 * ms["seconds"] / max(1, ms["decisions"]),
                "imagined_steps_per_s": planner.imagined_steps_per_second(), "engine_impl": engine.impl,
                "ensemble": len(runs),
                "value": None if value is None else value.fit}

    def _bar(self, total, desc):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="tick", dynamic_ncols=True)


def improve(out, cfg: ImproveConfig | None = None, resume: bool = False, progress: bool = False,
            rounds: int | None = None) -> dict:
    """Run the loop of the module docstring in `out` with `cfg`, or with `resume` continue the
    one there with its saved settings (`rounds`, if larger than the saved number, adds rounds)."""
    return Improvement(out, cfg, resume, progress, rounds).run()
