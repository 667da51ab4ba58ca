"""Open-loop evaluation of a world model against naive predictors.

The protocol (ANCHORS.md): on held-out episodes, observe C context steps, then imagine with the
recorded actions for k = 1, 2, 4, ..., 64 steps. The observation error at each k is the squared
error divided per dimension by the variance of the observations (so 1.0 is the error of the best
constant guess), averaged over dimensions and over the windows whose target step k is still inside
the episode. A dimension that hardly varies would weigh without bound, so each variance is floored
at 1% of the mean variance; images use one variance for all pixels (the mean over pixels), since a
pixel that never changes is no reason to weigh its error a trillion times. The same is reported for repeating the last context observation and for predicting
the mean observation, with the reward's absolute error and the termination F1 per k.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from worldssm.atomic import atomic_write_text
from worldssm.checkpoint import resolve_checkpoint
from worldssm.errors import WorldssmError
from worldssm.model import load_model
from worldssm.train.config import DEVICES, check_seed

HORIZONS = (1, 2, 4, 8, 16, 32, 64)
SPLITS = ("val", "all")


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate a checkpoint's open-loop predictions."""

    # The flags' choices and __post_init__ check the same constants (worldssm.commands.flags).
    CHOICES: ClassVar[dict[str, tuple]] = {"split": SPLITS, "device": DEVICES}

    context: int = 16  # observed steps before imagining
    split: str = "val"  # val: the training run's held-out episodes of the data; all: every episode
    sample: bool = False  # sample imagined latents instead of taking their expectation
    max_windows: int = 512  # cap on evaluation windows (a random subset beyond it)
    seed: int = 0  # seed of the window choice and the latent draws
    device: str = "cpu"  # where to run the model; auto: cuda if torch sees one, else cpu
    stride: int = 8  # steps between the starts of consecutive windows in an episode
    video: bool = False  # image models: also write openloop.gif (real | predicted | error; context, then imagined)
    video_horizon: int = 48  # imagined frames after the context in the video
    video_windows: int = 4  # episode windows shown one above the other in the video

    def __post_init__(self):
        # Written so that NaN fails every check.
        for name in ("context", "max_windows", "stride", "video_horizon", "video_windows"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"EvalConfig.{name} must be >= 1, got {getattr(self, name)}")
        check_seed("EvalConfig", self.seed)
        if self.split not in SPLITS:
            raise ValueError(f"EvalConfig.split must be one of {SPLITS}, got {self.split!r}")
        if self.device not in DEVICES:
            raise ValueError(f"EvalConfig.device must be one of {DEVICES}, got {self.device!r}")


def make_windows(episodes, context: int, horizon: int, stride: int, max_windows: int, seed: int):
    """Cut [context + horizon] windows (padded past the episode end) from episodes.

    Returns:
        dict of arrays [W, C+H, ...] plus "valid" bool [W, C+H] (the step exists in the episode).
    """
    span = context + horizon
    rows = []
    for ep in episodes:
        n = len(ep["reward"])
        for s in range(0, max(0, n - context), stride):
            rows.append((ep, s, n))
    if not rows:
        raise WorldssmError(f"no episode is longer than the context ({context} steps): use a shorter --context")
    if len(rows) > max_windows:
        pick = np.random.default_rng(seed).choice(len(rows), max_windows, replace=False)
        rows = [rows[i] for i in sorted(pick)]
    out = {k: [] for k in ("obs", "action", "reward", "is_terminal", "valid")}
    for ep, s, n in rows:
        idx = np.arange(s, s + span)
        valid = idx < n
        idx = np.minimum(idx, n - 1)
        for k in ("obs", "action", "reward", "is_terminal"):
            arr = ep[k][idx].copy()
            if k == "action":
                arr[~valid] = 0
            out[k].append(arr)
        out["valid"].append(valid)
    return {k: np.stack(v) for k, v in out.items()}


def _f1(pred: np.ndarray, true: np.ndarray) -> float | None:
    tp = float(np.sum(pred & true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))
    if tp + fp + fn == 0:
        return None  # no terminal step predicted or present: F1 is undefined
    return 2 * tp / (2 * tp + fp + fn)


