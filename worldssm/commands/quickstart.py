"""worldssm quickstart: collect, train and evaluate a world model on a real Gymnasium env (CPU)."""

from __future__ import annotations

from dataclasses import dataclass

HELP = "collect Pendulum-v1 rollouts, train a SMALL Mamba-2 world model on the CPU, evaluate it"

# TrainConfig's own flags that quickstart offers (with a longer default run), so none is restated.
TRAIN_FLAGS = ("preset", "steps", "device")
TRAIN_DEFAULTS = {"steps": 3000}


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart collects (the training knobs are TrainConfig's)."""

    env: str = "Pendulum-v1"  # Gymnasium env id to learn
    agents: int = 8  # env copies collected side by side
    env_steps: int = 2500  # steps collected per agent
    seed: int = 0  # seed of collection, training and evaluation

    def __post_init__(self):
        # Imported here so that importing the command module for the CLI stays light.
        from worldssm.train.config import check_seed

        for name in ("agents", "env_steps"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"QuickstartConfig.{name} must be >= 1, got {getattr(self, name)}")
        check_seed("QuickstartConfig", self.seed)


def configure(parser) -> None:
    import dataclasses

    from worldssm.commands.flags import add_config_flags
    from worldssm.train.config import TrainConfig

    parser.add_argument("--out", default="runs/quickstart", help="directory for data, run and report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(parser, QuickstartConfig)
    others = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in TRAIN_FLAGS]
    add_config_flags(parser, TrainConfig, exclude=others, defaults=TRAIN_DEFAULTS)


def run(args) -> int:
    import json
    import shutil
    import time
    from pathlib import Path

    from worldssm.commands.flags import config_from_args
    from worldssm.data import collect
    from worldssm.atomic import atomic_write_text
    from worldssm.errors import WorldssmError
    from worldssm.train import TrainConfig, Trainer
    from worldssm.train.evaluate import EvalConfig, evaluate, summary_table
    from worldssm.train.trainer import pick_device

    qs = config_from_args(QuickstartConfig, args)
    cfg = config_from_args(TrainConfig, args, seed=qs.seed, log_every=max(1, args.steps // 20),
                           checkpoint_every=max(1, args.steps // 4))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise WorldssmError(f"{out} exists and is not a directory: --out must name a directory")
    pick_device(cfg.device)  # before minutes of collection, not after
    data, run_dir, eval_dir = out / "data", out / "run", out / "eval"
    t0 = time.perf_counter()
    if data.exists():
        shutil.rmtree(data)
    print(f"[1/3] collecting {qs.agents} x {qs.env_steps} ticks of {qs.env} (random agents)")
    if args.no_progress:
        summary = collect(qs.env, qs.agents, qs.env_steps, data, seed=qs.seed)
    else:
        from tqdm import tqdm

        with tqdm(total=qs.env_steps, desc="collect", unit="tick", dynamic_ncols=True) as bar:
            summary = collect(qs.env, qs.agents, qs.env_steps, data, seed=qs.seed, progress=bar.update)
    print(f"      {summary['steps']} steps, {summary['episodes']} episodes -> {data}")
    t1 = time.perf_counter()
    print(f"[2/3] training the {cfg.preset} preset for {cfg.steps} steps")
    trainer = Trainer(data, run_dir, cfg, overwrite=True)
    trainer.run(progress=not args.no_progress)
    t2 = time.perf_counter()
    print(f"[3/3] open-loop evaluation on held-out episodes -> {eval_dir}")
    result = evaluate(run_dir, data, eval_dir, EvalConfig(seed=qs.seed))
    t3 = time.perf_counter()
    m, rep, mean = (result["obs_nmse"][k] for k in ("model", "repeat_last", "mean"))
    # A horizon without windows does not count; one whose error was not finite (null in
    # eval.json, None here) is not won.
    beats = all(n == 0 or (None not in (a, b, c) and a < b and a < c)
                for a, b, c, n in zip(m, rep, mean, result["valid_windows"]))
    ratio = rep[0] / m[0] if m[0] and rep[0] is not None else None
    headline = {
        "env": qs.env, "seed": qs.seed, "preset": cfg.preset, "train_steps": cfg.steps,
        "h1_model": m[0], "h1_repeat_last": rep[0], "h1_ratio_repeat_over_model": ratio,
        "beats_both_naive_at_every_horizon": beats,
        "seconds": {"collect": t1 - t0, "train": t2 - t1, "eval": t3 - t2, "total": t3 - t0},
    }
    table = summary_table(result)
    report = (
        f"# worldssm quickstart report\n\n{qs.env}, {summary['episodes']} episodes, preset {cfg.preset}, "
        f"{cfg.steps} training steps, seed {qs.seed}.\n\nNormalised open-loop observation MSE "
        f"(context {result['context']}, held-out episodes, {result['windows']} windows):\n\n```\n{table}\n```\n\n"
        f"Horizon 1: model {_num(m[0])} vs repeat-last {_num(rep[0])} ({_compare(ratio)}). "
        f"Lower than both naive predictors at every horizon: {beats}.\n\n"
        f"Time: collect {t1 - t0:.0f} s, train {t2 - t1:.0f} s, eval {t3 - t2:.0f} s.\n\n"
        f"Files: eval.json, openloop.png (this folder); checkpoints in {run_dir}.\n"
    )
    atomic_write_text(eval_dir / "report.md", report)
    atomic_write_text(eval_dir / "headline.json", json.dumps(headline, indent=1, allow_nan=False))
    print(table)
    print(f"horizon 1: model {_num(m[0])}, repeat-last {_num(rep[0])} ({_compare(ratio)}); "
          f"beats both naive predictors at every horizon: {beats}")
    print(f"report: {eval_dir / 'report.md'} (plot: {eval_dir / 'openloop.png'}); total {t3 - t0:.0f} s")
    return 0


def _compare(ratio) -> str:
    """repeat-last's error over the model's, in words: "67.2x lower" or "3.1x higher"."""
    if ratio is None:
        return "n/a"
    if ratio >= 1:
        return f"{ratio:.1f}x lower"
    return f"{1 / ratio:.1f}x higher" if ratio > 0 else "no better than repeat-last"


def _num(value, spec: str = ".4g") -> str:
    """A number of eval.json for the report: null (not finite, or no windows) shows as n/a."""
    return "n/a" if value is None else format(value, spec)
