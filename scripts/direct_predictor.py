"""A reference for the fidelity targets: how close a direct one-step predictor gets.

    python scripts/direct_predictor.py --data runs/fidelity/LunarLanderContinuous-v3/data

An MLP (3 x 512, SiLU) reads the last K observations and actions (zeros before the episode's
start) and predicts o_{t+1} - o_t; it trains on the same episodes the world model trains on
(`TrainConfig`'s split: val_fraction 0.1, seed 0) and is scored on the held-out ones at horizon 1,
after at least 16 observed steps, in the fidelity bench's units (squared error over the data's
per-dimension variance). It is not a world model (no latent, no imagination, no heads): where it
also stays near repeat-last, what limits the world model is what the observation leaves out, not
the world model. Prints, and writes OUT (JSON) with the per-dimension errors.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from worldssm.data import RolloutDataset
from worldssm.errors import WorldssmError
from worldssm.train import TrainConfig
from worldssm.train.evaluate import error_units


def rows(episodes, n_actions: int | None, k: int):
    """(inputs, next observation, this observation, step index) for every step with a next one."""
    x, y, last, step = [], [], [], []
    for e in episodes:
        o = e["obs"].reshape(len(e["obs"]), -1).astype(np.float32)
        a = e["action"].reshape(len(o), -1).astype(np.float32)
        if n_actions is not None:
            a = np.eye(n_actions, dtype=np.float32)[e["action"].reshape(-1).astype(int)]
        for t in range(len(o) - 1):
            idx = np.arange(t - k + 1, t + 1)
            before = idx < 0
            ho, ha = o[np.maximum(idx, 0)], a[np.maximum(idx, 0)]
            ho[before], ha[before] = 0, 0
            x.append(np.concatenate([ho.ravel(), ha.ravel(), before.astype(np.float32)]))
            y.append(o[t + 1])
            last.append(o[t])
            step.append(t)
    return np.array(x), np.array(y), np.array(last), np.array(step)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="rollout directory (vector observations)")
    p.add_argument("--history", type=int, default=8, help="observations and actions the MLP reads")
    p.add_argument("--steps", type=int, default=6000, help="training updates (batch 512)")
    p.add_argument("--out", default=None, help="JSON to write (default: print only)")
    a = p.parse_args()
    torch.manual_seed(0)
    try:
        ds = RolloutDataset.load(a.data)
    except WorldssmError as exc:
        p.error(str(exc))
    space = ds.spec.action_space
    n_actions = int(space["n"]) if space.get("type") == "discrete" else None
    cfg = TrainConfig()
    train, held = ds.split(cfg.val_fraction, cfg.seed)
    xtr, ytr, ltr, _ = rows(train.episodes, n_actions, a.history)
    xev, yev, lev, sev = rows(held.episodes, n_actions, a.history)
    var = error_units(np.concatenate([e["obs"].reshape(len(e["obs"]), -1) for e in held.episodes]))
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    dsd = (ytr - ltr).std(0) + 1e-6
    net = nn.Sequential(nn.Linear(xtr.shape[1], 512), nn.SiLU(), nn.Linear(512, 512), nn.SiLU(),
                        nn.Linear(512, 512), nn.SiLU(), nn.Linear(512, ytr.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.steps)
    xt = torch.tensor((xtr - mu) / sd, dtype=torch.float32)
    yt = torch.tensor((ytr - ltr) / dsd, dtype=torch.float32)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        b = torch.randint(0, len(xt), (512,))
        loss = (net(xt[b]) - yt[b]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        pred = net(torch.tensor((xev - mu) / sd, dtype=torch.float32)).double().numpy() * dsd + lev
    scored = sev >= 15  # o_{t+1} after at least 16 observed steps, as the open-loop protocol
    err = ((pred - yev) ** 2 / var)[scored]
    rep = ((lev - yev) ** 2 / var)[scored]
    out = {"env_id": ds.spec.env_id, "history": a.history, "steps": a.steps, "train_rows": len(xt),
           "scored_rows": int(scored.sum()), "train_seconds": time.perf_counter() - t0,
           "h1": {"direct": float(err.mean()), "repeat_last": float(rep.mean())},
           "h1_over_repeat_last": float(err.mean() / rep.mean()),
           "per_dim": {"direct": err.mean(0).tolist(), "repeat_last": rep.mean(0).tolist()}}
    print(f"{out['env_id']}: direct predictor h1 {out['h1']['direct']:.4f} vs repeat-last "
          f"{out['h1']['repeat_last']:.4f} ({out['h1_over_repeat_last']:.2f}x), {out['train_seconds']:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
