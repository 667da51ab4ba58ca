"""Checkpoints on disk: safetensors weights and optimizer tensors plus a JSON sidecar; atomic;
no pickle; every file checked before it is used. (Building a model from one, with its shapes
checked against the weights first, is `worldssm.model.load_model`.)

Layout of a run directory:

    RUN/.worldssm.lock                                   the training lock (worldssm.locks)
    RUN/config.json, RUN/metrics.jsonl                   written by worldssm.train.Trainer
    RUN/checkpoints/step-00001000/model.safetensors      weights
    RUN/checkpoints/step-00001000/optimizer.safetensors  AdamW moments and the torch RNG state
    RUN/checkpoints/step-00001000/checkpoint.json        the sidecar (below)
    RUN/checkpoints/latest                               name of the newest complete checkpoint

A checkpoint directory is written under a hidden temporary name (`.step-00001000.XXXX`) and
renamed when complete; `latest` is replaced atomically afterwards, so a crash at any point
leaves the previous checkpoint usable (the trainer removes hidden leftovers at its next start).
Step numbers have exactly 8 digits: a step is in [0, 10**8).

The sidecar `checkpoint.json` is one UTF-8 JSON object (at most MAX_SIDECAR_BYTES); numpy
arrays in it are {"__ndarray__": nested lists, "dtype": name} with name one of the codec's
`DTYPE_CODES` and at most MAX_ARRAY_ELEMENTS elements. Its fields:

    format_version  int, FORMAT_VERSION
    step            int in [0, 10**8): optimiser updates done
    sha256          {"model.safetensors": hex, "optimizer.safetensors": hex}: SHA-256 of each
                    tensor file, 64 lower-case hex digits (checkpoints written before it
                    existed have none: they load with a warning, unverified)
    model_config    dict, WorldModelConfig.to_dict()
    train_config    dict, TrainConfig.to_dict()
    data            env_id str; observation_space, action_space SPACE dicts; episodes, steps,
                    train_episodes, val_episodes ints >= 0
    sampler         SequenceSampler.state_dict(): seed, batch_size, seq_len, stream_len,
                    num_samples ints; rng {state: [hi, lo], inc: [hi, lo] 64-bit words,
                    has_uint32 0 or 1, uinteger a 32-bit int}
    optimizer       {} without an optimizer, else {"param_groups": list of dicts, "scalars":
                    dict of numbers} (the non-tensor part of the optimizer's state_dict)

Reading (`load_checkpoint`) raises `CheckpointError` naming the file, and the field or tensor,
for anything else: `latest` must be a regular file (not a link) holding exactly a name
step-NNNNNNNN that is a real directory in checkpoints/ (its content is never echoed);
checkpoints/ must not be a link; every file must be a regular file (a FIFO is refused, not
opened); the sidecar is checked field by field against the list above; each tensor file must
match its SHA-256 and hold only finite floating-point values.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from worldssm.atomic import atomic_write_text
from worldssm.codec import DTYPE_CODES, MAX_NDIM
from worldssm.errors import CheckpointError, WorldssmError
from worldssm.spaces import SpaceError, check_space_dict

FORMAT_VERSION = 1
KEEP = 2
STEP_END = 10**8  # step-%08d names: a step has at most 8 digits
STEP_NAME = re.compile(r"step-[0-9]{8}")
CHECKPOINTS, LATEST = "checkpoints", "latest"
MODEL_FILE, OPTIMIZER_FILE, SIDECAR_FILE = "model.safetensors", "optimizer.safetensors", "checkpoint.json"
MAX_SIDECAR_BYTES = 64 << 20
MAX_DEPTH = 64  # nesting of the sidecar's JSON; the real one is at most 6 deep
MAX_ARRAY_ELEMENTS = 1 << 24
# Errors of a full disk: a save that meets one cleans up and says so in one line.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_U64 = 2**64


def step_name(step: int) -> str:
    """The directory name of a step's checkpoint: step-%08d."""
    if not 0 <= step < STEP_END:
        raise ValueError(f"a checkpoint step must be in [0, 10**8), got {step}")
    return f"step-{step:08d}"


