"""The training loop: AdamW, clipping, bf16 autocast on CUDA, checkpoints, exact resume.

A run directory holds `config.json` (the resolved configs), `metrics.jsonl` (one JSON object per
log line) and `checkpoints/` (see worldssm.checkpoint). Training is deterministic on CPU for
a seed: resuming from a checkpoint gives the same weights as an uninterrupted run.

A Trainer owns its run directory (`RunDirectory`): it holds `DirLock(run_dir, "training")` from
construction until `run` returns, so a second process gets `DirectoryBusy` naming the holder;
it refuses a non-empty directory unless asked to resume the run there or to overwrite it; it
refuses a link in place of any file it writes; and `run` first removes the hidden temporary
files and checkpoint directories a killed run left. A resumed run must see the data it was
trained on (the train/validation split and the sampler's stream depend on it), so data of
another size is refused with both sizes named: resume with the old data or train a new run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from worldssm.checkpoint import (
    CHECKPOINTS,
    DISK_FULL,
    LATEST,
    OPTIMIZER_FILE,
    SIDECAR_FILE,
    atomic_write_text,
    check_file_type,
    checkpoints_dir,
    load_checkpoint,
    load_optimizer_state,
    lstat_or_none,
    read_regular_file,
    save_checkpoint,
    to_jsonable,
)
from worldssm.errors import CheckpointError, WorldssmError
from worldssm.locks import LOCK_NAME, DirLock
from worldssm.train.config import TrainConfig

CONFIG, METRICS = "config.json", "metrics.jsonl"
# Hidden temporaries a killed run can leave: atomic_write_text's files in the run directory,
# save_checkpoint's directories and `latest`'s temporary file in checkpoints/.
_LEFTOVERS = {"": re.compile(r"\.(config\.json|metrics\.jsonl)\..+\.tmp"),
              CHECKPOINTS: re.compile(r"\.step-[0-9]{8}\..+|\.latest\..+\.tmp")}


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


def data_description(spec, dataset, train, val, path=None) -> dict:
    return {
        "path": None if path is None else str(Path(path).resolve()),  # where dreams start from (worldssm.dream)
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


def check_same_data(ckpt_data: dict, dataset, data, where) -> None:
    """Refuse to resume on data of another size than the run's (the split and sampler depend on it)."""
    then, now = (ckpt_data["steps"], ckpt_data["episodes"]), (dataset.num_steps, len(dataset.episodes))
    if then != now:
        raise CheckpointError(
            f"{where} was trained on {then[0]} steps ({then[1]} episodes) of data, and {data} now holds "
            f"{now[0]} steps ({now[1]} episodes); a resumed run needs the data it was trained on (its "
            "train/validation split and sampler depend on it): resume with that data, or train a new run on this one"
        )


def train_config_of(sidecar: dict, ckpt, **overrides) -> TrainConfig:
    """The sidecar's train_config (with `overrides`); CheckpointError names a bad field."""
    try:
        return TrainConfig.from_dict({**sidecar["train_config"], **overrides})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{Path(ckpt) / SIDECAR_FILE}: field train_config: {exc}") from None


def read_metrics(path) -> list[dict]:
    """The records of a metrics.jsonl, each a dict with an int "step".

    A last line that does not parse is dropped with a warning: a run killed while writing it
    leaves it cut short. Blank lines are skipped.

    Raises:
        CheckpointError: the file is not a regular file, or a line other than the last is not
            a JSON object with an int step (the message names the file and the line).
    """
    lines = read_regular_file(path).split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            good = isinstance(record, dict) and type(record.get("step")) is int
        except (ValueError, RecursionError):
            good = False
        if good:
            records.append(record)
        elif number == len(lines):
            warnings.warn(f"{path}: line {number} is cut short (the run was stopped while writing it); dropped it",
                          stacklevel=2)
        else:
            raise CheckpointError(f"{path}: line {number} is not a JSON object with an integer step")
    return records


