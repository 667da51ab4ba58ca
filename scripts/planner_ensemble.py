"""CartPole-v1 with a planner over one model or an ensemble of several (the experiment behind
tests/bench/results/experiments/planner-ensemble-CartPole-v1-seed1.json).

    python3 scripts/planner_ensemble.py RUN[,RUN2,...] min|mean SEED OUT_DIR

Plays 10 episodes (env seeds SEED..SEED+9, planner seed SEED) with the 'fast' CEM planner and
prints one JSON line: returns, how each episode ended, the mean decision time. Several runs plan
with `worldssm.agents.ensemble.EnsembleEngine` ("min": the lowest member's continue, as shipped;
"mean": the members' mean continue, the control). `worldssm plan --checkpoint RUN RUN2 ...` is
the user's way to the "min" form.
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from worldssm.agents.ensemble import planning_engine
from worldssm.agents.planners import PLANNER_PRESETS, make_planner
from worldssm.data import RolloutDataset, collect
from worldssm.engine import Engine
from worldssm.model import load_model


def main(runs: list[str], cont: str, seed: int, out: Path, episodes: int = 10) -> dict:
    cfg = PLANNER_PRESETS["fast"]
    engine = planning_engine((Engine(load_model(r)[0], capacity=episodes * (cfg.samples + 1), seed=0) for r in runs),
                             cont=cont)
    planner = make_planner(engine, cfg, seed=seed)
    if out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    collect("CartPole-v1", n_agents=episodes, steps=100_000, seed=seed, agent=planner, out_dir=out,
            env_kwargs={"autoreset": "off"}, until_empty=True)
    eps = RolloutDataset.load(out).episodes
    returns = [float(e["reward"].sum()) for e in eps]
    ends = ["x" if abs(e["obs"][-1][0]) > 2.4 else ("th" if abs(e["obs"][-1][2]) > 0.2095 else "trunc") for e in eps]
    return {"runs": runs, "cont": cont, "seed": seed, "returns": returns, "mean": float(np.mean(returns)),
            "at500": int(sum(r >= 500 for r in returns)), "causes": ends,
            "ms": 1e3 * planner.stats["seconds"] / max(1, planner.stats["decisions"]), "wall": time.time() - t0}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))), flush=True)
