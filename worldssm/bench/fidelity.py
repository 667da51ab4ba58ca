"""Fidelity: how well the world model predicts, env by env, against naive predictors.

Run as `worldssm bench fidelity [--envs Pendulum-v1,CartPole-v1] [--device cpu|cuda]
[--backbones mamba2,gru,transformer] [--out DIR] [--work DIR] [--seed S]`.

For each env of the suite: collect rollouts (the env's agent, random unless its entry says
otherwise), train with a fixed budget (SMALL on the CPU, BASE with `--device cuda`), and evaluate
with the open-loop protocol of ANCHORS.md (context 16, horizons 1..64, held-out episodes): the
normalised observation error of the model, of repeating the last observation and of predicting
the mean; the reward error of the model and of predicting the mean reward; the continue flag's
precision, recall and F1 where episodes terminate. With several backbones, each is trained on
the same data with the same budget, and its state bytes per agent at contexts 64, 1,024 and
16,384 steps are measured from an engine slab. Writes `fidelity-<device>-<time>.json` and one
PNG grid of error against horizon (a panel per env) under `--out`.

The targets the JSON records per env (issue 12): horizon-1 error at most 0.2x repeat-last; below
both naive predictors at every horizon up to 32; continue F1 at least 0.9 where episodes
terminate; reward error below the mean-reward predictor's.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from worldssm.atomic import atomic_write_text
from worldssm.errors import WorldssmError


BACKBONES = ("mamba2", "gru", "transformer")
CONTEXTS = (64, 1024, 16384)


@dataclass(frozen=True)
class EnvEntry:
    """One env of the suite and how it is collected and trained."""

    env: str  # a name worldssm.envs.make takes
    agents: int  # agents collected side by side
    ticks: int  # collection ticks
    train_steps: int  # training updates (the CPU budget: at most about 10 minutes on 2 cores)
    env_kwargs: dict = field(default_factory=dict)  # extra env kwargs
    agent: str | None = None  # collection agent (None: greedy for swarm_v0, else random)
    pixels: bool = False  # image observations: the GPU budget (BASE, --device cuda)
    extra: str | None = None  # the pip extra the env needs, named when it is missing
    note: str = ""  # why the entry is what it is


SUITE: dict[str, EnvEntry] = {
    "Pendulum-v1": EnvEntry("Pendulum-v1", 8, 2500, 6000),
    "CartPole-v1": EnvEntry("CartPole-v1", 8, 20000, 6000),
    "LunarLanderContinuous-v3": EnvEntry("LunarLander-v3", 8, 10000, 6000, env_kwargs={"continuous": True},
                                         extra="worldssm[envs]"),
    "HalfCheetah-v5": EnvEntry("HalfCheetah-v5", 8, 5000, 6000, extra="worldssm[envs]"),
    "Hopper-v5": EnvEntry("Hopper-v5", 8, 10000, 6000, extra="worldssm[envs]"),
    "swarm_v0": EnvEntry("swarm_v0", 32, 2000, 6000, env_kwargs={"max_steps": 300},
                         note="agents join and leave; the greedy food seeker with noise collects"),
    "swarm_v0-image": EnvEntry("swarm_v0", 256, 2000, 22000, env_kwargs={"max_steps": 300, "obs_mode": "image"},
                               pixels=True, note="32x32 egocentric images; 256 agents (500k steps): with 16 or 64 "
                                                 "BASE overfitted, its validation reconstruction rising after "
                                                 "800 (16) or about 12,000 updates (64); from 12,000 to 22,000 "
                                                 "updates horizon 1 only went from 0.57x to 0.56x repeat-last"),
    "Pong64": EnvEntry("worldssm/Pong64-v0", 8, 5000, 20000, pixels=True, extra="worldssm[envs]",
                       note="ALE Pong at 64x64, frame skip 4; the reconstruction only breaks through after "
                            "about 4,000 updates and still improves at 20,000"),
}


def check_entry(name: str, entry: EnvEntry) -> None:
    """Refuse an env before anything is collected: a missing extra names the extra; spaces the
    model cannot take (Dict, MultiDiscrete, ...) name the space."""
    from worldssm import envs
    from worldssm.spaces import space_to_dict

    try:
        env = envs.make(entry.env, api="batched", **entry.env_kwargs)  # a missing extra is named there
    except ValueError as exc:
        raise WorldssmError(f"{name}: cannot make {entry.env!r}: {exc}") from exc
    from worldssm.model.world_model import observation_kind

    try:
        for what, space in (("observation", env.single_observation_space), ("action", env.single_action_space)):
            try:
                d = space_to_dict(space)
                if what == "observation":
                    observation_kind(d)  # the model observes Boxes only
            except (WorldssmError, ValueError) as exc:
                raise WorldssmError(f"{name}: the model cannot take its {what} space {space}: {exc}") from None
    finally:
        env.close()


def state_bytes(preset: str, backbone: str, obs_space: dict, action_space: dict) -> dict:
    """Bytes of state per agent at each context of `CONTEXTS`, measured from the slab of an
    `Engine` holding one agent (backbone states and the engine's pending latent; the scratch row
    is not counted). Only the Transformer's grows with the context it keeps."""
    import dataclasses

    from worldssm.engine import Engine
    from worldssm.model import WorldModel, preset_for

    out = {}
    for ctx in CONTEXTS:
        cfg = preset_for(preset, backbone)
        if backbone == "transformer":
            cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, context=ctx))
        engine = Engine(WorldModel(cfg, obs_space, action_space), 1, device="cpu", impl="torch")
        out[str(ctx)] = engine.slab.slot_nbytes
    return out