# ----- JSON with numpy arrays -------------------------------------------------------------------
def to_jsonable(obj):
    """Configs and sidecars to plain JSON: numpy arrays become {"__ndarray__": list, "dtype": str}."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPE_CODES:
            raise ValueError(f"arrays of dtype {obj.dtype} cannot go in a sidecar (allowed: {sorted(DTYPE_CODES)})")
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.name}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def from_jsonable(obj, where: str = "", depth: int = 0):
    """Inverse of `to_jsonable`, bounded: what a sidecar may ask for is checked before it is built.

    Raises:
        ValueError: naming the field (`where`): nesting deeper than MAX_DEPTH, an array whose
            dtype is not one of the codec's DTYPE_CODES, ragged or non-numeric array data, more
            than MAX_ARRAY_ELEMENTS elements or MAX_NDIM dimensions, values the dtype cannot hold.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or 'the document'}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return _array_from_json(obj, where)
        return {k: from_jsonable(v, f"{where}.{k}" if where else k, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
    return obj


def _array_from_json(obj: dict, where: str) -> np.ndarray:
    if set(obj) != {"__ndarray__", "dtype"}:
        raise ValueError(f"{where}: an array is exactly {{'__ndarray__': ..., 'dtype': ...}}")
    name = obj["dtype"]
    if not isinstance(name, str) or name not in DTYPE_CODES:
        raise ValueError(f"{where}.dtype must be one of {sorted(DTYPE_CODES)}")
    data = obj["__ndarray__"]
    shape, level = [], [data]
    # Walk the nested lists level by level: a regular shape, bounded, before numpy sees them.
    while level and all(isinstance(x, list) for x in level):
        n = len(level[0])
        if any(len(x) != n for x in level):
            raise ValueError(f"{where}: array data is ragged at dimension {len(shape)}")
        shape.append(n)
        level = [y for x in level for y in x]
        if len(shape) > MAX_NDIM or len(level) > MAX_ARRAY_ELEMENTS:
            raise ValueError(f"{where}: array exceeds {MAX_NDIM} dimensions or {MAX_ARRAY_ELEMENTS} elements")
    if not all(type(x) in (int, float, bool) for x in level):
        raise ValueError(f"{where}: array data must be nested lists of numbers")
    try:
        return np.asarray(data, dtype=name).reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{where}: values do not fit dtype {name} ({exc})") from exc


# ----- files in a run directory -----------------------------------------------------------------
def check_file_type(path, st: os.stat_result, directory: bool = False) -> None:
    """Raise CheckpointError unless `st` (an lstat of `path`) is a regular file (or directory).

    A link is refused rather than followed, so no name in a run directory reaches outside it.
    """
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"{path} is a symbolic link; worldssm does not follow links in a run directory: "
                              "remove it")
    if directory and not stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path} is not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path} is not a regular file (a directory, FIFO or device is never opened)")


def lstat_or_none(path) -> os.stat_result | None:
    """os.lstat of `path`, or None where nothing is there."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot inspect it ({exc.strerror})") from exc


def read_regular_file(path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, never following a link or opening a FIFO or device.

    Args:
        path: the file.
        limit: the most bytes it may hold (None: no limit).

    Raises:
        CheckpointError: it is missing, a link, not a regular file, larger than `limit`, or unreadable.
    """
    st = lstat_or_none(path)
    if st is None:
        raise CheckpointError(f"{path} is missing")
    check_file_type(path, st)
    if limit is not None and st.st_size > limit:
        raise CheckpointError(f"{path} holds {st.st_size} bytes, more than the {limit} it may")
    try:
        # O_NONBLOCK: a FIFO swapped in after the lstat opens at once and fails the fstat below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot open it ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        check_file_type(path, os.fstat(f.fileno()))
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from exc
    if limit is not None and len(data) > limit:
        raise CheckpointError(f"{path} holds more than the {limit} bytes it may")
    return data


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (never through a link) holding `data`, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints_dir(run_dir, create: bool = False) -> Path:
    """RUN/checkpoints, refused if it is a link or not a directory; made if `create`."""
    root = Path(run_dir) / CHECKPOINTS
    st = lstat_or_none(root)
    if st is not None:
        check_file_type(root, st, directory=True)
    elif create:
        root.mkdir(parents=True)
    return root


