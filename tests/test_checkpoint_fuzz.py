"""Seeded mutation test of everything that reads a checkpoint: load_model, Trainer(resume=True)
and evaluate see a few hundred damaged checkpoints (sidecar JSON with keys deleted, types
changed, deep nesting, huge numbers, bad dtype strings, invalid UTF-8; tensor files truncated or
with bytes flipped, some with the checksum forged to match) and raise only our own errors."""

import hashlib
import json
import random
import shutil
import signal
import time
import warnings

import pytest

from worldssm.checkpoint import resolve_checkpoint
from worldssm.errors import WorldssmError
from worldssm.model import load_model
from worldssm.train import TrainConfig, Trainer
from worldssm.train.evaluate import EvalConfig, evaluate

MODEL_FILE, OPTIMIZER_FILE, SIDECAR_FILE = "model.safetensors", "optimizer.safetensors", "checkpoint.json"
SEED = 20240611
CASES = 240
BAD_DTYPES = ["V1000000000", "(100000000,)f8", "S99", "object", "<M8[ns]", "float128", "i9", "", 3, None]
ODD_VALUES = [None, "x", "", 1.5, -1, 0, True, [], {}, [1, 2], 10**30, -(10**30), 1e308, "NaN"]
# Stand-ins that the JSON text of a mutation replaces with text json.dumps cannot write.
DEEP, HUGE_INT, INF = "@@deep@@", "@@hugeint@@", "@@inf@@"


def nodes(doc, path=()):
    """(path, value) of every node of a JSON document, depth first."""
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from nodes(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from nodes(v, path + (i,))


def set_at(doc, path, value):
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def mutate_sidecar(text: str, rng: random.Random) -> bytes:
    doc = json.loads(text)
    for _ in range(rng.choice([1, 1, 2, 3])):
        inner = [(p, v) for p, v in nodes(doc) if p]
        path, value = rng.choice(inner)
        op = rng.choice(["delete", "retype", "retype", "deep", "huge", "dtype", "inf"])
        if op == "delete":
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        elif op == "dtype":
            arrays = [p for p, v in nodes(doc) if isinstance(v, dict) and "dtype" in v]
            if arrays:
                set_at(doc, rng.choice(arrays) + ("dtype",), rng.choice(BAD_DTYPES))
        else:
            new = {"retype": rng.choice(ODD_VALUES), "deep": DEEP, "huge": HUGE_INT, "inf": INF}[op]
            set_at(doc, path, new)
    out = json.dumps(doc)
    depth = rng.choice([50, 2000, 100_000])
    out = out.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    out = out.replace(json.dumps(HUGE_INT), "9" * rng.choice([30, 5000])).replace(json.dumps(INF), "1e999")
    raw = out.encode()
    if rng.random() < 0.1:
        at = rng.randrange(len(raw))
        raw = raw[:at] + b"\xff\xc3" + raw[at:]  # invalid UTF-8
    if rng.random() < 0.05:
        raw = raw[: rng.randrange(len(raw))]
    return raw


def mutate_tensors(raw: bytes, rng: random.Random) -> bytes:
    raw = bytearray(raw)
    if rng.random() < 0.3:
        return bytes(raw[: rng.randrange(len(raw))])
    header = 8 + int.from_bytes(raw[:8], "little")
    for _ in range(rng.choice([1, 2, 8])):
        # Half the flips land in the 8-byte length or the JSON header, where parsing happens.
        at = rng.randrange(min(header, len(raw))) if rng.random() < 0.5 else rng.randrange(len(raw))
        raw[at] ^= 1 << rng.randrange(8)
    return bytes(raw)


@pytest.fixture
def fast_eval(monkeypatch):
    """evaluate() with the rollouts and the plot stubbed: this test is about reading files."""
    result = {"context": 8, "horizons": [1], "windows": 1, "obs_nmse": {"model": [0.5], "repeat_last": [1.0],
              "mean": [1.0]}, "reward_mae": {"model": [0.1]}, "termination_f1": [None], "valid_windows": [1]}
    monkeypatch.setattr("worldssm.train.evaluate.open_loop", lambda *a, **k: dict(result))
    monkeypatch.setattr("worldssm.train.evaluate.plot", lambda *a: None)


def test_damaged_checkpoints_raise_only_our_errors(pendulum_run, pendulum_data, tmp_path, fast_eval):
    run = shutil.copytree(pendulum_run, tmp_path / "run")
    ckpt = resolve_checkpoint(run)
    pristine = {name: (ckpt / name).read_bytes() for name in (MODEL_FILE, OPTIMIZER_FILE, SIDECAR_FILE)}
    cfg = TrainConfig(preset="DEBUG", steps=4)
    calls = {
        "load_model": lambda: load_model(run),
        "resume": lambda: Trainer(pendulum_data, run, cfg, resume=True).close(),
        "evaluate": lambda: evaluate(run, pendulum_data, tmp_path / "ev", EvalConfig(context=8)),
    }
    rng = random.Random(SEED)
    outcomes = {"ours": 0, "loaded": 0}

    def hang(*_):
        raise TimeoutError("a damaged checkpoint made a reader hang")

    old = signal.signal(signal.SIGALRM, hang)
    start = time.perf_counter()
    try:
        for case in range(CASES):
            files = dict(pristine)
            target = rng.choice([SIDECAR_FILE, SIDECAR_FILE, MODEL_FILE, OPTIMIZER_FILE])
            if target == SIDECAR_FILE:
                files[target] = mutate_sidecar(pristine[target].decode(), rng)
            else:
                files[target] = mutate_tensors(pristine[target], rng)
                if rng.random() < 0.5:  # a forger who fixes the checksum: the parser and checks must hold
                    doc = json.loads(files[SIDECAR_FILE])
                    doc.setdefault("sha256", {})[target] = hashlib.sha256(files[target]).hexdigest()
                    files[SIDECAR_FILE] = json.dumps(doc).encode()
            for name, raw in files.items():
                (ckpt / name).write_bytes(raw)
            for what, call in calls.items():
                signal.alarm(10)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        call()
                    outcomes["loaded"] += 1
                except WorldssmError:
                    outcomes["ours"] += 1
                except Exception as exc:  # noqa: BLE001: the point is to catch anything else
                    pytest.fail(f"case {case} ({target}), {what}: {type(exc).__name__}: {exc}"[:2000])
                finally:
                    signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    # Most mutations are caught; some (a flipped bit in a float, a harmless number) load fine.
    assert outcomes["ours"] > CASES and outcomes["loaded"] > 0, outcomes
    assert time.perf_counter() - start < 60
