"""`worldssm bench step`: the backbone step for B agents, fused Triton + CUDA graph vs references.

Arms, measured in one run on the same weights and slab: the fused kernels under a CUDA graph,
the PyTorch reference eager, the reference under a CUDA graph, and the reference under
torch.compile + CUDA graph; then the whole world-model step (encoder, backbone, heads). Each row
gives the median and p99 in microseconds, the byte bound (weights once + every agent's state
read and written once, at this device's measured copy bandwidth) and the fraction of it achieved.
A correctness check (Triton step vs reference step on the BASE shape) runs first; on a failure
nothing is reported. Imports only torch, triton, numpy and the project's model/kernels modules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from worldssm.atomic import atomic_write_text
from worldssm.errors import WorldssmError

BATCHES = (1, 64, 1024, 16384)


def env_info() -> dict:
    import platform

    import triton

    from worldssm.bench.env import git_sha

    sha = git_sha() or "unknown"  # no git on the machine and no $WORLDSSM_GIT_SHA: say so in the record
    dev = torch.cuda.get_device_properties(0)
    return {
        "git_sha": sha, "device": torch.cuda.get_device_name(0), "sm_count": dev.multi_processor_count,
        "torch": torch.__version__, "triton": triton.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write), 1 GiB."""
    from triton.testing import do_bench

    a = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=25, rep=200, return_mode="median")
    del a, b
    return 2 * 2**30 / (ms * 1e-3)


def time_calls(fn, reps: int, warmup: int = 3) -> dict:
    """Median and p99 (us) of `reps` calls, each timed with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    us = np.array([s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)])
    return {"median_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)), "reps": reps}


def count_kernels(fn) -> int:
    """GPU kernels (and memcpy/memset ops) one eager call of `fn` issues, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception:  # noqa: BLE001 - no CUPTI on this machine: the count is unknown
        return -1