# ----- saving -----------------------------------------------------------------------------------
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(run_dir, step: int, model: torch.nn.Module, optimizer, sidecar: dict) -> Path:
    """Write a complete checkpoint for `step` and point `latest` at it; keep the newest KEEP.

    Checkpoint directories of steps above `step` (left by a run that was resumed from an
    earlier one) are removed too. Replacing the checkpoint that `latest` names leaves a moment
    in which it is missing: the trainer never saves the same step twice.

    Returns:
        The checkpoint directory.

    Raises:
        WorldssmError: the disk is full (the temporary directory is removed; the previous
            checkpoint and `latest` are kept).
        CheckpointError: checkpoints/ is a link or not a directory.
    """
    from safetensors.torch import save

    name = step_name(step)
    root = checkpoints_dir(run_dir, create=True)
    final = root / name
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        files = {MODEL_FILE: save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})}
        meta = {}
        if optimizer is not None:
            tensors, meta = optimizer_tensors(optimizer)
            tensors["__rng__.torch"] = torch.get_rng_state()
            files[OPTIMIZER_FILE] = save(tensors)
        sums = {fname: hashlib.sha256(data).hexdigest() for fname, data in files.items()}
        doc = {"format_version": FORMAT_VERSION, "step": int(step), "sha256": sums, "optimizer": meta, **sidecar}
        files[SIDECAR_FILE] = json.dumps(to_jsonable(doc), indent=1).encode()
        for fname, data in files.items():
            _write_new(tmp / fname, data)
        _fsync_dir(tmp)
        if final.is_symlink():
            final.unlink()
        elif final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        tmp = None
        _fsync_dir(root)
        atomic_write_text(root / LATEST, name + "\n")
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in DISK_FULL:
            raise WorldssmError(f"cannot write checkpoint {final}: {exc.strerror}; the previous checkpoint "
                                f"and {root / LATEST} are kept: free space, then resume") from exc
        raise
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _rotate(root, name)
    return final


def _rotate(root: Path, newest: str) -> None:
    done = sorted(p.name for p in root.iterdir() if STEP_NAME.fullmatch(p.name) and not p.is_symlink() and p.is_dir())
    keep = set([n for n in done if n <= newest][-KEEP:])
    for n in done:
        if n not in keep:
            shutil.rmtree(root / n, ignore_errors=True)


# ----- reading ----------------------------------------------------------------------------------
def read_latest(latest: Path) -> str:
    """The checkpoint name a `latest` file holds, validated: exactly step-NNNNNNNN.

    Raises:
        CheckpointError: `latest` is a link, not a regular file, or holds anything else (its
            content is not repeated in the message).
    """
    raw = read_regular_file(latest, limit=4096)
    try:
        name = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        name = ""
    if not STEP_NAME.fullmatch(name):
        raise CheckpointError(f"{latest} does not hold a checkpoint name of the form step-NNNNNNNN")
    return name


def resolve_checkpoint(path) -> Path:
    """A run directory, its checkpoints/ folder, or one checkpoint directory -> the checkpoint dir.

    Every name a run directory gives stays inside it: see `read_latest`; the checkpoint it
    names must be a real directory (not a link) in the same checkpoints/ folder.
    """
    path = Path(path)
    if os.path.lexists(path / SIDECAR_FILE):
        return path
    checkpoints_dir(path)
    for root in (path / CHECKPOINTS, path):
        latest = root / LATEST
        if not os.path.lexists(latest):
            continue
        name = read_latest(latest)
        ckpt = root / name
        st = lstat_or_none(ckpt)
        if st is not None:
            check_file_type(ckpt, st, directory=True)
        if st is None or not os.path.lexists(ckpt / SIDECAR_FILE):
            raise CheckpointError(f"{latest} names {name}, which is missing or incomplete")
        return ckpt
    raise CheckpointError(f"no checkpoint found at {path} (expected a run directory with checkpoints/latest)")


def load_checkpoint(path, with_optimizer: bool = False):
    """Read a checkpoint without executing any code, checking every file (see the module docstring).

    Returns:
        (sidecar dict, model tensors, optimizer tensors or None, checkpoint dir).

    Raises:
        CheckpointError: naming the file and the field or tensor that is missing or damaged.
    """
    ckpt = resolve_checkpoint(path)
    sidecar = read_sidecar(ckpt / SIDECAR_FILE)
    if "sha256" not in sidecar:
        warnings.warn(f"{ckpt}: {SIDECAR_FILE} has no sha256 field (written before checksums); "
                      "its tensor files are not verified", stacklevel=2)
    weights = read_tensors(ckpt / MODEL_FILE, sidecar)
    optim = read_tensors(ckpt / OPTIMIZER_FILE, sidecar) if with_optimizer else None
    return sidecar, weights, optim, ckpt


