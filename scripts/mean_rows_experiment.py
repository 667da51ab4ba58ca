"""Train and evaluate one env's model with `WorldModelConfig.mean_rows` set, on existing rollouts.

    python scripts/mean_rows_experiment.py --mean-rows 1.0 --data runs/fidelity/CartPole-v1/data

Same budget as `worldssm bench fidelity` on the CPU (SMALL, 6,000 updates, seed 0, open-loop eval
with its defaults); prints and writes OUT/summary.json with the horizon-1 errors, the fidelity
verdict and the continue head's precision / recall / F1. Records:
tests/bench/results/experiments/mean-rows-*.json (mode-rows-*.json: the same experiment when the
deterministic latent was the argmax).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from worldssm.bench.fidelity import verdict
from worldssm.model.config import preset_for
from worldssm.train import TrainConfig, Trainer
from worldssm.train.evaluate import EvalConfig, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mean-rows", type=float, required=True, help="WorldModelConfig.mean_rows, in [0, 1]")
    p.add_argument("--data", required=True, help="rollout directory")
    p.add_argument("--out", default=None, help="work directory (default runs/mean_rows/<data name>-<mean rows>)")
    p.add_argument("--steps", type=int, default=6000, help="training updates")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    work = Path(a.out or f"runs/mean_rows/{Path(a.data).parent.name}-{a.mean_rows}")
    cfg = TrainConfig(preset="SMALL", steps=a.steps, seed=0, device="cpu", threads=a.threads,
                      log_every=max(1, a.steps // 20), checkpoint_every=a.steps)
    model_cfg = dataclasses.replace(preset_for("SMALL", "mamba2"), mean_rows=a.mean_rows)
    t = time.perf_counter()
    Trainer(a.data, work / "run", cfg, overwrite=True, model_cfg=model_cfg).run(progress=False)
    train_s = time.perf_counter() - t
    res = evaluate(work / "run", a.data, work / "eval", EvalConfig(seed=0, device="cpu"))
    out = {"mean_rows": a.mean_rows, "train_s": train_s, "verdict": verdict(res),
           "h1": {k: res["obs_nmse"][k][0] for k in ("model", "repeat_last", "mean")}, "continue": res.get("continue")}
    print(json.dumps(out))
    (work / "summary.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