def capture(fn, warmup: int = 3):
    """A CUDA graph of `fn()` after warm-up runs on a side stream; returns (graph, outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def set_kernels(module: torch.nn.Module, impl: str) -> None:
    """Point every config under `module` at kernel path `impl` ("reference" or "triton")."""
    for m in module.modules():
        cfg = getattr(m, "cfg", None)
        if cfg is not None and hasattr(cfg, "kernels"):
            m.cfg = dataclasses.replace(cfg, kernels=impl)


def build_backbone(seed: int = 0):
    from worldssm.model import build_backbone as build
    from worldssm.model import preset

    torch.manual_seed(seed)
    cfg = preset("BASE").backbone
    bb = build(cfg).to("cuda", torch.bfloat16).eval()
    # Random (not zero) states and non-trivial parameters, so nothing is timed on zeros.
    with torch.no_grad():
        for mixer in bb.mixers:
            mixer.D.uniform_(0.5, 1.5)
            mixer.norm_weight.uniform_(0.5, 1.5)
            mixer.conv_bias.normal_(0, 0.1)
    return bb


class arm_path:
    """Within this block the Triton path is the arm's, whatever the environment says: " v1" in
    its name selects the previous path (WORLDSSM_STEP_PATH=v1, no PDL), " split" v1's projections
    around the two-launch step with no row counter (with PDL), " layer" the layer path
    at every batch (with the fused whole world-model step), " mega" the one-launch backbone step
    up to MEGA_MAX_BATCH agents (the layer path above), and a plain "fused" arm the default
    (`kernels/step/layer.py: DEFAULT_STEP_PATH`, what users get); "nopdl" turns programmatic
    dependent launch off (WORLDSSM_PDL=0). Launches and captures inside the block follow it."""

    def __init__(self, arm: str):
        from worldssm.kernels.step.layer import DEFAULT_STEP_PATH

        v1 = " v1" in arm
        named = [p for p in ("v1", "split", "layer", "mega") if f" {p}" in arm]
        path = named[0] if named else DEFAULT_STEP_PATH
        self.env = {"WORLDSSM_STEP_PATH": path, "WORLDSSM_PDL": "0" if v1 or "nopdl" in arm else "1"}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def random_slab(bb, slots_total: int, gen: torch.Generator) -> dict:
    slab = bb.initial_state(slots_total, device="cuda")
    for v in slab.values():
        v.copy_(torch.randn(v.shape, generator=gen, device="cuda").to(v.dtype) * 0.5)
    return slab


def check_correctness(bb, batch: int = 64, steps: int = 3) -> dict:
    """Triton vs reference step on the BASE shape: outputs and states after `steps` steps."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    slab_t = random_slab(bb, batch + 7, gen)
    slab_r = {k: v.clone() for k, v in slab_t.items()}
    slots = torch.randperm(batch + 7, generator=gen, device="cuda")[:batch]
    worst = {"y": 0.0, "state": 0.0}
    with torch.no_grad():
        for i in range(steps):
            x = torch.randn(batch, bb.cfg.d_model, generator=gen, device="cuda").to(torch.bfloat16)
            reset = torch.rand(batch, generator=gen, device="cuda") < 0.2
            set_kernels(bb, "triton")
            y_t = bb.step_slots(slab_t, slots, x, reset)
            set_kernels(bb, "reference")
            y_r = bb.step_slots(slab_r, slots, x, reset)
            worst["y"] = max(worst["y"], _rel(y_t, y_r))
    for k in slab_t:
        worst["state"] = max(worst["state"], _rel(slab_t[k], slab_r[k]))
    # bf16 activations between layers: the paths round differently; 1e-2 relative RMS on y,
    # 3e-3 on the fp32 states (they integrate the bf16 differences of earlier layers).
    ok = worst["y"] < 1e-2 and worst["state"] < 3e-3
    return {"passed": bool(ok), "rel_rms": worst, "batch": batch, "steps": steps}


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    if torch.isnan(a).any():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def byte_bound(bb, batch: int, bandwidth: float) -> dict:
    weights = sum(p.numel() * p.element_size() for p in bb.parameters())
    per_agent = state_bytes_per_agent(bb)
    nbytes = weights + 2 * batch * per_agent
    return {"bytes": int(nbytes), "weight_bytes": int(weights), "state_bytes_per_agent": int(per_agent),
            "bound_us": nbytes / bandwidth * 1e6}


def world_model_byte_bound(wm, batch: int, obs_dim: int, bandwidth: float) -> dict:
    """The whole observe step's floor in bytes: every weight read once, each agent's state read and
    written once, its observation and action read and its predictions (prior log-probabilities,
    reward, continue and its logit, h) written once; `bound_us` at `bandwidth` bytes/s."""
    weights = sum(p.numel() * p.element_size() for p in wm.parameters())
    per_agent = state_bytes_per_agent(wm.backbone)
    io = 4 * obs_dim + 8 + 4 * (wm.cfg.latent_vars * wm.cfg.latent_classes + 3 + wm.cfg.backbone.d_model)
    nbytes = weights + batch * (2 * per_agent + io)
    return {"bytes": int(nbytes), "weight_bytes": int(weights), "bound_us": nbytes / bandwidth * 1e6}