def read_sidecar(path: Path) -> dict:
    """Parse and check a checkpoint.json (bounded; see the module docstring for its fields)."""
    raw = read_regular_file(path, limit=MAX_SIDECAR_BYTES)
    try:
        doc = from_jsonable(json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 at byte offset {exc.start}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError says where (line, column, char offset)
        raise CheckpointError(f"{path}: {exc}") from None
    check_sidecar(doc, path)
    return doc


def read_tensors(path: Path, sidecar: dict) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, after its SHA-256 (where the sidecar has one) and before use
    every floating-point value is checked finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_regular_file(path)
    sums = sidecar.get("sha256")
    if sums is not None:
        if path.name not in sums:
            raise CheckpointError(f"{path.parent / SIDECAR_FILE}: field sha256 has no entry for {path.name}")
        if hashlib.sha256(data).hexdigest() != sums[path.name]:
            raise CheckpointError(f"{path}: its SHA-256 differs from the one in {SIDECAR_FILE}: "
                                  "the file is damaged or was replaced")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {name[:100]!r} holds NaN or infinity")
    return tensors


# ----- the sidecar's schema ---------------------------------------------------------------------
def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Fields:
    """Field-by-field checks of one JSON object, with errors that name the file and the field."""

    def __init__(self, path, doc, where: str = ""):
        self.path, self.where = path, where
        if not isinstance(doc, dict):
            raise self.error("", f"must be an object, got {_kind(doc)}")
        self.doc = doc

    def error(self, key: str, what: str) -> CheckpointError:
        field = f"{self.where}.{key}" if self.where and key else self.where or key
        return CheckpointError(f"{self.path}: " + (f"field {field} {what}" if field else f"the sidecar {what}"))

    def require(self, key: str) -> None:
        if key not in self.doc:
            raise self.error(key, "is missing")

    def get(self, key: str, ok, want: str):
        self.require(key)
        value = self.doc[key]
        if not ok(value):
            raise self.error(key, f"must be {want}, got {_kind(value)}")
        return value

    def int(self, key: str, lo: int = 0, hi: int | None = None) -> int:
        value = self.get(key, _is_int, "an int")
        if value < lo or hi is not None and value >= hi:
            raise self.error(key, f"must be in [{lo}, {hi if hi is not None else 'inf'}), got {value}")
        return value

    def sub(self, key: str) -> _Fields:
        self.get(key, lambda v: isinstance(v, dict), "an object")
        return _Fields(self.path, self.doc[key], f"{self.where}.{key}" if self.where else key)

    def words(self, key: str, n: int, end: int) -> None:
        words = self.get(key, lambda v: isinstance(v, list) and len(v) == n and all(_is_int(x) for x in v),
                         f"a list of {n} ints")
        if not all(0 <= w < end for w in words):
            raise self.error(key, f"must hold ints in [0, {end})")


def check_sidecar(doc, path) -> None:
    """Raise CheckpointError naming the first field of a sidecar that is missing or of the wrong
    type (the structure the module docstring lists; config contents are checked by the configs)."""
    top = _Fields(path, doc)
    version = top.get("format_version", _is_int, "an int")
    if version != FORMAT_VERSION:
        raise top.error("format_version", f"is {version}, expected {FORMAT_VERSION}")
    top.int("step", 0, STEP_END)
    if "sha256" in doc:
        sums = top.sub("sha256")
        for key, value in doc["sha256"].items():
            if key not in (MODEL_FILE, OPTIMIZER_FILE):
                raise sums.error("", f"names an unknown file {key[:40]!r}")
            sums.get(key, lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None, "64 hex digits")
        sums.require(MODEL_FILE)
    for key in ("model_config", "train_config"):
        top.sub(key)
    data = top.sub("data")
    data.get("env_id", lambda v: isinstance(v, str), "a string")
    for key in ("episodes", "steps", "train_episodes", "val_episodes"):
        data.int(key)
    for key in ("observation_space", "action_space"):
        data.require(key)
        try:
            check_space_dict(doc["data"][key])
        except SpaceError as exc:
            raise data.error(key, f"is not a valid space: {str(exc)[:200]}") from None
    sampler = top.sub("sampler")
    for key in ("seed", "stream_len", "num_samples"):
        sampler.int(key, 0, _U64)
    for key in ("batch_size", "seq_len"):
        sampler.int(key, 1, _U64)
    rng = sampler.sub("rng")
    rng.words("state", 2, _U64)
    rng.words("inc", 2, _U64)
    rng.int("has_uint32", 0, 2)
    rng.int("uinteger", 0, 2**32)
    optim = top.sub("optimizer")
    if doc["optimizer"]:
        optim.get("param_groups", lambda v: isinstance(v, list) and all(isinstance(g, dict) for g in v),
                  "a list of objects")
        scalars = optim.sub("scalars")
        for key in doc["optimizer"]["scalars"]:
            scalars.get(key, _is_number, "a number")


# ----- optimizer state --------------------------------------------------------------------------
# AdamW's per-parameter state; "max_exp_avg_sq" only with amsgrad.
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                         where) -> None:
    """Load an AdamW optimizer's state from checkpoint parts, checked against its own structure first.

    Args:
        optimizer: the optimizer over the model's parameters, freshly made.
        tensors: "IDX.KEY" -> tensor, from optimizer.safetensors (without the RNG entry).
        meta: the sidecar's "optimizer" field.
        where: the checkpoint directory, for messages.

    Raises:
        CheckpointError: naming the file and the group, parameter or key that does not fit.
    """
    sidecar, tensor_file = Path(where) / SIDECAR_FILE, Path(where) / OPTIMIZER_FILE
    own = optimizer.state_dict()["param_groups"]
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(own):
        raise CheckpointError(f"{sidecar}: field optimizer.param_groups must list {len(own)} groups")
    params = {}
    for i, (saved, mine) in enumerate(zip(groups, own)):
        if set(saved) != set(mine) or saved["params"] != mine["params"]:
            raise CheckpointError(f"{sidecar}: field optimizer.param_groups[{i}] does not describe this "
                                  f"optimizer (keys {sorted(mine)}, params {mine['params'][:3]}...)")
        for key, value in mine.items():
            if not _same_kind(saved[key], value):
                raise CheckpointError(f"{sidecar}: field optimizer.param_groups[{i}].{key} does not fit this "
                                      f"optimizer (got {_kind(saved[key])}, expected like {value!r})")
        params.update(zip(mine["params"], optimizer.param_groups[i]["params"]))
    state: dict[int, dict] = {}
    for source, entries in ((tensor_file, tensors), (sidecar, meta["scalars"])):
        for name, val in entries.items():
            idx, _, key = name.partition(".")
            if not (idx.isascii() and idx.isdigit() and int(idx) in params and key in ("step", *_MOMENTS)):
                raise CheckpointError(f"{source}: entry {name[:60]!r} is not IDX.KEY of a parameter's AdamW state")
            shape = () if key == "step" else params[int(idx)].shape
            if key != "step" and not torch.is_tensor(val):
                raise CheckpointError(f"{source}: entry {name!r} must be a tensor")
            if torch.is_tensor(val) and (not val.is_floating_point() or val.shape != shape):
                raise CheckpointError(f"{source}: tensor {name!r} has {val.dtype} {list(val.shape)}, "
                                      f"expected a float tensor of shape {list(shape)}")
            state.setdefault(int(idx), {})[key] = val
    amsgrad = any(g.get("amsgrad") for g in groups)
    need = {"step", *_MOMENTS[: 3 if amsgrad else 2]}
    for idx, entries in state.items():
        if set(entries) != need:
            raise CheckpointError(f"{tensor_file}: parameter {idx} has state {sorted(entries)}, "
                                  f"expected {sorted(need)}")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{tensor_file}: the optimizer state does not load ({exc})") from None


def _same_kind(saved, own) -> bool:
    """Whether a saved param_group value has the type of the optimizer's own (JSON turns tuples into lists)."""
    if own is None or isinstance(own, (bool, str)):
        return type(saved) is type(own)
    if _is_number(own):
        # A float, or an int small enough to become one: the optimizer computes with it.
        return _is_number(saved) and (math.isfinite(saved) if isinstance(saved, float) else abs(saved) <= 2**53)
    if isinstance(own, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(own) and all(map(_same_kind, saved, own))
    return False
