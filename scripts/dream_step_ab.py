"""The dream step's three GPU changes of 2026-12-08, each undone alone and all together, timed in one process.

    python scripts/dream_step_ab.py [--envs 16384 1024] [--seconds 2] [--out FILE]

`DreamVectorEnv` steps of the BASE model that `worldssm bench dream` builds, arms alternated
(reversed every other round). The arms:

    new      the shipped code
    conv32   the conv states stored in float32 (shipped: the bfloat16 backbone's dtype)
    decmod   the vector decoder on the module path (shipped: fused launches, `fused.decode_mlp`)
    latents  z and h copied out of the CUDA graph's buffers (shipped: `latents=False`)
    old      all three undone

Each arm only patches functions back to what they were; `arm("new")` restores them. Prints and
writes every row (median and p99 ms a step, env-steps/s, state bytes per env).
"""

from __future__ import annotations

import argparse
import json

ARMS = ("new", "old", "conv32", "decmod", "latents")
_SHIPPED: dict = {}


def _originals():
    from worldssm.engine.engine import Engine
    from worldssm.model import fused
    from worldssm.model.mamba2 import Mamba2Backbone

    if not _SHIPPED:
        _SHIPPED.update(spec=Mamba2Backbone.state_spec, decode=fused.decode_mlp, imagine=Engine.imagine,
                        observe=Engine.observe)
    return Mamba2Backbone, fused, Engine


def arm(name: str) -> None:
    """Patch in arm `name` (one of ARMS); "new" is the code as shipped."""
    if name not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {name!r}")
    backbone, fused, engine = _originals()
    shipped = _SHIPPED
    backbone.state_spec, fused.decode_mlp = shipped["spec"], shipped["decode"]
    engine.imagine, engine.observe = shipped["imagine"], shipped["observe"]
    undo = ("conv32", "decmod", "latents") if name == "old" else (() if name == "new" else (name,))
    if "conv32" in undo:
        def spec32(self, state_dtype=None):
            return {k: (s, _float32() if k.endswith(".conv") else d)
                    for k, (s, d) in shipped["spec"](self, state_dtype).items()}
        backbone.state_spec = spec32
    if "decmod" in undo:
        def module_decoder(wm, z, h_prev):
            import torch

            from worldssm.kernels import tf32_matmuls
            from worldssm.model.nets import run_mlp

            with tf32_matmuls(z.device):
                return run_mlp(wm.decoder, torch.cat([z, h_prev.to(z.dtype)], -1))
        fused.decode_mlp = module_decoder
    if "latents" in undo:
        engine.imagine = lambda self, slots, actions, decode=False, latents=True: \
            shipped["imagine"](self, slots, actions, decode, True)
        engine.observe = lambda self, slots, obs, actions, resets=None, decode=False, latents=True: \
            shipped["observe"](self, slots, obs, actions, resets, decode, True)


def _float32():
    import torch

    return torch.float32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, nargs="+", default=[16384, 1024], help="dream counts")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per arm and round")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every arm per dream count")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    import tempfile
    from pathlib import Path

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("dream_step_ab.py times the GPU dream step: it needs a CUDA GPU")
    import worldssm.bench.dream as bd
    from worldssm.bench.step import env_info

    model, contexts = bd._setup("cuda", Path(tempfile.mkdtemp()))
    rows = []
    for n in args.envs:
        for r in range(args.rounds):
            for name in ARMS if r % 2 == 0 else ARMS[::-1]:
                arm(name)
                row = dict(bd.measure(model, contexts, n, args.seconds, "cuda"), arm=name, round=r)
                rows.append(row)
                print(n, name, round(row["median_ms"], 4), round(row["p99_ms"], 4), int(row["env_steps_per_s"]),
                      row["state_bytes_per_env"], flush=True)
    arm("new")
    if args.out:
        from worldssm.atomic import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({"script": "dream_step_ab.py", "env": env_info(),
                                                      "doc": __doc__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