def _end_pairs(cont: np.ndarray, is_terminal: np.ndarray, valid: np.ndarray):
    """(predicted end, true end) at each existing step t+1, flat.

    Args:
        cont: [B, T] the continue head at each observed step t: its prediction of whether the
            episode goes on after t+1.
        is_terminal, valid: [B, T] the episodes' flags and which steps exist (padding does not).
    """
    ok = valid[:, 1:].astype(bool)
    return (cont[:, :-1] < 0.5)[ok], is_terminal[:, 1:].astype(bool)[ok]


def _end_scores(p: np.ndarray, t: np.ndarray) -> dict:
    """Precision, recall and F1 of predicting the end, and how many steps and ends there were."""
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    return {"steps": int(p.size), "terminal_steps": int(t.sum()),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None,
            "f1": _f1(p, t)}


@torch.no_grad()
def continue_scores(model, episodes, device="cpu", steps_per_batch: int = 16384) -> dict:
    """The continue head over every step of every episode, each observed from its start (the
    model's prediction at t of whether the episode goes on after t+1), scored by `_end_scores`.
    Every end in the episodes counts, not only the few that fall inside the open-loop windows'
    context (3 in LunarLander's, too few for an F1)."""
    groups, cur = [], []
    for e in sorted(episodes, key=lambda e: len(e["reward"])):  # similar lengths share a batch
        if cur and (len(cur) + 1) * len(e["reward"]) > steps_per_batch:
            groups.append(cur)
            cur = []
        cur.append(e)
    groups += [cur] if cur else []
    preds, trues = [], []
    for group in groups:
        lengths = np.array([len(e["reward"]) for e in group])
        steps = np.arange(lengths.max())[None]
        idx, valid = np.minimum(steps, lengths[:, None] - 1), steps < lengths[:, None]  # pad with the last step
        obs = np.stack([e["obs"][r] for e, r in zip(group, idx)])
        act = np.stack([e["action"][r] for e, r in zip(group, idx)])
        first = np.zeros(valid.shape, bool)
        first[:, 0] = True
        _, pred = model.observe_sequence(torch.as_tensor(obs, device=device), torch.as_tensor(act, device=device),
                                         torch.as_tensor(first, device=device))
        term = np.stack([e["is_terminal"][r] for e, r in zip(group, idx)])
        p, t = _end_pairs(pred.cont.double().cpu().numpy(), term, valid)
        preds.append(p)
        trues.append(t)
    return {"over": "episodes", **_end_scores(np.concatenate(preds), np.concatenate(trues))}


def error_units(all_obs: np.ndarray) -> np.ndarray:
    """The variance that divides squared observation errors (the protocol's normalised units),
    from every observation of the evaluated episodes [N, *obs_shape]."""
    var = all_obs.astype(np.float64).var(0)
    if all_obs.ndim > 2:  # images: one scale for all pixels, or a pixel that never changes weighs infinitely
        return np.full_like(var, max(float(var.mean()), 1e-12))
    # vectors: each dimension in its own units, a constant one floored at 1% of the mean spread
    return np.maximum(var, max(1e-2 * float(var.mean()), 1e-12))


