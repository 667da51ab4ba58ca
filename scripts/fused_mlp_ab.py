"""The fused world-model step's MLP layers for many rows, side by side on a GPU (alternating arms).

    python scripts/fused_mlp_ab.py [--batches 64 256 1024 4096 16384] [--out FILE]

BASE world model as `worldssm bench step` builds it (64-dim observations, 8 actions, bf16
backbone, fp32 encoder and heads), the whole observe step replayed from a CUDA graph. Arms:
"column tiles" (WORLDSSM_STEP_PATH=layer, `ROWS_FROM` out of reach: every fused layer split over
column tiles), "rows" (the same from `ROWS_FROM` rows on: kernels/mlp/rows.py) and "default"
(the engine's choice when this script was written: the fused whole step up to 1,024 agents, the
module heads above; since 2026-12-07 the fused step at every batch, see scripts/mlp_tiles_sweep.py).
Each arm runs twice per batch; prints and writes the medians (us). Then the kernels of the rows
arm at 1,024 and 16,384 agents from the profiler.
"""

from __future__ import annotations

import argparse
import json
import os

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--out", default=None, help="write the medians as JSON here")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("fused_mlp_ab.py times CUDA graphs: it needs a CUDA GPU")

    import worldssm.kernels.mlp.triton as mlp
    from worldssm.bench.step import capture, profile_kernels, random_slab, set_kernels, time_calls
    from worldssm.model import WorldModel
    from worldssm.model.config import preset

    torch.manual_seed(0)
    wm = WorldModel(preset("BASE"), {"type": "box", "shape": [64], "dtype": "float32", "low": -1, "high": 1},
                    {"type": "discrete", "n": 8})
    with torch.no_grad():
        for prm in wm.parameters():  # the reward head starts at zero: give it values
            if not prm.any():
                prm.normal_(0.0, 0.02)
    wm = wm.to("cuda").eval()
    wm.backbone.to(torch.bfloat16)
    set_kernels(wm, "triton")
    gen = torch.Generator(device="cuda").manual_seed(1)

    def step_of(b):
        slab = random_slab(wm.backbone, b + 1, gen)
        slots = torch.randperm(b + 1, generator=gen, device="cuda")[:b]
        obs = torch.randn(b, 64, generator=gen, device="cuda")
        act = torch.randint(0, 8, (b,), generator=gen, device="cuda")
        reset = torch.zeros(b, dtype=torch.bool, device="cuda")
        return lambda: wm.observe_slots(slab, slots, obs, act, reset)

    rows_from = mlp.ROWS_FROM
    arms = {"column tiles": ("layer", 1 << 40), "rows": ("layer", rows_from), "default": ("auto", rows_from)}
    medians: dict[str, list[float]] = {}
    with torch.no_grad():
        for b in args.batches:
            step = step_of(b)
            for _ in range(2):
                for name, (path, start) in arms.items():
                    os.environ["WORLDSSM_STEP_PATH"], mlp.ROWS_FROM = path, start
                    graph, _ = capture(step)
                    t = time_calls(graph.replay, 50 if b < 4096 else 20)["median_us"]
                    medians.setdefault(f"{b} {name}", []).append(round(t, 1))
                    del graph
            print(b, {k.split(" ", 1)[1]: v for k, v in medians.items() if k.startswith(f"{b} ")}, flush=True)
        os.environ["WORLDSSM_STEP_PATH"], mlp.ROWS_FROM = "layer", rows_from
        kernels = {}
        for b in (1024, 16384):
            step = step_of(b)
            for _ in range(3):
                step()
            kernels[b] = profile_kernels(step, top=8)
            print(f"rows arm, {b} agents:", [(k["kernel"][:30], round(k["total_us"], 1)) for k in kernels[b]])
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "medians_us": medians, "kernels_rows_arm": kernels}, f,
                      indent=1)


if __name__ == "__main__":
    main()