@contextlib.contextmanager
def disk_full_in_one_line(path):
    """Turn a full disk (ENOSPC, EDQUOT) while writing `path` into a one-line WorldssmError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise WorldssmError(f"cannot write {path}: {exc.strerror}; free space, then resume") from exc
        raise


class RunDirectory:
    """The files of one run directory, and the training lock on it.

    Args:
        path: the run directory.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.config, self.metrics = self.path / CONFIG, self.path / METRICS
        self.lock: DirLock | None = None

    def check(self, resume: bool, overwrite: bool) -> None:
        """Refuse a request that would mix or destroy runs (cheap: done first, then again under the lock).

        Raises:
            WorldssmError: resume and overwrite together, a path that is not a directory, or a
                non-empty directory without either.
            CheckpointError: resume where there is no directory.
        """
        if resume and overwrite:
            raise WorldssmError("--resume and --overwrite exclude each other: resume continues the run, "
                                "overwrite deletes it and trains anew")
        if self.path.exists() and not self.path.is_dir():
            raise WorldssmError(f"{self.path} exists and is not a directory: a run directory must be a directory")
        if resume and not self.path.is_dir():
            raise CheckpointError(f"no checkpoint found at {self.path}: the directory does not exist")
        if not (resume or overwrite) and self.path.is_dir():
            held = sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME)
            if held:
                more = ", ..." if len(held) > 3 else ""
                raise WorldssmError(
                    f"run directory {self.path} is not empty (it holds {', '.join(held[:3])}{more}): pass --resume "
                    "to continue its run, or --overwrite to delete its checkpoints, metrics and config and train anew"
                )

    def acquire(self) -> None:
        """Take the training lock (creating the directory) and refuse links among the names written."""
        self.lock = DirLock(self.path, "training")
        try:
            for path in (self.config, self.metrics):
                st = lstat_or_none(path)
                if st is not None:
                    check_file_type(path, st)
            latest = checkpoints_dir(self.path) / LATEST
            st = lstat_or_none(latest)
            if st is not None:
                check_file_type(latest, st)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def clean_leftovers(self) -> list[Path]:
        """Remove the hidden temporary files and checkpoint directories a killed run left."""
        removed = []
        for sub, pattern in _LEFTOVERS.items():
            folder = checkpoints_dir(self.path) if sub else self.path
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if pattern.fullmatch(p.name):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    removed.append(p)
        return removed

    def clear(self) -> None:
        """Delete the run's checkpoints, metrics and config (for overwrite); other files stay."""
        root = checkpoints_dir(self.path)
        if root.is_dir():
            shutil.rmtree(root)
        for path in (self.config, self.metrics):
            path.unlink(missing_ok=True)

    def write_config(self, doc: dict) -> None:
        with disk_full_in_one_line(self.config):
            atomic_write_text(self.config, json.dumps(to_jsonable(doc), indent=1))

    def open_metrics(self, upto: int):
        """metrics.jsonl for appending (binary, unbuffered), first cut to the records with
        step <= `upto` (those a resumed run continues from)."""
        if os.path.lexists(self.metrics):
            keep = [r for r in read_metrics(self.metrics) if r["step"] <= upto]
            with disk_full_in_one_line(self.metrics):
                atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in keep))
        try:
            # O_NOFOLLOW: a link planted since `acquire` is refused, never written through.
            fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CheckpointError(f"{self.metrics}: cannot open it for appending ({exc.strerror})") from exc
        # Unbuffered: a failed write (a full disk) leaves nothing queued for close to retry.
        log = os.fdopen(fd, "ab", buffering=0)
        try:
            check_file_type(self.metrics, os.fstat(fd))
        except BaseException:
            log.close()
            raise
        return log


