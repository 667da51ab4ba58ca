"""worldssm quickstart: collect, train and evaluate a world model on a real Gymnasium env (CPU)."""

from __future__ import annotations

HELP = "collect Pendulum-v1 rollouts, train a SMALL Mamba-2 world model on the CPU, evaluate it"


def configure(parser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="directory for data, run and report")
    parser.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id to learn")
    parser.add_argument("--agents", type=int, default=8, help="env copies collected side by side")
    parser.add_argument("--env-steps", type=int, default=2500, help="steps collected per agent")
    parser.add_argument("--preset", default="SMALL", help="model preset")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of collection, training and evaluation")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import json
    import shutil
    import time
    from pathlib import Path

    from worldssm.data import collect
    from worldssm.train import TrainConfig, Trainer
    from worldssm.atomic import atomic_write_text
    from worldssm.train.evaluate import evaluate, summary_table

    out = Path(args.out)
    data, run_dir, eval_dir = out / "data", out / "run", out / "eval"
    t0 = time.perf_counter()
    if data.exists():
        shutil.rmtree(data)
    print(f"[1/3] collecting {args.agents} x {args.env_steps} steps of {args.env} (random policy)")
    if args.no_progress:
        summary = collect(args.env, args.agents, args.env_steps, data, seed=args.seed)
    else:
        from tqdm import tqdm

        with tqdm(total=args.env_steps, desc="collect", unit="tick", dynamic_ncols=True) as bar:
            summary = collect(args.env, args.agents, args.env_steps, data, seed=args.seed, progress=bar.update)
    print(f"      {summary['steps']} steps, {summary['episodes']} episodes -> {data}")
    t1 = time.perf_counter()
    print(f"[2/3] training the {args.preset} preset for {args.steps} steps")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = TrainConfig(preset=args.preset, steps=args.steps, seed=args.seed, device=args.device,
                      log_every=max(1, args.steps // 20), checkpoint_every=max(1, args.steps // 4))
    trainer = Trainer(data, run_dir, cfg)
    trainer.run(progress=not args.no_progress)
    t2 = time.perf_counter()
    print(f"[3/3] open-loop evaluation on held-out episodes -> {eval_dir}")
    result = evaluate(run_dir, data, eval_dir, seed=args.seed)
    t3 = time.perf_counter()
    m, rep, mean = (result["obs_nmse"][k] for k in ("model", "repeat_last", "mean"))
    beats = all(a is None or (a < b and a < c) for a, b, c in zip(m, rep, mean))
    headline = {
        "env": args.env, "seed": args.seed, "preset": args.preset, "train_steps": args.steps,
        "h1_model": m[0], "h1_repeat_last": rep[0], "h1_ratio_repeat_over_model": rep[0] / m[0],
        "beats_both_naive_at_every_horizon": beats,
        "seconds": {"collect": t1 - t0, "train": t2 - t1, "eval": t3 - t2, "total": t3 - t0},
    }
    table = summary_table(result)
    report = (
        f"# worldssm quickstart report\n\n{args.env}, {summary['episodes']} episodes, preset {args.preset}, "
        f"{args.steps} training steps, seed {args.seed}.\n\nNormalised open-loop observation MSE "
        f"(context {result['context']}, held-out episodes, {result['windows']} windows):\n\n```\n{table}\n```\n\n"
        f"Horizon 1: model {m[0]:.4g} vs repeat-last {rep[0]:.4g} ({rep[0] / m[0]:.1f}x lower). "
        f"Lower than both naive predictors at every horizon: {beats}.\n\n"
        f"Time: collect {t1 - t0:.0f} s, train {t2 - t1:.0f} s, eval {t3 - t2:.0f} s.\n\n"
        f"Files: eval.json, openloop.png (this folder); checkpoints in {run_dir}.\n"
    )
    atomic_write_text(eval_dir / "report.md", report)
    atomic_write_text(eval_dir / "headline.json", json.dumps(headline, indent=1))
    print(table)
    print(f"horizon 1: model {m[0]:.4g}, repeat-last {rep[0]:.4g} ({rep[0] / m[0]:.1f}x lower); "
          f"beats both naive predictors at every horizon: {beats}")
    print(f"report: {eval_dir / 'report.md'} (plot: {eval_dir / 'openloop.png'}); total {t3 - t0:.0f} s")
    return 0