@torch.no_grad()
def open_loop(model, episodes, context=16, horizons=HORIZONS, stride=8, max_windows=512, seed=0,
              sample=False, batch=256, device="cpu") -> dict:
    """Run the protocol; returns per-horizon errors for the model and the naive predictors."""
    hmax = max(horizons)
    w = make_windows(episodes, context, hmax, stride, max_windows, seed)
    all_obs = np.concatenate([ep["obs"] for ep in episodes]).astype(np.float64)
    mean, var = all_obs.mean(0), error_units(all_obs)
    gen = torch.Generator(device=device).manual_seed(seed)
    preds, rews, conts = [], [], []
    n = len(w["obs"])
    for lo in range(0, n, batch):
        sl = slice(lo, lo + batch)
        obs = torch.as_tensor(w["obs"][sl], device=device)
        act = torch.as_tensor(w["action"][sl], device=device)
        first = torch.zeros(obs.shape[:2], dtype=torch.bool, device=device)
        first[:, 0] = True
        state, pred = model.observe_sequence(obs[:, :context], act[:, :context], first[:, :context])
        last = type(pred)(*(None if f is None else f[:, -1] for f in pred))
        _, roll = model.rollout(state, last, act[:, context:], sample=sample, generator=gen)
        preds.append(roll["obs"].double().cpu().numpy())
        rews.append(roll["reward"].double().cpu().numpy())
        conts.append(roll["cont"].double().cpu().numpy())
    pred_obs = np.concatenate(preds)  # [W, H, *obs]
    pred_rew, pred_cont = np.concatenate(rews), np.concatenate(conts)
    true_obs = w["obs"][:, context:].astype(np.float64)  # target o_{t+k} sits at index context-1+k
    last_obs = w["obs"][:, context - 1].astype(np.float64)
    obs_axes = tuple(range(2, true_obs.ndim))

    def nmse(p):
        return (((p - true_obs) ** 2) / var).mean(axis=obs_axes)  # [W, H]

    errs = {"model": nmse(pred_obs), "repeat_last": nmse(last_obs[:, None]), "mean": nmse(mean[None, None])}
    valid = w["valid"][:, context:]
    true_rew = w["reward"][:, context:].astype(np.float64)
    rew_err = {
        "model": np.abs(pred_rew - true_rew),
        "repeat_last": np.abs(w["reward"][:, context - 1, None] - true_rew),
        "mean": np.abs(np.concatenate([ep["reward"] for ep in episodes]).mean() - true_rew),
    }
    term_true = w["is_terminal"][:, context:].astype(bool)
    result = {"context": context, "horizons": list(horizons), "windows": int(n), "obs_nmse": {}, "reward_mae": {},
              "termination_f1": [], "valid_windows": [],
              "continue": continue_scores(model, episodes, device)}
    for name in errs:
        result["obs_nmse"][name] = []
        result["reward_mae"][name] = []
    for k in horizons:
        m = valid[:, k - 1]
        result["valid_windows"].append(int(m.sum()))
        for name in errs:
            result["obs_nmse"][name].append(float(errs[name][m, k - 1].mean()) if m.any() else None)
            result["reward_mae"][name].append(float(rew_err[name][m, k - 1].mean()) if m.any() else None)
        result["termination_f1"].append(_f1((pred_cont[m, k - 1] < 0.5), term_true[m, k - 1]))
    return result


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, style in (("model", "o-"), ("repeat_last", "s--"), ("mean", "^:")):
        ys = [np.nan if v is None else v for v in result["obs_nmse"][name]]  # null: not finite
        ax.plot(result["horizons"], ys, style, label=name.replace("_", "-"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("open-loop horizon k (steps)")
    ax.set_ylabel("normalised observation MSE")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def evaluate(checkpoint, data, out_dir, cfg: EvalConfig = EvalConfig()) -> dict:
    """Evaluate a checkpoint on rollout data; writes eval.json and openloop.png into out_dir.

    Reads the run without locking it (a run in training can be evaluated: `latest` always names
    a complete checkpoint). eval.json is strict JSON: a number that is not finite is null.

    Args:
        checkpoint: a run directory or a checkpoint directory.
        data: the rollout shards to evaluate on; with `cfg.split == "val"` the same data the
            model was trained on, whose held-out episodes are re-derived from the run's config.
        out_dir: where eval.json (the result, with `cfg` under "eval_config") and openloop.png go.
        cfg: the evaluation knobs.

    Returns:
        The result as written (non-finite numbers as None).
    """
    from worldssm.data import RolloutDataset
    from worldssm.train.trainer import check_spaces, pick_device, train_config_of

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WorldssmError(f"{out} exists and is not a directory: the eval output must be a directory")
    device = pick_device(cfg.device)
    ckpt = resolve_checkpoint(checkpoint)
    model, sidecar = load_model(ckpt, device=device)
    if cfg.video and model.obs_kind != "image":
        raise WorldssmError("--video draws image observations, and this model's are vectors "
                            "(openloop.png shows their error against the horizon)")
    dataset = RolloutDataset.load(data)
    check_spaces(sidecar["data"], dataset.spec, ckpt)
    if cfg.split == "val":
        tc = train_config_of(sidecar, ckpt)
        _, episodes = dataset.split(tc.val_fraction, tc.seed)
        episodes = episodes.episodes
    else:
        episodes = dataset.episodes
    result = open_loop(model, episodes, context=cfg.context, stride=cfg.stride, max_windows=cfg.max_windows,
                       seed=cfg.seed, sample=cfg.sample, device=device)
    result.update({"checkpoint_step": sidecar["step"], "env_id": dataset.spec.env_id, "split": cfg.split,
                   "episodes": len(episodes), "sample": cfg.sample, "seed": cfg.seed,
                   "eval_config": dataclasses.asdict(cfg)})
    result = finite_or_none(result)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(result, indent=1, allow_nan=False))
    plot(result, out / "openloop.png", f"{dataset.spec.env_id}: open-loop error (context {cfg.context})")
    if cfg.video:
        result["video"] = str(video(model, episodes, out / "openloop.gif", cfg.context, cfg.video_horizon,
                                    cfg.video_windows, cfg.seed, device))
    return result


def video(model, episodes, path: Path, context: int = 16, horizon: int = 48, windows: int = 4, seed: int = 0,
          device="cpu", scale: int = 3) -> Path:
    """An animated GIF of open-loop imagination for an image model: per window (one row each),
    the real frame | the predicted frame | their absolute difference (x3), through `context`
    observed steps (a green bar on top) and `horizon` imagined ones (a red bar); steps past an
    episode's end are black. Written atomically."""
    import os

    from PIL import Image

    w = make_windows(episodes, context, horizon, stride=10**9, max_windows=windows, seed=seed)
    obs = torch.as_tensor(w["obs"], device=device)
    act = torch.as_tensor(w["action"], device=device)
    first = torch.zeros(obs.shape[:2], dtype=torch.bool, device=device)
    first[:, 0] = True
    with torch.no_grad():
        state, pred = model.observe_sequence(obs[:, :context], act[:, :context], first[:, :context])
        last = type(pred)(*(None if f is None else f[:, -1] for f in pred))
        _, roll = model.rollout(state, last, act[:, context:])
    real = w["obs"].astype(np.float32)  # [W, C+H, h, w, 3]
    guess = real.copy()
    guess[:, context:] = np.clip(roll["obs"].float().cpu().numpy(), 0, 255)
    err = np.clip(np.abs(real - guess) * 3, 0, 255)
    tiles = np.concatenate([real, guess, err], axis=3)  # [W, T, h, 3w, 3]
    tiles[~w["valid"]] = 0
    frames = []
    for t in range(tiles.shape[1]):
        grid = np.concatenate(list(tiles[:, t]), axis=0).astype(np.uint8)  # windows stacked
        grid = np.kron(grid, np.ones((scale, scale, 1), np.uint8))
        bar = np.zeros((6, grid.shape[1], 3), np.uint8)
        bar[:, : int(grid.shape[1] * (t + 1) / tiles.shape[1])] = (60, 200, 90) if t < context else (230, 70, 60)
        frames.append(Image.fromarray(np.concatenate([bar, grid], axis=0)))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    os.replace(tmp, path)
    return path


def finite_or_none(obj):
    """`obj` with every float that is NaN or infinite replaced by None (JSON's null), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def summary_table(result: dict) -> str:
    """A plain-text table of the per-horizon errors."""
    lines = [f"{'k':>4} {'model':>10} {'repeat':>10} {'mean':>10} {'rew MAE':>9}"]
    for i, k in enumerate(result["horizons"]):
        row = [result["obs_nmse"][n][i] for n in ("model", "repeat_last", "mean")]
        rew = result["reward_mae"]["model"][i]
        fmt = lambda v, w=10: f"{v:{w}.4f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
        lines.append(f"{k:>4} " + " ".join(fmt(v) for v in row) + " " + fmt(rew, 9))
    return "\n".join(lines)
