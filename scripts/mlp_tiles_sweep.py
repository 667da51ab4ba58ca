"""Tile plans of the fused MLP layers at many rows, inside the whole world-model step, on a GPU.

    python scripts/mlp_tiles_sweep.py [--batches 16384 4096] [--out FILE]

BASE world model as `worldssm bench step` builds it, the whole observe step replayed from a CUDA
graph (`bench_world_model`, arm fused+graph). For each batch: every pair of a layer plan
(`kernels.mlp.triton.TILE_PLAN`) and a `heads_out` plan (`HEADS_TILE_PLAN`) below, with the
split path's conv kernel in its default tiles; then the best pair with the conv kernel's old
tiles (32 x 64, 8 warps) and its new ones (16 x 128, 4 warps), and the module heads (cuBLAS
GEMMs, separate norms and softmaxes) for reference. Prints and writes every median (us).
"""

from __future__ import annotations

import argparse
import json


def plan(bm: int, bn: int, warps: int, bk: int = 32, stages: int = 3) -> dict:
    return dict(block_m=bm, block_n=bn, block_k=bk, warps=warps, stages=stages)


LAYER_PLANS = (plan(128, 256, 8), plan(64, 256, 8))
HEADS_PLANS = (plan(128, 256, 8), plan(64, 128, 8), plan(64, 256, 8), plan(128, 128, 8), plan(64, 64, 4),
               plan(32, 256, 8), plan(32, 128, 4))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[16384, 4096])
    p.add_argument("--out", default=None, help="write every row as JSON here")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("mlp_tiles_sweep.py times CUDA graphs: it needs a CUDA GPU")
    import worldssm.kernels.mlp.triton as mlp
    import worldssm.kernels.step.split as split
    import worldssm.model.fused as fused
    from worldssm.bench.step import bench_world_model, env_info

    real_why, real_conv = fused.why_not_fused, split.conv_tiles
    module = {"on": False}
    fused.why_not_fused = lambda wm, s, b: "the module heads arm" if module["on"] else real_why(wm, s, b)
    mlp.TILES_FROM = 1  # the plans at every batch given
    rows = []

    def one(label: str, batch: int) -> dict:
        r = bench_world_model(batch, 40, arms=("fused+graph",))[0]
        r.update(label=label, plan=dict(mlp.TILE_PLAN), heads_plan=dict(mlp.HEADS_TILE_PLAN),
                 conv_tiles=list(split.conv_tiles(batch)))
        print(f"{label:48s} B={batch:6d} median {r.get('median_us', float('nan')):9.1f} "
              f"p99 {r.get('p99_us', float('nan')):9.1f} {r.get('error', '')}", flush=True)
        rows.append(r)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"env": env_info(), "rows": rows}, f, indent=1)
        return r

    for batch in args.batches:
        best = None
        for tp in LAYER_PLANS:
            for hp in HEADS_PLANS:
                mlp.TILE_PLAN, mlp.HEADS_TILE_PLAN = tp, hp
                r = one(f"layers {tp['block_m']}x{tp['block_n']} heads {hp['block_m']}x{hp['block_n']} "
                        f"w{hp['warps']}", batch)
                if "median_us" in r and (best is None or r["median_us"] < best[2]):
                    best = (tp, hp, r["median_us"])
        mlp.TILE_PLAN, mlp.HEADS_TILE_PLAN = best[0], best[1]
        split.conv_tiles = lambda rows_: (32, 64, 8)
        one("best plans, conv tiles (32,64,8)", batch)
        split.conv_tiles = real_conv
        one("best plans, conv tiles (16,128,4)", batch)
        module["on"] = True
        one("module heads", batch)
        module["on"] = False
        print("BEST", batch, best, flush=True)


if __name__ == "__main__":
    main()
