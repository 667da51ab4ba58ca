"""`worldssm bench play`: frames per second of `worldssm play`'s whole loop, headless.

Run as `worldssm bench play [--scenarios vector pixel] [--device cpu|cuda] [--frames N]`. Each
scenario opens the app with the SDL dummy video driver and no frame cap (`--fps 0`), presses and
releases action keys through posted events every few frames (so input handling is in the loop),
and times whole frames: events, the real env's step, the dream's model step with decoding, the
drawing of both panes, the error strip and the HUD.

- vector: the CartPole-v1 model that ships with the package (or `--checkpoint`), reality and
  dream drawn through CartPole's own renderer.
- pixel: `worldssm/Pong64-v0` (needs ale-py) with a model of the device's preset (SMALL on the
  CPU, BASE on CUDA) built from the game's spaces with untrained weights (its continue head set
  to "the episode goes on", as a trained model's says during play): a frame costs the same
  whatever the weights are, and no trained pixel model ships with the package.

Writes `play-<device>-<time>.json` with the frames timed, fps, median and p99 frame time.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

SCENARIOS = ("vector", "pixel")


def _app(scenario: str, device: str, checkpoint=None):
    from worldssm.play import open_app

    if scenario == "vector":
        return open_app(checkpoint, fps=0, device=device, resync=0)
    import torch

    from worldssm import envs
    from worldssm.model import WorldModel, preset
    from worldssm.spaces import space_to_dict

    env_id = "worldssm/Pong64-v0"
    probe = envs.make(env_id, api="batched", n_agents=1)  # names the extra when ale-py is missing
    try:
        spaces = space_to_dict(probe.single_observation_space), space_to_dict(probe.single_action_space)
    finally:
        probe.close()
    model = WorldModel(preset("BASE" if device == "cuda" else "SMALL"), *spaces)
    with torch.no_grad():  # untrained, the continue head says "ends" half the time: it says "goes on"
        model.cont_head[-1].bias.fill_(8.0)
    model = model.to(device).eval()
    return open_app(model, env=env_id, fps=0, device=device, resync=0)


def measure(scenario: str, device: str, frames: int, warmup: int, checkpoint=None) -> dict:
    """Time `frames` frames of one scenario after `warmup` frames."""
    from worldssm.play.app import headless

    headless()
    app = _app(scenario, device, checkpoint)
    pg = app.pg
    keys = [k for keys, _ in app.keymap.combos for k in keys if len(keys) == 1 and not k.isdigit()] \
        if app.keymap.kind == "discrete" else list(app.keymap.axes)
    codes = [pg.key.key_code(k) for k in keys] or [pg.K_LEFT]
    times = []
    try:
        for i in range(warmup + frames):
            if i % 5 == 0:  # hold a key for five frames, then the next one
                pg.event.post(pg.event.Event(pg.KEYUP, key=codes[(i // 5 - 1) % len(codes)]))
                pg.event.post(pg.event.Event(pg.KEYDOWN, key=codes[(i // 5) % len(codes)]))
            t0 = time.perf_counter()
            app.tick()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        lat = np.array(app.session.latency_ms)
        s = app.session
        row = {"scenario": scenario, "env": s.env_id, "model_obs": s.model.obs_kind,
               "frames": len(times), "fps": float(len(times) / np.sum(times)),
               "median_ms": float(np.median(times) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
               "model_step_p50_ms": float(np.percentile(lat, 50)), "model_step_p99_ms": float(np.percentile(lat, 99)),
               "window": list(app.size), "episodes": s.episode}
    finally:
        app.close()
    return row


def run(out_dir="tests/bench/results", device: str = "cpu", scenarios=SCENARIOS, frames: int = 600,
        warmup: int = 30, checkpoint=None) -> dict:
    import torch

    from worldssm.bench.env import git_sha, save_result
    from worldssm.errors import WorldssmError

    if device == "cuda" and not torch.cuda.is_available():
        raise WorldssmError("--device cuda but torch sees no CUDA device")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise WorldssmError(f"unknown scenarios {unknown}; choose from {SCENARIOS}")
    load = os.getloadavg()
    rows = []
    for scenario in scenarios:
        rows.append(measure(scenario, device, frames, warmup, checkpoint))
        r = rows[-1]
        print(f"{scenario:>6}: {r['fps']:.1f} fps (frame median {r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; "
              f"model step p50 {r['model_step_p50_ms']:.2f} ms)", flush=True)
    import pygame

    result = {"bench": "play", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "cpus": os.cpu_count(),
              "platform": platform.platform(), "load_avg_before": load, "load_avg_after": os.getloadavg(),
              "versions": {"torch": torch.__version__, "numpy": np.__version__, "pygame": pygame.version.ver},
              "setup": {"fps_cap": 0, "video": "SDL dummy (headless)", "warmup_frames": warmup,
                        "preset_pixel": "BASE" if device == "cuda" else "SMALL",
                        "vector_model": str(checkpoint) if checkpoint else "bundled CartPole-v1"},
              "rows": rows}
    save_result(result, out_dir, f"play-{'cuda' if device == 'cuda' else 'cpu'}")
    return result
