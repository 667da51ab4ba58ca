"""Train the small CartPole-v1 world model that ships inside the package for `worldssm play`.

Run from the repository root (about 10 minutes on 2 CPU cores):

    python scripts/make_play_model.py

It collects 24,000 steps of 8 CartPole-v1 copies driven by a noisy balancer (push towards the
side the pole falls to, a uniformly random action with probability 0.3), so the data hold both
long balanced stretches (what a person playing produces) and falls, trains the SMALL preset for
6,000 updates (seed 0), and copies the final checkpoint's model file and sidecar (without the
optimizer state and the data's path on the training machine) into `worldssm/play/assets/cartpole/`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

import worldssm as ws
from worldssm.agents.base import TickStream

ASSET = Path(__file__).resolve().parents[1] / "worldssm" / "play" / "assets" / "cartpole"


class NoisyBalancer:
    """CartPole: push the cart under the falling pole; a random action with probability `noise`."""

    def __init__(self, seed: int = 0, noise: float = 0.3):
        self.stream, self.noise = TickStream(seed), noise

    def act(self, obs: np.ndarray, info) -> np.ndarray:
        rng = self.stream.at(info.tick)
        greedy = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
        random = rng.integers(0, 2, len(obs))
        return np.where(rng.random(len(obs)) < self.noise, random, greedy)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6000, help="training updates")
    p.add_argument("--ticks", type=int, default=3000, help="collection ticks of 8 copies")
    p.add_argument("--work", help="where the data and run go (default: a temporary directory)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="worldssm-play-model-"))
    ws.collect("CartPole-v1", work / "data", agents=8, steps=args.ticks, agent=NoisyBalancer(seed=0), seed=0)
    ws.train_model(work / "data", work / "run", preset="SMALL", steps=args.steps, seed=0, progress=True)
    latest = work / "run" / "checkpoints" / (work / "run" / "checkpoints" / "latest").read_text().strip()
    ASSET.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(latest / "model.safetensors", ASSET / "model.safetensors")
    sidecar = json.loads((latest / "checkpoint.json").read_text())
    sidecar["data"].pop("path", None)  # where the data lay on the machine that trained it
    sidecar["sha256"].pop("optimizer.safetensors", None)  # the optimizer state does not ship
    sidecar["optimizer"] = {}
    (ASSET / "checkpoint.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"wrote {ASSET} from {latest}")


if __name__ == "__main__":
    main()