def profile_kernels(fn, top: int = 8) -> list[dict]:
    """The `top` GPU kernels of one call of `fn` by total time (us), from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    try:
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        rows = [(e.key, e.device_time_total, e.count) for e in prof.key_averages()]
    except Exception as exc:  # noqa: BLE001
        return [{"error": str(exc)[:200]}]
    rows = sorted(rows, key=lambda r: -r[1])[:top]
    return [{"kernel": k[:90], "total_us": float(t), "calls": int(c)} for k, t, c in rows]


def skip_mega(arms, batch: int) -> tuple[str, ...]:
    """The arms worth timing at `batch`: a " mega" arm only where the one-launch step serves the
    batch (above MEGA_MAX_BATCH it would time the layer path a second time)."""
    from worldssm.kernels.step.layer import MEGA_MAX_BATCH

    return tuple(a for a in arms if " mega" not in a or batch <= MEGA_MAX_BATCH)


def bench_batch(bb, batch: int, bandwidth: float, arms: tuple[str, ...], reps: int, profile: bool = True) -> list[dict]:
    gen = torch.Generator(device="cuda").manual_seed(batch)
    slab = random_slab(bb, batch + 1, gen)
    slots = torch.randperm(batch + 1, generator=gen, device="cuda")[:batch]
    x = torch.randn(batch, bb.cfg.d_model, generator=gen, device="cuda").to(torch.bfloat16)
    reset = torch.rand(batch, generator=gen, device="cuda") < 0.01
    bound = byte_bound(bb, batch, bandwidth)
    rows = []
    for arm in skip_mega(arms, batch):
        impl = "triton" if arm.startswith("fused") else "reference"
        set_kernels(bb, impl)
        step = bb.step_slots
        if arm == "reference+compile+graph":
            step = torch.compile(bb.step_slots, dynamic=False)
        if arm.startswith("plain"):
            # The baseline users would write: dense batch, no slots (see worldssm.bench.plain_step).
            from worldssm.bench.plain_step import PlainMamba2Step

            plain = PlainMamba2Step(bb)
            dense = plain.initial_state(batch, "cuda", torch.bfloat16)
            for conv, ssm in dense:
                conv.normal_(0, 0.5, generator=gen)
                ssm.normal_(0, 0.5, generator=gen)
            fn = torch.compile(plain.step, dynamic=False) if "compile" in arm else plain.step
            call = lambda: fn(dense, x)  # noqa: E731
        else:
            call = lambda: step(slab, slots, x, reset)  # noqa: E731
        row = {"arm": arm, "batch": batch, **bound}
        try:
            with torch.no_grad(), arm_path(arm):
                if arm != "reference":
                    graph, _ = capture(call)
                    row["gpu_ops_per_step"] = count_kernels(call)
                    if arm.startswith("fused") and profile:
                        row["kernels"] = profile_kernels(call)
                    row.update(time_calls(graph.replay, reps))
                    del graph
                else:
                    row.update(time_calls(call, max(5, reps // 4)))
        except Exception as exc:  # noqa: BLE001 - one arm failing (e.g. compile) is recorded, not fatal
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        if "median_us" in row:
            row["fraction_of_bound"] = row["bound_us"] / row["median_us"]
        rows.append(row)
        if "compile" in arm:
            torch._dynamo.reset()
        torch.cuda.empty_cache()
    del slab
    torch.cuda.empty_cache()
    return rows


WORLD_MODEL_ARMS = ("fused+graph", "fused layer+graph", "fused v1+graph", "fused split+graph", "reference+graph")
OBSERVE_ARMS = ("fused+graph", "fused layer+graph", "fused mega+graph")  # the model's own observe_slots, on the arm's path


def bench_world_model(batch: int, reps: int, arms=WORLD_MODEL_ARMS, backbone: str = "mamba2",
                      context: int | None = None, bandwidth: float | None = None) -> list[dict]:
    """The whole observe step: encoder (fp32) -> bf16 backbone step -> heads (fp32).

    `backbone` swaps Mamba-2 for the GRU or the Transformer-KV baseline at a matched parameter
    count (`preset_for`); `context` sets the Transformer's window (its KV cache is full: every
    slot valid, so each step attends `context` keys). With `bandwidth` (bytes/s) each row also
    gets the step's byte bound (`world_model_byte_bound`) and its fraction.
    """
    from worldssm.model import WorldModel
    from worldssm.model.config import preset_for

    torch.manual_seed(0)
    obs_dim, n_actions = 64, 8
    cfg = preset_for("BASE", backbone)
    if context is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, context=context))
    wm = WorldModel(cfg, {"type": "box", "shape": [obs_dim], "dtype": "float32", "low": -1, "high": 1},
                    {"type": "discrete", "n": n_actions})
    with torch.no_grad():  # what a new model leaves at zero (the reward head's output layer) gets small
        for p in wm.parameters():  # values, or the fused-vs-modules check compares two rewards of ~0
            if not p.any():
                p.normal_(0.0, 0.02)
    wm = wm.to("cuda").eval()
    wm.backbone.to(torch.bfloat16)
    per_agent = state_bytes_per_agent(wm.backbone)
    label = "world_model " if backbone == "mamba2" else f"world_model {backbone}{'' if context is None else f' ctx {context}'} "
    need = fits(wm.backbone, batch)
    if need:
        return [{"arm": label + arm, "batch": batch, "backbone": backbone, "context": context,
                 "state_bytes_per_agent": per_agent, "error": need} for arm in arms]
    gen = torch.Generator(device="cuda").manual_seed(batch + 1)
    slab = random_slab(wm.backbone, batch + 1, gen)
    if "pos" in slab:  # a full window: every KV slot is valid, each step attends `context` keys
        slab["pos"].fill_(wm.backbone.cfg.context * 3)
    slots = torch.randperm(batch + 1, generator=gen, device="cuda")[:batch]
    obs = torch.randn(batch, obs_dim, generator=gen, device="cuda")
    action = torch.randint(0, n_actions, (batch,), generator=gen, device="cuda")
    reset = torch.rand(batch, generator=gen, device="cuda") < (0.01 if backbone != "transformer" else 0.0)

    rows = []
    for arm in skip_mega(arms, batch):
        set_kernels(wm, "triton" if arm.startswith("fused") else "reference")
        def modules():
            # The module path over the backbone of this arm (`observe_modules`, the serving products).
            return wm.observe_modules(slab, slots, obs, action, reset)

        # OBSERVE_ARMS run the model's own observe_slots: on the layer path the whole step in
        # fused launches (worldssm.model.fused), else the module path with the default backbone.
        step = (lambda: wm.observe_slots(slab, slots, obs, action, reset)) if arm in OBSERVE_ARMS else modules

        row = {"arm": label + arm, "batch": batch, "backbone": backbone, "context": context,
               "state_bytes_per_agent": per_agent}
        try:
            if arm in OBSERVE_ARMS and backbone == "mamba2":
                from worldssm.model.fused import why_not_fused

                with arm_path(arm):
                    row["whole_step_fused"] = why_not_fused(wm, False, batch) or True
                    row["rel_rms_vs_modules"] = fused_vs_modules(step, modules, slab, slots)
            with torch.no_grad(), arm_path(arm):
                graph, _ = capture(step)
                row.update(time_calls(graph.replay, reps))
                del graph
            row["agent_steps_per_s"] = batch / (row["median_us"] * 1e-6)
            if bandwidth is not None:
                bound = world_model_byte_bound(wm, batch, obs_dim, bandwidth)
                row.update(bound_us=bound["bound_us"], bytes=bound["bytes"],
                           fraction_of_bound=bound["bound_us"] / row["median_us"])
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
        torch.cuda.empty_cache()
    del slab
    torch.cuda.empty_cache()
    return rows


def fused_vs_modules(fused_step, module_step, slab, slots) -> dict:
    """Relative RMS difference of each prediction between the fused whole step and the module
    path over the same backbone kernels, each from a copy of the same state rows."""
    saved = {k: v[slots].clone() for k, v in slab.items()}
    out = {}
    with torch.no_grad():
        a = fused_step()
        for k, v in slab.items():
            v[slots] = saved[k]
        b = module_step()
        for k, v in slab.items():
            v[slots] = saved[k]
    for name in ("prior_logp", "reward", "cont", "h", "cont_logit"):
        out[name] = _rel(getattr(a, name).float(), getattr(b, name).float())
    return out


def state_bytes_per_agent(bb) -> int:
    return int(sum(int(np.prod(shape)) * torch.empty((), dtype=dt).element_size()
                   for shape, dt in bb.state_spec().values()))


def fits(bb, batch: int) -> str | None:
    """None when a step of `batch` agents fits the free GPU memory, else why not (bytes needed).

    Counted: the slab, plus for the Transformer the per-layer window it gathers (fp32 rows and
    two bf16 copies, see `TransformerBackbone.step_slots`).
    """
    per = state_bytes_per_agent(bb)
    need = (batch + 1) * per
    if getattr(bb.cfg, "kind", "") == "transformer":
        c = bb.cfg
        need += batch * c.context * c.n_heads * c.head_dim * (4 + 2 + 2) * 2
    free, _ = torch.cuda.mem_get_info()
    if need > 0.85 * free:
        return f"does not fit: needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    return None


BACKBONE_ROWS = (("gru", None), ("transformer", 256), ("transformer", 4096), ("transformer", 16384))


def bench_backbones(batches, reps: int) -> list[dict]:
    """The whole world-model step with the GRU and the Transformer-KV baselines (reference
    PyTorch under a CUDA graph), at the same batch sizes as the Mamba-2 rows."""
    rows = []
    for b in batches:
        for backbone, context in BACKBONE_ROWS:
            rows += bench_world_model(b, reps if b < 4096 else max(20, reps // 8), ("reference+graph",),
                                      backbone, context)
            print({k: v for k, v in rows[-1].items() if k != "error"} | {"error": rows[-1].get("error", "")[:80]},
                  flush=True)
    return rows


def backbone_ratios(rows: list[dict]) -> list[dict]:
    """Mamba-2 (fused) agent-steps/s over each baseline's, per batch; the state bytes each reads
    and writes per agent and step give the floor of that ratio (both bound by memory traffic)."""
    out = []
    for r in rows:
        if r.get("backbone") in (None, "mamba2") or "median_us" not in r:
            continue
        m = next((x for x in rows if x["batch"] == r["batch"] and x["arm"] == "world_model fused+graph"
                  and "median_us" in x), None)
        if m is None:
            continue
        out.append({"batch": r["batch"], "baseline": r["arm"], "mamba2_us": m["median_us"], "baseline_us": r["median_us"],
                    "throughput_ratio": r["median_us"] / m["median_us"],
                    "state_bytes_ratio": r["state_bytes_per_agent"] / m["state_bytes_per_agent"]})
    return out


def kernel_only(bandwidth: float, batch: int = 16384) -> list[dict]:
    """The step kernel alone (one layer, BASE shape) under a graph: achieved bandwidth by state dtype.

    Launch variants (heads per program, warps, streaming) are tests/bench/tune_step.py's job.
    """
    from triton.testing import do_bench_cudagraph

    from worldssm.kernels.step.layer import ssm_step_triton
    from worldssm.kernels.step.split import mamba2_step_split
    from worldssm.kernels.step.triton import mamba2_step_triton

    h, p, n, k = 8, 64, 64, 4
    cd = h * p + 2 * n
    gen = torch.Generator(device="cuda").manual_seed(3)
    kw = dict(conv_weight=torch.randn(cd, k, generator=gen, device="cuda").to(torch.bfloat16),
              conv_bias=torch.randn(cd, generator=gen, device="cuda").to(torch.bfloat16),
              dt_bias=torch.randn(h, generator=gen, device="cuda") - 1, A=-torch.rand(h, generator=gen, device="cuda"),
              D=torch.randn(h, generator=gen, device="cuda"),
              norm_weight=torch.rand(h * p, generator=gen, device="cuda").to(torch.bfloat16),
              n_heads=h, head_dim=p, d_state=n)
    zx = torch.randn(batch, 2 * h * p + 2 * n + h, generator=gen, device="cuda").to(torch.bfloat16)
    slots = torch.randperm(batch, generator=gen, device="cuda")
    reset = torch.zeros(batch, dtype=torch.bool, device="cuda")
    conv = torch.randn(batch, k - 1, cd, generator=gen, device="cuda")
    rows = []
    for sdt in (torch.float32, torch.bfloat16):
        ssm = torch.randn(batch, h, p, n, generator=gen, device="cuda").to(sdt)
        nbytes = 2 * (ssm.numel() * ssm.element_size() + conv.numel() * 4) + zx.numel() * 2 + batch * h * p * 2
        for name, fn in (("conv+state (v1, mamba2_step_triton)", mamba2_step_triton),
                         ("conv+state in two launches (split, mamba2_step_split)", mamba2_step_split)):
            ms = do_bench_cudagraph(lambda: fn(zx, conv, ssm, slots, reset, **kw), rep=200)
            rows.append({"kernel": name, "state": str(sdt).replace("torch.", ""),
                         "batch": batch, "us": ms * 1e3, "bytes": nbytes,
                         "TBps": nbytes / (ms * 1e-3) / 1e12, "fraction_of_copy": nbytes / (ms * 1e-3) / bandwidth})
        # The state pass of the layer path: no conv (the in-projection kernel does it), no counter.
        act = torch.randn(batch, 2 * h * p + 2 * n + h, generator=gen, device="cuda")
        act[:, -h:] = act[:, -h:].abs() * 0.1
        reset_u8 = reset.view(torch.uint8)
        nbytes = 2 * ssm.numel() * ssm.element_size() + act.numel() * 4 + batch * h * p * 2
        ms = do_bench_cudagraph(lambda: ssm_step_triton(act, ssm, slots, reset_u8, kw["A"], kw["D"], kw["norm_weight"],
                                                        h, p, n, 1e-5, torch.bfloat16), rep=200)
        rows.append({"kernel": "state (layer path, ssm_step_triton)", "state": str(sdt).replace("torch.", ""),
                     "batch": batch, "us": ms * 1e3, "bytes": nbytes,
                     "TBps": nbytes / (ms * 1e-3) / 1e12, "fraction_of_copy": nbytes / (ms * 1e-3) / bandwidth})
        del ssm, act
    del conv
    torch.cuda.empty_cache()
    return rows


def auto_rule() -> str:
    """What WORLDSSM_STEP_PATH=auto runs by batch, in words, as the report's tables print it."""
    from worldssm.kernels.step.layer import LAYER_MAX_BATCH

    return f"the layer path up to {LAYER_MAX_BATCH:,} agents, split above"