def verdict(result: dict) -> dict:
    """The issue's targets, read off one env's evaluation."""
    horizons = result["horizons"]
    m, rep, mean = (result["obs_nmse"][k] for k in ("model", "repeat_last", "mean"))
    upto32 = [i for i, k in enumerate(horizons) if k <= 32 and m[i] is not None]
    out = {
        "h1_over_repeat_last": m[0] / rep[0] if m[0] is not None and rep[0] else None,
        "h1_target_0.2x": m[0] is not None and rep[0] is not None and m[0] <= 0.2 * rep[0],
        "below_both_naive_up_to_32": all(m[i] < rep[i] and m[i] < mean[i] for i in upto32),
        "reward_error_below_mean_predictor": all(
            a is None or b is None or a < b for a, b in zip(result["reward_mae"]["model"], result["reward_mae"]["mean"])),
    }
    cont = result.get("continue")
    if cont and cont["terminal_steps"]:
        out["continue_f1"] = cont["f1"]
        out["continue_f1_target_0.9"] = cont["f1"] is not None and cont["f1"] >= 0.9
    return out


def run_env(name: str, entry: EnvEntry, work: Path, device: str, backbones, seed: int, progress: bool,
            preset: str | None = None, scale: float = 1.0, train_steps: int | None = None,
            resume: bool = False) -> dict:
    """Collect, train each backbone, evaluate; one env's record for the JSON. `train_steps`
    replaces the entry's training budget (the GPU's allows more updates for image envs);
    `resume` keeps the data and runs of an earlier call in `work` and trains them on to
    `train_steps` (exact resume: same data, optimizer and sampler states), so a budget longer
    than one sitting is spent in several; `preset` and `scale` (of the collection ticks and
    training steps) exist for smoke tests."""
    import shutil

    from worldssm.data import RolloutDataset, collect
    from worldssm.train import TrainConfig, Trainer
    from worldssm.train.evaluate import EvalConfig, evaluate
    from worldssm.train.trainer import RunDirectory

    preset = preset or ("BASE" if device == "cuda" else "SMALL")
    ticks, steps = max(2, int(entry.ticks * scale)), max(2, int((train_steps or entry.train_steps) * scale))
    data, kept = work / name / "data", work / name / "collect.json"
    if resume:  # `run` checked what the earlier call left (`_resumable`) before anything trained
        collected = json.loads(kept.read_text())
    else:
        if data.exists():
            shutil.rmtree(data)
        t0 = time.perf_counter()
        summary = collect(entry.env, entry.agents, ticks, data, seed=seed, agent=entry.agent,
                          env_kwargs=entry.env_kwargs)
        collected = {"agents": entry.agents, "ticks": ticks, "steps": summary["steps"], "episodes": summary["episodes"],
                     "agent": summary["agent"], "seconds": time.perf_counter() - t0, "seed": seed}
        atomic_write_text(kept, json.dumps(collected))
    spec = RolloutDataset.load(data).spec
    record = {"env": entry.env, "env_kwargs": entry.env_kwargs, "note": entry.note, "seed": seed,
              "collect": collected, "preset": preset, "train_steps": steps, "backbones": {}}
    for backbone in backbones:
        run, sittings = work / name / f"run-{backbone}", work / name / f"train-{backbone}.json"
        if resume:
            before = json.loads(sittings.read_text())
        else:
            before = []
            if run.exists():
                shutil.rmtree(run)
        cfg = TrainConfig(preset=preset, steps=steps, seed=seed, device=device, backbone=backbone,
                          log_every=max(1, steps // 20), checkpoint_every=max(1, steps // 10))
        t1 = time.perf_counter()
        trainer = Trainer(data, run, cfg, resume=resume)
        try:
            with _interrupt_on_sigterm():
                trainer.run(progress=progress)
        except KeyboardInterrupt:  # the trainer saved where it stopped: record the sitting so far
            atomic_write_text(sittings, json.dumps(before + [
                {"upto": trainer.updates, "seconds": time.perf_counter() - t1, "interrupted": True}]))
            raise
        sittings_now = before + [{"upto": steps, "seconds": time.perf_counter() - t1}]
        atomic_write_text(sittings, json.dumps(sittings_now))
        train_s = sum(x["seconds"] for x in sittings_now)
        trained = json.loads(RunDirectory(run).config.read_text())["model_config"]  # the loss weights it trained with
        result = evaluate(run, data, work / name / f"eval-{backbone}",
                          EvalConfig(seed=seed, device=device, video=entry.pixels))  # pixels: openloop.gif too
        if "video" in result:  # where under the work folder (a machine's path does not belong in the record)
            result["video"] = "WORK/" + Path(result["video"]).relative_to(work).as_posix()
        record["backbones"][backbone] = {
            "train_seconds": train_s, "train_sittings": sittings_now,
            "loss_rec": trained["loss_rec"], "loss_con": trained["loss_con"],
            "eval": result, "targets": verdict(result),
            "state_bytes_per_agent": state_bytes(preset, backbone, spec.observation_space, spec.action_space),
        }
    return record


@contextlib.contextmanager
def _interrupt_on_sigterm():
    """SIGTERM (a job's time limit, `timeout`) stops training as Ctrl-C does: the trainer saves
    the step it reached and the sitting is recorded, so `--resume` goes on from there. Only the
    main thread can take signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the save short
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resumable(name: str, work: Path, backbones, steps: int, seed: int) -> dict:
    """What an earlier call left in `work` for env `name` (its collection record), checked: the
    data and a run of every backbone, trained with the same seed to fewer than `steps` updates.

    Raises:
        WorldssmError: naming what is missing or why it cannot go on.
    """
    kept = work / name / "collect.json"
    if not kept.is_file():
        raise WorldssmError(f"{name}: nothing to resume in {work / name} (no collect.json): run once without --resume")
    collected = json.loads(kept.read_text())
    if collected.get("seed", seed) != seed:
        raise WorldssmError(f"{name}: the runs in {work / name} were made with --seed {collected['seed']}, not {seed}")
    for backbone in backbones:
        sittings = work / name / f"train-{backbone}.json"
        if not sittings.is_file():
            raise WorldssmError(f"{name}: no trained {backbone} run to resume in {work / name}")
        upto = json.loads(sittings.read_text())[-1]["upto"]
        if upto >= steps:
            raise WorldssmError(f"{name}: the {backbone} run already has {upto} updates; --train-steps {steps} would add none")
    return collected


def run(envs=None, device: str = "cpu", backbones=("mamba2",), out_dir="tests/bench/results", work="runs/fidelity",
        seed: int = 0, progress: bool = False, preset: str | None = None, scale: float = 1.0,
        train_steps: int | None = None, resume: bool = False) -> dict:
    """Run the suite (or the `envs` named) and write the JSON and the PNG; returns the result.
    `train_steps`: the training updates of every env (default: each entry's budget); `resume`:
    train the runs an earlier call left in `work` on to `train_steps` (see `run_env`)."""
    import numpy as np
    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError

    names = list(SUITE) if envs is None else list(envs)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise WorldssmError(f"unknown fidelity envs {unknown}; the suite is {list(SUITE)}")
    bad = [b for b in backbones if b not in BACKBONES]
    if bad:
        raise WorldssmError(f"unknown backbones {bad}; choose from {BACKBONES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise WorldssmError("--device cuda but torch sees no CUDA device")
    if train_steps is not None and not 2 <= train_steps < 10**8:
        raise WorldssmError(f"--train-steps must be in [2, 10**8), got {train_steps}")
    work = Path(work)
    for n in names:  # every env is checked before any is collected or trained
        check_entry(n, SUITE[n])
        if resume:
            _resumable(n, work, backbones, max(2, int((train_steps or SUITE[n].train_steps) * scale)), seed)
    results = {}
    for n in names:
        results[n] = run_env(n, SUITE[n], work, device, backbones, seed, progress, preset, scale, train_steps, resume)
        print(line(n, results[n]), flush=True)
    result = {"bench": "fidelity", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "cpus": os.cpu_count(),
              "platform": platform.platform(), "load_avg_before": os.getloadavg(),
              "versions": {"torch": torch.__version__, "numpy": np.__version__},
              "protocol": "open loop, context 16, horizons 1..64, held-out episodes (ANCHORS.md)",
              "backbones": list(backbones), "envs": results}
    path = save_result(result, out_dir, f"fidelity-{'cuda' if device == 'cuda' else 'cpu'}")
    plot_grid(result, path.with_suffix(".png"))
    return result


def reevaluate(path, work, out_dir="tests/bench/results") -> dict:
    """Evaluate the runs a fidelity result was made from (in `work`) again with this version's
    evaluation, keeping everything else (collection, training time, seed); writes a new result
    whose "reevaluated_from" names the old file. For a change of the evaluation, not the model."""
    import json

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError
    from worldssm.train.evaluate import EvalConfig, evaluate

    path, work = Path(path), Path(work)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorldssmError(f"{path}: not a readable fidelity result ({exc})") from None
    device = "cuda" if result["device"] != "cpu" else "cpu"
    for name, rec in result["envs"].items():
        pixels = SUITE[name].pixels if name in SUITE else False
        for backbone, r in rec["backbones"].items():
            run, data = work / name / f"run-{backbone}", work / name / "data"
            if not run.is_dir() or not data.is_dir():
                raise WorldssmError(f"{name}: {run} or {data} is missing; re-evaluation needs the suite's --work")
            r["eval"] = evaluate(run, data, work / name / f"eval-{backbone}",
                                 EvalConfig(seed=rec["seed"], device=device, video=pixels))
            r["targets"] = verdict(r["eval"])
        print(line(name, rec), flush=True)
    result.update(reevaluated_from=path.name, reevaluated_git_sha=git_sha(), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    result.pop("path", None)
    new = save_result(result, out_dir, f"fidelity-{device}")
    plot_grid(result, new.with_suffix(".png"))
    return result


def line(name: str, record: dict) -> str:
    parts = []
    for b, r in record["backbones"].items():
        e, t = r["eval"], r["targets"]
        parts.append(f"{b}: h1 {e['obs_nmse']['model'][0]:.4f} vs repeat {e['obs_nmse']['repeat_last'][0]:.4f} "
                     f"({t['h1_over_repeat_last']:.2f}x), below naive to 32: {t['below_both_naive_up_to_32']}"
                     + (f", continue F1 {t['continue_f1']:.2f}" if "continue_f1" in t and t["continue_f1"] is not None else "")
                     + f", {r['train_seconds']:.0f} s")
    return f"{name}: " + "; ".join(parts)


def plot_grid(result: dict, path: Path) -> None:
    """Error against horizon, one panel per env; a line per backbone plus the naive predictors."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["envs"])
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rec = result["envs"][name]
        first = next(iter(rec["backbones"].values()))["eval"]
        ks = first["horizons"]
        for b, r in rec["backbones"].items():
            ax.plot(ks, r["eval"]["obs_nmse"]["model"], marker="o", label=f"model ({b})")
        ax.plot(ks, first["obs_nmse"]["repeat_last"], ls="--", label="repeat last")
        ax.plot(ks, first["obs_nmse"]["mean"], ls=":", label="mean")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("horizon k")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("normalised observation MSE")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
