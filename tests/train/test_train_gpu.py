"""Training on CUDA: the Triton scan under bf16 autocast trains the BASE model (run on the GPU machine)."""

import json

import numpy as np
import pytest
import torch

from worldssm.data.format import ShardWriter, make_header
from worldssm.train import TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def box(shape, lo, hi):
    return {"type": "box", "shape": list(shape), "dtype": "float32",
            "low": np.full(shape, lo, np.float32), "high": np.full(shape, hi, np.float32)}


def write_oscillators(path, episodes=24, length=120, seed=0):
    """Damped driven oscillators: a small deterministic dynamics the model must learn."""
    rng = np.random.default_rng(seed)
    header = make_header("Oscillator-v0", box([2], -10, 10), box([1], -1, 1), ["a"], {"seed": seed})
    with ShardWriter(path / "shard-00000.wsr", header) as w:
        for ep in range(episodes):
            x = rng.standard_normal(2).astype(np.float32)
            obs, act = [], []
            for _ in range(length):
                a = rng.uniform(-1, 1, 1).astype(np.float32)
                obs.append(x.copy())
                act.append(a)
                x = np.array([x[0] + 0.1 * x[1], 0.98 * x[1] - 0.1 * x[0] + 0.1 * a[0]], np.float32)
            flags = np.zeros(length, bool)
            first, last = flags.copy(), flags.copy()
            first[0], last[-1] = True, True
            w.write({"kind": "steps", "agent": "a", "episode": ep, "obs": np.stack(obs),
                     "action": np.stack(act), "reward": np.zeros(length, np.float32), "is_first": first,
                     "is_last": last, "is_terminal": flags.copy()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_base_model_trains_on_cuda(tmp_path):
    write_oscillators(tmp_path)
    cfg = TrainConfig(preset="BASE", steps=60, batch_size=16, seq_len=64, log_every=20, checkpoint_every=60,
                      lr=3e-4, warmup=10)
    trainer = Trainer(tmp_path, tmp_path / "run", cfg)
    assert trainer.device.type == "cuda"
    trainer.run(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(x["loss"]) for x in lines)
    assert lines[-1]["rec"] < 0.5 * lines[0]["rec"]
