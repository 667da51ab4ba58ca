"""Imagination against reality along recorded episodes: where does the model's future part from the real one?

    python scripts/imagined_vs_real.py --run OUT/round-02/run --data OUT/data/round-03 --dims 0,1

For each of the first --episodes episodes and every --every steps from step --start on: observe
the real episode up to step t, then imagine --horizon steps open loop with the actions the episode
really took, and print the chosen observation dimensions at the first and the last imagined step
beside the real ones, and the lowest continue probability imagined. With `worldssm improve`'s
directory OUT, round R's planner episodes are OUT/data/round-(R+1).
"""

from __future__ import annotations

import argparse

import torch

from worldssm.checkpoint import resolve_checkpoint
from worldssm.data import RolloutDataset
from worldssm.model.loading import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run or checkpoint directory")
    p.add_argument("--data", required=True, help="rollout directory with the episodes")
    p.add_argument("--dims", default="0,1", help="comma-separated observation dimensions to print")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--start", type=int, default=40)
    p.add_argument("--every", type=int, default=30)
    p.add_argument("--horizon", type=int, default=24)
    a = p.parse_args()
    dims = [int(d) for d in a.dims.split(",")]
    model, _ = load_model(resolve_checkpoint(a.run), device="cpu")
    for i, e in enumerate(RolloutDataset.load(a.data).episodes[:a.episodes]):
        n = len(e["reward"])
        for t in range(a.start, n - a.horizon, a.every):
            obs, act = torch.as_tensor(e["obs"][None, :t]), torch.as_tensor(e["action"][None, :t + a.horizon])
            first = torch.zeros(1, t, dtype=torch.bool)
            first[:, 0] = True
            with torch.no_grad():
                state, pred = model.observe_sequence(obs, act[:, :t], first)
                last = type(pred)(*(f[:, -1] for f in pred))
                _, roll = model.rollout(state, last, act[:, t:])
            real, imagined = e["obs"][t:t + a.horizon], roll["obs"][0].numpy()  # o_t .. o_{t+H-1}
            cols = "  ".join(f"dim {d}: real {real[0, d]:+.2f} -> {real[-1, d]:+.2f}, imagined "
                             f"{imagined[0, d]:+.2f} -> {imagined[-1, d]:+.2f}" for d in dims)
            print(f"episode {i} ({n} steps), from step {t}: {cols}; lowest continue {float(roll['cont'].min()):.3f}")


if __name__ == "__main__":
    main()
