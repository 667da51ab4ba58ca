"""Step-kernel tuning on a GPU: check each launch variant against the reference, then time it alone.

Usage (repository root, CUDA machine, after `pip install -e .`):
python3 tests/bench/tune_step.py [--out DIR] [--quick]. A script, not a test: pytest does not
collect it. An "old" row is timed when tests/bench/_old_triton.py exists (e.g. `git show
a577860:kernels/step/triton.py > tests/bench/_old_triton.py`, the kernel before this tuning; not
committed). A variant is a state dtype and the explicit launch arguments of
`worldssm.kernels.step.triton._launch` (heads per program, warps, evict-first state traffic,
ptxas register cap). Timing: CUDA-graph replay medians (triton.testing.do_bench_cudagraph) at
B=16384, 1024, 256 and 64, slots a random permutation of B+1, no resets. GB/s counts the bytes
the kernel must move (state and conv state read + written, zxbcdt read, y written), as bench
step's kernel rows do. Writes tune.json under --out and prints a table last; the H200 rounds are
tests/bench/results/step-tune-h200-round{1,2,3}.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench, do_bench_cudagraph

import worldssm.kernels.step.triton as st
from worldssm.kernels.step.ref import mamba2_step_ref

H, P, N, K = 8, 64, 64, 4
CD = H * P + 2 * N
F32, BF16 = torch.float32, torch.bfloat16

# (state dtype, launch arguments of worldssm.kernels.step.triton._launch). What the H200 rounds
# measured (B=16384 us; JSON in tests/bench/results/step-tune-h200-round*.json):
# Round 1: fp32 hb=1 w=4 best (1360); more heads per program or other warp counts slower (hb=2
# 1455; hb=4 1394 and hb=8 w=8 1386, both spilling; w=8 1391, w=2 1658); evict-first state 1420
# (but 82.5 against 89.4 us at B=1024). bf16 best hb=4 w=4 (810 against 878 for hb=1). Counter
# modes, since removed from the kernel, fp32 hb=1: bump after the stores 1356, relaxed bump 1290,
# no counter at all 1227 (racy: the B/C shift may land before a sibling reads; timing only).
# Round 2 (release bump + acquire exchange, since removed: 1357, as acq_rel): maxnreg 96 1337
# (2 spills; 87.1 against 89.1 us at B=1024), 80 and 64 spill more (1576, 2198). Round 3: one
# program per row walking its heads (no counter) was slower (2% at B=16384, 2x at B=64) and has
# been removed; see the kernel's README.md.
VARIANTS = [
    (F32, dict(heads_per_program=1, num_warps=4)),
    (BF16, dict(heads_per_program=2, num_warps=4)),
    (BF16, dict(heads_per_program=4, num_warps=4)),
]
SHORT = dict(heads_per_program="hb", num_warps="w", stream_state="stream", max_regs="maxr")


def params(gen):
    return dict(conv_weight=torch.randn(CD, K, generator=gen, device="cuda").to(BF16),
                conv_bias=torch.randn(CD, generator=gen, device="cuda").to(BF16),
                dt_bias=torch.randn(H, generator=gen, device="cuda") - 1,
                A=-torch.rand(H, generator=gen, device="cuda"),
                D=torch.randn(H, generator=gen, device="cuda"),
                norm_weight=torch.rand(H * P, generator=gen, device="cuda").to(BF16),
                n_heads=H, head_dim=P, d_state=N)


def problem(batch, sdt, seed, reset_frac=0.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    kw = params(gen)
    zx = torch.randn(batch, 2 * H * P + 2 * N + H, generator=gen, device="cuda").to(BF16)
    slots = torch.randperm(batch + 1, generator=gen, device="cuda")[:batch]
    reset = torch.rand(batch, generator=gen, device="cuda") < reset_frac
    conv = torch.randn(batch + 1, K - 1, CD, generator=gen, device="cuda")
    ssm = torch.randn(batch + 1, H, P, N, generator=gen, device="cuda").to(sdt)
    return zx, conv, ssm, slots, reset, kw


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check(fn, sdt, seed):
    """Relative errors of y, conv and ssm state against the float64 reference (two steps, 2% resets)."""
    zx, conv, ssm, slots, reset, kw = problem(512, sdt, seed, 0.02)
    ssm[slots[reset]] = float("nan")
    conv[slots[reset]] = float("nan")
    kw64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}
    conv_r, ssm_r = conv.double(), (ssm.double() if sdt == F32 else ssm.clone())
    errs = {}
    for _ in range(2):
        y_r = mamba2_step_ref(zx.double(), conv_r, ssm_r, slots, reset, **kw64)
        y = fn(zx, conv, ssm, slots, reset, **kw)
        torch.cuda.synchronize()
        reset = torch.zeros_like(reset)
    bad = [t for t in (y, conv, ssm) if not torch.isfinite(t).all()]
    errs = dict(y=rel(y, y_r), conv=rel(conv, conv_r), ssm=rel(ssm.float(), ssm_r.float()), nan=bool(bad))
    tol = 1e-5 if sdt == F32 else 1e-2
    ok = not bad and errs["y"] < max(tol, 1e-2) and errs["ssm"] < tol and errs["conv"] < 1e-6
    return ok, errs


def time_kernel(fn, batch, sdt):
    zx, conv, ssm, slots, reset, kw = problem(batch, sdt, 1)
    nbytes = batch * (2 * (H * P * N * ssm.element_size() + (K - 1) * CD * 4) + zx.shape[1] * 2 + H * P * 2)
    fn(zx, conv, ssm, slots, reset, **kw)
    torch.cuda.synchronize()
    ms = do_bench_cudagraph(lambda: fn(zx, conv, ssm, slots, reset, **kw), rep=150, return_mode="median")
    del zx, conv, ssm
    return ms * 1e3, nbytes / (ms * 1e-3)


@triton.jit
def _ssu(state, x, dt, dt_bias, A, Bm, Cm, Dp, out, sx, sB, sdt,
         H: tl.constexpr, P: tl.constexpr, N: tl.constexpr):
    # Appendix A's simple SSU (notes/mamba-kernels.md): one program per (batch, head), contiguous state.
    b = tl.program_id(0).to(tl.int64); h = tl.program_id(1)
    om = tl.arange(0, P); on = tl.arange(0, N)
    sp = state + ((b * H + h) * P + om[:, None]) * N + on[None, :]
    s = tl.load(sp).to(tl.float32)
    xv = tl.load(x + b * sx + h * P + om).to(tl.float32)
    d = tl.load(dt + b * sdt + h).to(tl.float32) + tl.load(dt_bias + h)
    d = tl.where(d <= 20.0, tl.log(1.0 + tl.exp(d)), d)
    dA = tl.exp(tl.load(A + h) * d)
    bv = tl.load(Bm + b * sB + on).to(tl.float32)
    cv = tl.load(Cm + b * sB + on).to(tl.float32)
    s = s * dA + (bv[None, :] * d) * xv[:, None]
    tl.store(sp, s.to(state.dtype.element_ty))
    y = tl.sum(s * cv[None, :], axis=1) + xv * tl.load(Dp + h)
    tl.store(out + (b * H + h) * P + om, y.to(out.dtype.element_ty))


def ssu_ceiling(batch, sdt):
    st_ = torch.randn(batch, H, P, N, device="cuda").to(sdt)
    x = torch.randn(batch, H * P, device="cuda", dtype=BF16); out = torch.empty_like(x)
    dt = torch.randn(batch, H, device="cuda", dtype=BF16)
    bm = torch.randn(batch, N, device="cuda", dtype=BF16); cm = torch.randn_like(bm)
    dtb = torch.rand(H, device="cuda") - 4; a = -torch.rand(H, device="cuda") - 1; dp = torch.randn(H, device="cuda")
    f = lambda: _ssu[(batch, H)](st_, x, dt, dtb, a, bm, cm, dp, out, H * P, N, H, H, P, N, num_warps=4)  # noqa: E731
    f()
    ms = do_bench_cudagraph(f, rep=150, return_mode="median")
    nbytes = 2 * st_.numel() * st_.element_size() + 2 * x.numel() * 2 + 2 * bm.numel() * 2 + dt.numel() * 2
    return ms * 1e3, nbytes / (ms * 1e-3)


def variant(args):
    """A step function launching with `args`, and the dict where it leaves the compiled kernel."""
    compiled = {}

    def fn(zx, conv, ssm, slots, reset, n_heads, head_dim, d_state, **weights):
        y, compiled["kernel"] = st._launch(zx, conv, ssm, slots, reset, **weights, h=n_heads, p=head_dim,
                                           n=d_state, eps=1e-5, **args)
        return y

    return fn, compiled


def load_old():
    path = Path(__file__).with_name("_old_triton.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_old_step_triton", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.mamba2_step_triton


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="B=16384 only")
    a = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    buf = torch.empty(2 ** 31, dtype=torch.uint8, device="cuda"); buf2 = torch.empty_like(buf)
    copy = 2 * buf.numel() / (do_bench(lambda: buf2.copy_(buf), rep=100, return_mode="median") * 1e-3)
    del buf, buf2
    torch.cuda.empty_cache()
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__} "
          f"copy {copy / 1e12:.2f} TB/s", flush=True)
    batches = (16384,) if a.quick else (16384, 1024, 256, 64)
    rows = []
    for sdt in (F32, BF16):
        for b in batches[:2]:
            us, bw = ssu_ceiling(b, sdt)
            rows.append(dict(name=f"appendixA-ssu {str(sdt)[6:]}", batch=b, us=us, TBps=bw / 1e12, frac=bw / copy))
    old = load_old()
    cases = [(f"old {str(F32)[6:]}", F32, old, None)] if old else []
    for sdt, args in VARIANTS:
        label = f"{str(sdt)[6:]} head " + " ".join(f"{SHORT[k]}={x}" for k, x in args.items())
        cases.append((label, sdt, *variant(args)))
    for label, sdt, fn, compiled in cases:
        try:
            ok, errs = check(fn, sdt, seed=5)
            kk = compiled["kernel"] if compiled else None
            regs = f"{getattr(kk, 'n_regs', '?')}r/{getattr(kk, 'n_spills', '?')}s" if kk is not None else ""
            for b in batches:
                us, bw = time_kernel(fn, b, sdt)
                rows.append(dict(name=label, batch=b, us=us, TBps=bw / 1e12, frac=bw / copy, ok=ok,
                                 errs=errs, regs=regs))
                print(rows[-1], flush=True)
        except Exception as exc:  # noqa: BLE001
            rows.append(dict(name=label, batch=0, us=float("nan"), TBps=0, frac=0, ok=False,
                             errs=f"{type(exc).__name__}: {exc}"[:300], regs=""))
            print("ERROR", label, f"{type(exc).__name__}: {exc}"[:1500], flush=True)
        torch.cuda.empty_cache()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "tune.json").write_text(json.dumps(dict(copy_Bps=copy, rows=rows), indent=1, default=str))
    print("\n| variant | B | us | TB/s | of copy | ok | regs |")
    for r in rows:
        print(f"| {r['name']} | {r['batch']} | {r['us']:.1f} | {r['TBps']:.2f} | {r['frac']:.2f} | "
              f"{'ok' if r.get('ok', True) else 'FAIL'} | {r.get('regs', '')} |")


if __name__ == "__main__":
    main()
