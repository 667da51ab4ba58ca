"""Train and evaluate one env's model with fields of its `WorldModelConfig` changed, on existing rollouts.

    python scripts/config_experiment.py --set mean_rows=0.5 --set loss_rec=10 --data runs/fidelity/CartPole-v1/data

Same budget as `worldssm bench fidelity` on the CPU (SMALL, 6,000 updates, seed 0, open-loop eval
with its defaults) unless told otherwise; prints and writes OUT/summary.json with the changed
fields, the horizon-1 errors, the fidelity verdict and the continue head's precision / recall /
F1. Records: tests/bench/results/experiments/*.json (mean-rows-*.json: `--set mean_rows=X`;
mode-rows-*.json: the same experiment when the deterministic latent was the argmax).
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


def parse_set(text: str) -> tuple[str, float]:
    """'name=value' -> (name, float value); a field the model config lacks is refused."""
    name, sep, value = text.partition("=")
    base = preset_for("SMALL", "mamba2")
    fields = {f.name for f in dataclasses.fields(base) if type(getattr(base, f.name)) in (int, float, bool)}
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(f"--set takes FIELD=NUMBER with FIELD one of {sorted(fields)}, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {name}: {value!r} is not a number") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", type=parse_set, action="append", default=[], metavar="FIELD=NUMBER",
                   help="a WorldModelConfig field to change (repeatable)")
    p.add_argument("--data", required=True, help="rollout directory")
    p.add_argument("--out", default=None, help="work directory (default runs/experiments/<data name>-<changes>)")
    p.add_argument("--steps", type=int, default=6000, help="training updates")
    p.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    changes = dict(a.set)
    tag = "-".join(f"{k}{v:g}" for k, v in changes.items()) or "preset"
    work = Path(a.out or f"runs/experiments/{Path(a.data).parent.name}-{tag}")
    cfg = TrainConfig(preset="SMALL", steps=a.steps, seed=a.seed, device="cpu", threads=a.threads,
                      log_every=max(1, a.steps // 20), checkpoint_every=a.steps)
    base = preset_for("SMALL", "mamba2")
    typed = {k: type(getattr(base, k))(v) for k, v in changes.items()}
    model_cfg = dataclasses.replace(base, **typed)
    t = time.perf_counter()
    Trainer(a.data, work / "run", cfg, overwrite=True, model_cfg=model_cfg).run(progress=False)
    train_s = time.perf_counter() - t
    res = evaluate(work / "run", a.data, work / "eval", EvalConfig(seed=a.seed, device="cpu"))
    out = {"changes": typed, "steps": a.steps, "seed": a.seed, "train_s": train_s, "verdict": verdict(res),
           "h1": {k: res["obs_nmse"][k][0] for k in ("model", "repeat_last", "mean")}, "continue": res.get("continue")}
    print(json.dumps(out))
    (work / "summary.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