class Trainer:
    """Trains a WorldModel on a rollout dataset into a run directory.

    Args:
        data: a directory or file of rollout shards.
        run_dir: where configs, metrics and checkpoints go: a new or empty directory, unless
            `resume` or `overwrite`.
        cfg: the training config (ignored on resume in favour of the checkpoint's, except `steps`).
        resume: continue from the run's latest checkpoint, on the same data.
        overwrite: delete the run already in `run_dir` (checkpoints, metrics, config) when `run`
            starts, and train anew.
        model_cfg: the model config (default: the preset `cfg.preset`); ignored on resume.

    Raises:
        WorldssmError: the run directory is not empty and neither flag is set, or is in use
            (`DirectoryBusy`), or the data cannot feed this config (seq_len longer than it).
        CheckpointError: on resume, a missing or damaged checkpoint, or other data.
    """

    def __init__(self, data, run_dir, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 model_cfg=None):
        from worldssm.data import RolloutDataset
        from worldssm.model import preset_for

        self.run_dir = Path(run_dir)
        self.files = RunDirectory(self.run_dir)
        self.files.check(resume, overwrite)
        self.overwrite = overwrite
        self.updates = 0
        self.last_checkpoint: Path | None = None
        self._saved_step: int | None = None
        # A resume reads the run, so it locks first; a new run locks (creating the directory)
        # only once everything else is checked, so a rejected call leaves no directory behind.
        if resume:
            self.files.acquire()
        try:
            self.dataset = RolloutDataset.load(data)
            if resume:
                self._resume(data, cfg.steps)
            else:
                if model_cfg is None:
                    model_cfg = preset_for(cfg.preset, cfg.backbone)
                    over = {k: getattr(cfg, k) for k in ("mean_rows", "loss_con") if getattr(cfg, k) is not None}
                    model_cfg = dataclasses.replace(model_cfg, **over)
                self._configure(data, cfg, model_cfg)
                self.files.acquire()
                self.files.check(resume, overwrite)
        except BaseException:
            self.close()
            raise

    def _configure(self, data, cfg: TrainConfig, model_cfg, weights=None, ckpt=None) -> None:
        from worldssm.data import SequenceSampler
        from worldssm.model import WorldModel
        from worldssm.model.loading import build_checked_model

        self.cfg, self.model_cfg = cfg, model_cfg
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        spec = self.dataset.spec
        try:
            self.train_set, self.val_set = self.dataset.split(cfg.val_fraction, cfg.seed)
        except ValueError as exc:
            raise WorldssmError(f"cannot train on {data} with this config: {exc}") from None
        try:
            self.sampler = SequenceSampler(self.train_set, cfg.batch_size, cfg.seq_len, cfg.seed)
        except ValueError as exc:
            held = self.dataset.num_steps - self.train_set.num_steps
            split = (f" (the training split: {self.train_set.num_steps} of the data's {self.dataset.num_steps} steps; "
                     f"val_fraction {cfg.val_fraction} holds out {held})") if held else ""
            raise WorldssmError(f"cannot train on {data} with this config: {exc}{split}") from None
        if weights is None:
            model = WorldModel(model_cfg, spec.observation_space, spec.action_space)
            if model.normalises_obs:  # a resumed run's statistics come with its weights
                model.set_obs_stats(*self.train_set.obs_stats())
        else:
            model = build_checked_model(model_cfg, spec.observation_space, spec.action_space, weights, ckpt)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-6
        )
        val_source = self.val_set if self.val_set.num_steps >= cfg.seq_len else self.train_set
        self.val_batch = SequenceSampler(val_source, cfg.batch_size, cfg.seq_len, cfg.seed + 1).sample()
        self.data = data_description(spec, self.dataset, self.train_set, self.val_set, data)

    def _resume(self, data, steps: int) -> None:
        from worldssm.model.loading import model_config_of

        sidecar, weights, opt_tensors, ckpt = load_checkpoint(self.run_dir, with_optimizer=True)
        check_spaces(sidecar["data"], self.dataset.spec, ckpt)
        check_same_data(sidecar["data"], self.dataset, data, ckpt)
        cfg = train_config_of(sidecar, ckpt, steps=steps)
        self._configure(data, cfg, model_config_of(sidecar, ckpt), weights=weights, ckpt=ckpt)
        rng = opt_tensors.pop("__rng__.torch", None)
        own = torch.get_rng_state()
        if rng is None or rng.dtype != own.dtype or rng.shape != own.shape:
            raise CheckpointError(f"{ckpt / OPTIMIZER_FILE}: tensor __rng__.torch is missing or not a torch RNG state")
        load_optimizer_state(self.optimizer, opt_tensors, sidecar["optimizer"], ckpt)
        try:
            self.sampler.load_state_dict(sidecar["sampler"])
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise CheckpointError(f"{ckpt / SIDECAR_FILE}: field sampler: {exc}") from None
        try:
            torch.set_rng_state(rng)
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt / OPTIMIZER_FILE}: tensor __rng__.torch: {exc}") from None
        self.updates = self._saved_step = int(sidecar["step"])
        self.last_checkpoint = ckpt

    def close(self) -> None:
        """Release the run directory's lock (`run` does this when it returns or raises)."""
        files = getattr(self, "files", None)
        if files is not None:
            files.release()

    # -------------------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        """Linear warm-up, then a cosine from lr down to lr * lr_final at the last step."""
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))

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
        """Checkpoint the current step (once: a step already saved, or resumed from, is kept as is)."""
        if self._saved_step == self.updates and self.last_checkpoint is not None:
            return self.last_checkpoint
        sidecar = {
            "model_config": self.model_cfg.to_dict(),
            "train_config": self.cfg.to_dict(),
            "data": self.data,
            "sampler": self.sampler.state_dict(),
        }
        self.last_checkpoint = save_checkpoint(self.run_dir, self.updates, self.model, self.optimizer, sidecar)
        self._saved_step = self.updates
        return self.last_checkpoint

    def _write_config(self) -> None:
        from worldssm import __version__

        doc = {"worldssm": __version__, "model_config": self.model_cfg.to_dict(),
               "train_config": self.cfg.to_dict(), "data": self.data, "device": str(self.device)}
        self.files.write_config(doc)

    def run(self, progress: bool = True) -> dict:
        """Train up to `cfg.steps`; returns the last logged metrics. Ctrl-C saves before exiting.

        Holds the run directory's lock until it returns (or raises), then releases it.
        """
        if self.files.lock is None:
            self.files.acquire()
        try:
            self.files.clean_leftovers()
            if self.overwrite:
                self.files.clear()
                self.overwrite = False
            self._write_config()
            with self.files.open_metrics(self.updates) as log:
                return self._loop(log, progress)
        finally:
            self.close()

    def _loop(self, log, progress: bool) -> dict:
        cfg = self.cfg
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.updates, desc="train", unit="step", dynamic_ncols=True)
        last: dict = {}
        window: list[dict] = []
        t0, s0 = time.perf_counter(), self.updates
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
                    self._log(log, last)
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

    def _log(self, log, record: dict) -> None:
        with disk_full_in_one_line(self.files.metrics):
            log.write((json.dumps(record) + "\n").encode())


def train(data, run_dir, cfg: TrainConfig, resume: bool = False, progress: bool = True, model_cfg=None,
          overwrite: bool = False) -> dict:
    """Train a world model (see `Trainer`); returns the final metrics."""
    return Trainer(data, run_dir, cfg, resume=resume, overwrite=overwrite, model_cfg=model_cfg).run(progress=progress)
