"""The training loop: AdamW, clipping, bf16 autocast on CUDA, checkpoints, exact resume.

A run directory holds `config.json` (the resolved configs), `metrics.jsonl` (one JSON object per
log line) and `checkpoints/` (see worldssm.checkpoint). Training is deterministic on CPU for
a seed: resuming from a checkpoint gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from worldssm.errors import CheckpointError, WorldssmError
from worldssm.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    optimizer_state_dict,
    save_checkpoint,
    to_jsonable,
)
from worldssm.train.config import TrainConfig


class TrainingDiverged(WorldssmError):
    """The loss or the gradients became non-finite; the last good checkpoint is kept."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise WorldssmError("device 'cuda' was requested but torch sees no CUDA device")
    return torch.device(name)


def to_tensors(batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.to(device, non_blocking=True)
    return out


def data_description(spec, dataset, train, val) -> dict:
    return {
        "env_id": spec.env_id,
        "observation_space": spec.observation_space,
        "action_space": spec.action_space,
        "episodes": len(dataset.episodes),
        "steps": dataset.num_steps,
        "train_episodes": len(train.episodes),
        "val_episodes": len(val.episodes),
    }


def check_spaces(ckpt_data: dict, spec, where) -> None:
    """Raise CheckpointError naming the first field where the checkpoint's spaces differ from the data's."""
    from worldssm.spaces import spaces_differ

    for name in ("observation_space", "action_space"):
        field = spaces_differ(ckpt_data[name], getattr(spec, name))
        if field is not None:
            raise CheckpointError(
                f"{where} was trained on different data: {name}.{field} differs "
                f"(checkpoint {ckpt_data[name].get(field)!r}, data {getattr(spec, name).get(field)!r})"
            )


class Trainer:
    """Trains a WorldModel on a rollout dataset into a run directory.

    Args:
        data: a directory or file of rollout shards.
        run_dir: where configs, metrics and checkpoints go.
        cfg: the training config (ignored on resume in favour of the checkpoint's, except `steps`).
        resume: continue from the run's latest checkpoint.
    """

    def __init__(self, data, run_dir, cfg: TrainConfig, resume: bool = False, model_cfg=None):
        from worldssm.data import RolloutDataset, SequenceSampler
        from worldssm.model import WorldModel, WorldModelConfig, preset

        self.run_dir = Path(run_dir)
        self.dataset = RolloutDataset.load(data)
        spec = self.dataset.spec
        sidecar = None
        if resume:
            sidecar, weights, opt_tensors, ckpt = load_checkpoint(self.run_dir, with_optimizer=True)
            check_spaces(sidecar["data"], spec, ckpt)
            cfg = TrainConfig.from_dict({**sidecar["train_config"], "steps": cfg.steps})
            model_cfg = WorldModelConfig.from_dict(sidecar["model_config"])
        elif model_cfg is None:
            model_cfg = preset(cfg.preset)
        self.cfg, self.model_cfg = cfg, model_cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.train_set, self.val_set = self.dataset.split(cfg.val_fraction, cfg.seed)
        self.model = WorldModel(model_cfg, spec.observation_space, spec.action_space)
        if self.model.normalises_obs and sidecar is None:  # a resumed run loads them with the weights
            self.model.set_obs_stats(*self.train_set.obs_stats())
        self.model = self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-6
        )
        self.sampler = SequenceSampler(self.train_set, cfg.batch_size, cfg.seq_len, cfg.seed)
        val_source = self.val_set if self.val_set.num_steps >= cfg.seq_len else self.train_set
        self.val_batch = SequenceSampler(val_source, cfg.batch_size, cfg.seq_len, cfg.seed + 1).sample()
        self.data = data_description(spec, self.dataset, self.train_set, self.val_set)
        self.updates = 0
        if sidecar is not None:
            self.model.load_state_dict(weights)
            rng = opt_tensors.pop("__rng__.torch")
            self.optimizer.load_state_dict(optimizer_state_dict(opt_tensors, sidecar["optimizer"]))
            self.sampler.load_state_dict(sidecar["sampler"])
            torch.set_rng_state(rng)
            self.updates = int(sidecar["step"])
        self.last_checkpoint = None

    # -------------------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def update(self) -> dict[str, float]:
        batch = to_tensors(self.sampler.sample(), self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.updates)
        self.model.train()
        with self._autocast():
            loss, metrics, _, _ = self.model(batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(self._diverged(f"the loss is {loss.item()}", metrics))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if not torch.isfinite(norm):
            raise TrainingDiverged(self._diverged(f"the gradient norm is {norm.item()}", metrics))
        self.optimizer.step()
        self.updates += 1
        out = {k: float(v) for k, v in metrics.items()}
        out["grad_norm"] = float(norm)
        return out

    def _diverged(self, what: str, metrics) -> str:
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
        keep = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        return f"training stopped at step {self.updates + 1}: {what} ({parts}); {keep}. Try a lower --lr."

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        with self._autocast():
            _, metrics, _, _ = self.model(to_tensors(self.val_batch, self.device), sample=False)
        return {f"val_{k}": float(v) for k, v in metrics.items()}

    def save(self) -> Path:
        sidecar = {
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "data": self.data,
            "sampler": self.sampler.state_dict(),
        }
        self.last_checkpoint = save_checkpoint(self.run_dir, self.updates, self.model, self.optimizer, sidecar)
        return self.last_checkpoint

    def _write_config(self) -> None:
        from worldssm import __version__

        doc = {"worldssm": __version__, "model_config": self.model_cfg.to_dict(),
               "train_config": self.cfg.to_dict(), "data": self.data, "device": str(self.device)}
        atomic_write_text(self.run_dir / "config.json", json.dumps(to_jsonable(doc), indent=1))

    def _open_metrics(self):
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            # On resume, drop lines logged after the checkpoint we continue from.
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.updates]
            atomic_write_text(path, "".join(line + "\n" for line in keep))
        return open(path, "a")

    def run(self, progress: bool = True) -> dict:
        """Train up to `cfg.steps`; returns the last logged metrics. Ctrl-C saves before exiting."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        cfg = self.cfg
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.updates, desc="train", unit="step", dynamic_ncols=True)
        last: dict = {}
        window: list[dict] = []
        t0, s0 = time.perf_counter(), self.updates
        with self._open_metrics() as log:
            try:
                while self.updates < cfg.steps:
                    window.append(self.update())
                    if bar is not None:
                        bar.update(1)
                    if self.updates % cfg.log_every == 0 or self.updates == cfg.steps:
                        last = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                        last.update(self.validate())
                        last["steps_per_s"] = (self.updates - s0) / max(1e-9, time.perf_counter() - t0)
                        last["step"] = self.updates
                        log.write(json.dumps(last) + "\n")
                        log.flush()
                        window = []
                        if bar is not None:
                            bar.set_postfix(loss=f"{last['loss']:.3f}", val=f"{last['val_loss']:.3f}")
                    if self.updates % cfg.checkpoint_every == 0 and self.updates < cfg.steps:
                        self.save()
            except KeyboardInterrupt:
                if bar is not None:
                    bar.close()
                path = self.save()
                print(f"interrupted at step {self.updates}; saved {path}")
                raise
        if bar is not None:
            bar.close()
        self.save()
        return last


def train(data, run_dir, cfg: TrainConfig, resume: bool = False, progress: bool = True, model_cfg=None) -> dict:
    """Train a world model (see `Trainer`); returns the final metrics."""
    return Trainer(data, run_dir, cfg, resume=resume, model_cfg=model_cfg).run(progress=progress)
