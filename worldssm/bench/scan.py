"""`worldssm bench scan`: SSD scan forward+backward tokens/s, Triton vs the PyTorch references.

Shapes: H=8, P=64, N=64 (the BASE backbone), x/B/C in bfloat16 (a bf16 model's activations),
dt and the initial state in float32, 1% resets. Arms: the Triton chunked scan (float32 products,
and the tf32 option), the chunked PyTorch reference and the sequential reference. A gradient
check against the chunked reference runs first; on a failure nothing is reported. Imports only
torch, triton, numpy and the project's kernels.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from worldssm.errors import WorldssmError

SHAPES = ((64, 256), (8, 4096))
H, P, N = 8, 64, 64


def make_inputs(b: int, t: int, seed: int = 0, reset_p: float = 0.01):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    bf = torch.bfloat16

    def rnd(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, device="cuda").to(dtype)

    x = rnd(b, t, H, P, dtype=bf)
    dt = torch.nn.functional.softplus(rnd(b, t, H) - 2.0)
    A = -torch.rand(H, generator=gen, device="cuda") * 4 - 0.5
    B, C = rnd(b, t, N, dtype=bf), rnd(b, t, N, dtype=bf)
    D = rnd(H)
    resets = torch.rand(b, t, generator=gen, device="cuda") < reset_p
    init = rnd(b, H, P, N) * 0.1
    return [x, dt, A, B, C, D, resets, init]


def fwd_bwd(scan, args, weights):
    leaves = [a.detach().requires_grad_(True) if a.is_floating_point() else a for a in args]
    y, s = scan(*leaves)
    loss = (y.float() * weights[0]).sum() + (s * weights[1]).sum()
    grads = torch.autograd.grad(loss, [a for a in leaves if a.requires_grad])
    return y, s, grads


def check_correctness(b: int = 4, t: int = 300) -> dict:
    from worldssm.kernels.scan.ref import ssd_scan_chunked
    from worldssm.kernels.scan.triton import ssd_scan_triton

    args = make_inputs(b, t, seed=1, reset_p=0.02)
    w = (torch.randn(b, t, H, P, device="cuda"), torch.randn(b, H, P, N, device="cuda"))
    y1, s1, g1 = fwd_bwd(ssd_scan_chunked, args, w)
    y2, s2, g2 = fwd_bwd(ssd_scan_triton, args, w)
    errs = {"y": _rel(y2, y1), "final_state": _rel(s2, s1)}
    errs.update({f"d{n}": _rel(b2, b1) for n, b1, b2 in zip(["x", "dt", "A", "B", "C", "D", "init"], g1, g2)})
    # y is bf16 (rounding 4e-3); gradients come back in the inputs' dtypes (bf16 for x, B, C).
    ok = all(np.isfinite(v) for v in errs.values()) and errs["final_state"] < 1e-4 and max(errs.values()) < 1e-2
    return {"passed": bool(ok), "rel_rms": errs, "shape": [b, t, H, P, N]}


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def time_fwd_bwd(scan, args, reps: int) -> dict:
    w = (torch.randn(*args[0].shape, device="cuda"), torch.randn(*args[-1].shape, device="cuda"))
    fwd_bwd(scan, args, w)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for s, e in zip(starts, ends):
        s.record()
        fwd_bwd(scan, args, w)
        e.record()
    torch.cuda.synchronize()
    ms = np.array([s.elapsed_time(e) for s, e in zip(starts, ends)])
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "reps": reps}


def run(out_dir=None, shapes=SHAPES, reps: int = 20, sequential: bool = True) -> dict:
    """Run the scan benchmark; write `scan-<device>.json` under `out_dir` (if given) and return it.

    Raises:
        WorldssmError: no CUDA device, or the correctness check failed (nothing is reported then).
    """
    import functools

    from worldssm.bench.step import env_info, write
    from worldssm.kernels.scan.ref import ssd_scan_chunked, ssd_scan_sequential
    from worldssm.kernels.scan.triton import ssd_scan_triton

    if not torch.cuda.is_available():
        raise WorldssmError("bench scan needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    check = check_correctness()
    if not check["passed"]:
        raise WorldssmError(f"correctness check failed, refusing to report: {check}")
    arms = {
        "triton (fp32 products, chunk 32: default)": ssd_scan_triton,
        "triton (fp32 products, chunk 16)": functools.partial(ssd_scan_triton, chunk_size=16),
        "triton (tf32 products, chunk 32)": functools.partial(ssd_scan_triton, precision="tf32"),
        "triton (tf32 products, chunk 64)": functools.partial(ssd_scan_triton, chunk_size=64, precision="tf32"),
        "reference chunked (PyTorch, chunk 64)": ssd_scan_chunked,
    }
    if sequential:
        arms["reference sequential (PyTorch loop)"] = ssd_scan_sequential
    rows = []
    for b, t in shapes:
        args = make_inputs(b, t)
        for name, fn in arms.items():
            n = reps if "sequential" not in name else max(2, reps // 10)
            row = {"arm": name, "batch": b, "T": t}
            try:
                row.update(time_fwd_bwd(fn, args, n))
                row["tokens_per_s"] = b * t / (row["median_ms"] * 1e-3)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory in a reference: recorded
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            rows.append(row)
            torch.cuda.empty_cache()
        seq = next((r for r in rows if r["batch"] == b and r["T"] == t and "sequential" in r["arm"]
                    and "median_ms" in r), None)
        for r in rows:
            if r["batch"] == b and r["T"] == t and seq is not None and "median_ms" in r:
                r["speedup_vs_sequential"] = seq["median_ms"] / r["median_ms"]
        print(format_table({"rows": [r for r in rows if r["batch"] == b and r["T"] == t]}), flush=True)
    result = {
        "benchmark": "scan", "env": env_info(), "correctness": check,
        "shape": {"H": H, "P": P, "N": N, "x_B_C": "bfloat16", "dt_init": "float32", "reset_fraction": 0.01,
                  "measure": "forward + backward (all inputs' gradients), CUDA events"},
        "rows": rows,
    }
    if out_dir is not None:
        write(result, out_dir)
    return result


def format_table(result: dict) -> str:
    lines = ["| arm | B | T | fwd+bwd median ms | p99 ms | tokens/s | vs sequential |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "median_ms" not in r:
            lines.append(f"| {r['arm']} | {r['batch']} | {r['T']} | error: {r.get('error', '?')[:60]} | | | |")
            continue
        sp = f"{r['speedup_vs_sequential']:.1f}x" if "speedup_vs_sequential" in r else ""
        lines.append(f"| {r['arm']} | {r['batch']} | {r['T']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['tokens_per_s'] / 1e6:.2f} M | {sp} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m worldssm.bench.scan", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-sequential", action="store_true", help="skip the (slow) sequential reference")
    a = p.parse_args(argv)
    result = run(a.out, SHAPES, a.reps, not a.no_sequential)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