def run(out_dir=None, batches=BATCHES, reps: int = 200, compile_arm: bool = True, world_model: bool = True,
        backbones: bool = False, mega: bool = False) -> dict:
    """Run the step benchmark; write `step-<device>.json` under `out_dir` (if given) and return it.
    `mega` adds the one-launch backbone step (" mega" arms, checked against the reference first).

    Raises:
        WorldssmError: no CUDA device, or the correctness check failed (nothing is reported then).
    """
    from worldssm.kernels import serving_tf32

    if not torch.cuda.is_available():
        raise WorldssmError("bench step needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # the references' products; the model's own: `tf32_matmuls`
    bb = build_backbone()
    check = {}
    # Every Triton path against the reference (the one-launch step at a batch it serves: 13 agents
    # leave its last row group part-full).
    checks = (("fused layer+graph", 64),) + ((("fused mega+graph", 13),) if mega else ()) + (
        ("fused v1+graph", 64), ("fused split+graph", 64))
    for arm, batch in checks:
        with arm_path(arm):
            check[arm.split("+")[0]] = check_correctness(bb, batch)
    check["passed"] = all(c["passed"] for c in check.values())
    if not check["passed"]:
        raise WorldssmError(f"correctness check failed, refusing to report: {check}")
    bandwidth = copy_bandwidth()
    kernel_rows = kernel_only(bandwidth)
    for r in kernel_rows:
        print(r, flush=True)
    arms = ("fused+graph", "fused layer+graph", "fused layer nopdl+graph") + (("fused mega+graph",) if mega else ()) + (
        "fused v1+graph", "fused split+graph", "reference", "reference+graph", "plain+graph") + (
        ("reference+compile+graph", "plain+compile+graph") if compile_arm else ())
    wm_arms = WORLD_MODEL_ARMS + (("fused mega+graph",) if mega else ())
    rows = []
    for b in batches:
        rows += bench_batch(bb, b, bandwidth, arms, reps if b < 4096 else max(20, reps // 8))
        if world_model:
            rows += bench_world_model(b, reps if b < 4096 else max(20, reps // 8), arms=wm_arms, bandwidth=bandwidth)
        print(format_table({"rows": [r for r in rows if r["batch"] == b]}), flush=True)
    for r in rows:
        if r["arm"].startswith("fused") and "median_us" in r:
            ref = next((x for x in rows if x["batch"] == r["batch"] and x["arm"] == "reference+compile+graph"
                        and "median_us" in x), None)
            if ref is not None:
                r["speedup_vs_compile_graph"] = ref["median_us"] / r["median_us"]
            plain = next((x for x in rows if x["batch"] == r["batch"] and x["arm"] == "plain+compile+graph"
                          and "median_us" in x), None)
            if plain is not None:
                r["speedup_vs_plain_compile_graph"] = plain["median_us"] / r["median_us"]
    ratios = []
    if backbones and world_model:
        rows += bench_backbones(batches, reps)
        ratios = backbone_ratios(rows)
        for r in ratios:
            print(r, flush=True)
    result = {
        "benchmark": "step", "env": env_info(), "correctness": check, "copy_bandwidth_Bps": bandwidth,
        "auto_rule": auto_rule(), "serving_tf32": serving_tf32(),
        "backbone_ratios": ratios,
        "shape": {"preset": "BASE", "d_model": 256, "n_layers": 4, "H": 8, "P": 64, "N": 64, "K": 4,
                  "weights": "bfloat16", "ssm_state": "float32", "conv_state": "bfloat16",
                  "slots": "random permutation of B+1 slots", "reset_fraction": 0.01},
        "rows": rows, "step_kernel_alone": kernel_rows,
    }
    if out_dir is not None:
        write(result, out_dir)
    return result


def write(result: dict, out_dir) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in result["env"]["device"].lower()).strip("-")
    path = out / f"{result['benchmark']}-{slug}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return path


def format_table(result: dict) -> str:
    """A markdown table of the rows: median, p99, byte bound, fraction, speedup."""
    lines = ["| arm | B | median us | p99 us | byte bound us | fraction of bound | vs compile+graph | GPU ops |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "median_us" not in r:
            lines.append(f"| {r['arm']} | {r['batch']} | error: {r.get('error', '?')[:60]} | | | | | |")
            continue
        bound = f"{r['bound_us']:.1f}" if "bound_us" in r else ""
        frac = f"{r['fraction_of_bound']:.2f}" if "fraction_of_bound" in r else ""
        sp = f"{r['speedup_vs_compile_graph']:.1f}x" if "speedup_vs_compile_graph" in r else ""
        ops = r.get("gpu_ops_per_step", "")
        lines.append(f"| {r['arm']} | {r['batch']} | {r['median_us']:.1f} | {r['p99_us']:.1f} | {bound} | {frac} | {sp} | {ops} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """`python -m worldssm.bench.step ARGS` is `worldssm bench step ARGS` (one parser)."""
    from worldssm.cli import main as cli

    return cli(["bench", "step", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
