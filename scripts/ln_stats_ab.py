"""LayerNorm statistics from the previous layer's epilogue, on and off, in the whole world-model step on a GPU.

    python scripts/ln_stats_ab.py [--batches 16384 4096] [--out FILE]

BASE world model as `worldssm bench step` builds it, the whole observe step replayed from a CUDA
graph (`bench_world_model`, arm fused+graph). "on" is the shipped code: each hidden layer whose
tile is its whole row leaves the next LayerNorm's (mean, variance) (`kernels.mlp.triton.
ln_stats_buffer`); "off" patches that to None, so every LayerNorm layer computes them from its
input. The arms alternate twice per batch. Then, at the first batch, torch.profiler's per-kernel
totals over 10 replays of each arm with programmatic dependent launch off (with it on, a kernel's
time includes its wait for the one before). Prints and writes every row.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16384, 4096])
    p.add_argument("--out", default=None, help="write the rows and profiles as JSON here")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("ln_stats_ab.py times CUDA graphs: it needs a CUDA GPU")
    import worldssm.bench.step as bs
    import worldssm.kernels.mlp.triton as mlp

    real, mode = mlp.ln_stats_buffer, {"off": False}
    mlp.ln_stats_buffer = lambda *a: None if mode["off"] else real(*a)
    bw = bs.copy_bandwidth()
    rows, profiles = [], {}
    for b in args.batches:
        for _ in range(2):
            for off in (False, True):
                mode["off"] = off
                r = bs.bench_world_model(b, 60, arms=("fused+graph",), bandwidth=bw)[0]
                r["stats"] = "off" if off else "on"
                rows.append(r)
                print(b, r["stats"], f"{r.get('median_us', float('nan')):.1f}", r.get("error", ""), flush=True)

    timed = bs.time_calls

    def time_and_profile(fn, reps, warmup=3):
        out = timed(fn, reps, warmup)
        profiles[label] = bs.profile_kernels(lambda: [fn() for _ in range(10)], top=9)
        return out

    bs.time_calls = time_and_profile
    arm_init = bs.arm_path.__init__

    def no_pdl(self, arm):
        arm_init(self, arm)
        self.env["WORLDSSM_PDL"] = "0"

    bs.arm_path.__init__ = no_pdl
    for off in (False, True):
        mode["off"], label = off, "off" if off else "on"
        bs.bench_world_model(args.batches[0], 20, arms=("fused+graph",))
        for k in profiles[label]:
            print("  ", label, k, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": bs.env_info(), "rows": rows, f"profile_{args.batches[0]}_pdl_off_10_replays": profiles},
                      f, indent=1, default=str)


if __name__ == "__main__":
    main()
