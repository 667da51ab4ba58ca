"""Checkpoint files under hostile or clumsy edits: bounded sidecars, confined paths, checksums,
finite weights, and a CheckpointError naming the file and the field for every damaged part."""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from worldssm import checkpoint
from worldssm.checkpoint import from_jsonable, resolve_checkpoint, to_jsonable
from worldssm.errors import CheckpointError
from worldssm.model import load_model
from worldssm.model.world_model import WorldModel
from worldssm.train import TrainConfig, Trainer
from worldssm.train.evaluate import EvalConfig, evaluate

MODEL_FILE, OPTIMIZER_FILE, SIDECAR_FILE = "model.safetensors", "optimizer.safetensors", "checkpoint.json"


@pytest.fixture
def run(pendulum_run, tmp_path):
    """A private copy of the session's 2-step DEBUG run, free to damage."""
    return shutil.copytree(pendulum_run, tmp_path / "run")


def ckpt_of(run):
    return resolve_checkpoint(run)


def edit_sidecar(run, edit):
    """Apply `edit(doc)` to the latest checkpoint's sidecar (a dict of plain JSON)."""
    path = ckpt_of(run) / SIDECAR_FILE
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def rewrite_tensors(run, name, edit):
    """Apply `edit(tensors)` to a tensor file and record its new SHA-256, as a forger would."""
    ckpt = ckpt_of(run)
    tensors = load_file(str(ckpt / name))
    edit(tensors)
    save_file(tensors, str(ckpt / name))
    digest = hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    edit_sidecar(run, lambda doc: doc["sha256"].__setitem__(name, digest))


def resume(run, data):
    return Trainer(data, run, TrainConfig(preset="DEBUG", steps=4), resume=True).close()


# ----- class 7: what a sidecar may ask for ------------------------------------------------------
@pytest.mark.parametrize("dtype", ["(100000,)f8", "V100000", "S100000", "object", "float128", 7])
def test_sidecar_dtypes_come_from_the_codec_allow_list(run, dtype):
    def edit(doc):
        doc["data"]["observation_space"]["low"]["dtype"] = dtype

    edit_sidecar(run, edit)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: data\.observation_space\.low\.dtype must be one of"):
        load_model(run)


def test_from_jsonable_bounds_arrays(monkeypatch):
    assert from_jsonable(to_jsonable({"a": np.arange(6, dtype=np.int16).reshape(2, 3)}))["a"].dtype == np.int16
    bad = [
        ({"x": {"__ndarray__": [[1, 2], [3]], "dtype": "int32"}}, r"x: array data is ragged"),
        ({"x": {"__ndarray__": [1, "a"], "dtype": "int32"}}, r"x: array data must be nested lists of numbers"),
        ({"x": {"__ndarray__": [-1], "dtype": "uint8"}}, r"x: values do not fit dtype uint8"),
        ({"x": {"__ndarray__": [1], "dtype": "int32", "extra": 1}}, r"x: an array is exactly"),
        ({"x": {"__ndarray__": [[[[1]]]], "dtype": "int8"}}, None),
    ]
    for doc, message in bad:
        if message is None:
            assert from_jsonable(doc)["x"].shape == (1, 1, 1, 1)
            continue
        with pytest.raises(ValueError, match=message):
            from_jsonable(doc)
    deep = 0
    for _ in range(checkpoint.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ValueError, match=rf"nested more than {checkpoint.MAX_DEPTH} levels"):
        from_jsonable({"y": deep})
    monkeypatch.setattr("worldssm.checkpoint.MAX_ARRAY_ELEMENTS", 10)
    with pytest.raises(ValueError, match="exceeds .* 10 elements"):
        from_jsonable({"__ndarray__": list(range(11)), "dtype": "int64"})


@pytest.mark.parametrize("field, value, message", [
    # Terabytes if built: refused before anything is built, by the bounds on sizes.
    ("mlp_width", 10**12, r"model_config\.mlp_width is 1000000000000, more than the \d+ weights"),
    ("backbone.n_layers", 10**6, r"model_config\.backbone\.n_layers is 1000000, more than the \d+ tensors"),
    # Plausible sizes that do not match the file: refused by the shapes of a meta-device model.
    ("backbone.d_model", 25, r"model\.safetensors: tensor \S+ is torch\.float32 \[\d+(, \d+)*\], model_config"),
    ("reward_bins", 30, r"tensor reward_head\.\d+\.(weight|bias) is torch\.float32"),
    ("mlp_layers", 2, r"tensor \S+ is missing \(\d+ in all\): the file does not match model_config"),
])
def test_config_edits_are_checked_against_the_weights_before_building(run, monkeypatch, field, value, message):
    def edit(doc):
        target = doc["model_config"]
        *parents, last = field.split(".")
        for p in parents:
            target = target[p]
        target[last] = value

    edit_sidecar(run, edit)
    built = []
    real = WorldModel.__init__

    def spy(self, *a, **k):
        built.append(torch.get_default_device().type)
        real(self, *a, **k)

    monkeypatch.setattr(WorldModel, "__init__", spy)
    with pytest.raises(CheckpointError, match=message):
        load_model(run)
    assert "cpu" not in built  # nothing but a meta-device model was built


# ----- class 8: every path a run names stays inside it ------------------------------------------
def test_latest_must_name_a_checkpoint_inside_checkpoints(run, tmp_path):
    outside = shutil.copytree(ckpt_of(run), tmp_path / "outside" / "step-00000002")
    latest = run / "checkpoints" / "latest"
    names = ["../../outside/step-00000002", str(outside), "step-0000002", "step-00000002/..", "step-٠٠٠٠٠٠٠٢"]
    for text in names:
        latest.write_text(text + "\n")
        with pytest.raises(CheckpointError, match=r"latest does not hold a checkpoint name of the form step-NNNNNNNN$"):
            load_model(run)


def test_a_linked_latest_is_refused_without_echoing_its_target(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-do-not-print")
    latest = run / "checkpoints" / "latest"
    latest.unlink()
    latest.symlink_to(secret)
    with pytest.raises(CheckpointError, match="latest is a symbolic link") as exc:
        load_model(run)
    assert "hunter2" not in str(exc.value)


def test_linked_checkpoint_dirs_are_refused(run, tmp_path):
    ckpt = ckpt_of(run)
    outside = shutil.copytree(ckpt, tmp_path / "elsewhere")
    shutil.rmtree(ckpt)
    ckpt.symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"step-00000002 is a symbolic link"):
        load_model(run)
    ckpt.unlink()
    shutil.copytree(outside, ckpt)
    moved = shutil.move(str(run / "checkpoints"), tmp_path / "moved")
    (run / "checkpoints").symlink_to(moved)
    with pytest.raises(CheckpointError, match=r"checkpoints is a symbolic link"):
        load_model(run)


# ----- class 9: damaged files are CheckpointErrors naming the file and field ---------------------
SIDECAR_DAMAGE = [
    ("no data", lambda d: d.pop("data"), r"checkpoint\.json: field data is missing"),
    ("model_config a list", lambda d: d.__setitem__("model_config", []), r"field model_config must be an object"),
    ("step a string", lambda d: d.__setitem__("step", "2"), r"field step must be an int, got str"),
    ("step too large", lambda d: d.__setitem__("step", 10**8), r"field step must be in \[0, 100000000\)"),
    ("d_model a string", lambda d: d["model_config"]["backbone"].__setitem__("d_model", "24"),
     r"field model_config: BackboneConfig\.d_model must be int, got str"),
    ("unknown config field", lambda d: d["model_config"].__setitem__("wings", 2),
     r"field model_config: WorldModelConfig: unknown fields \['wings'\]"),
    ("space type", lambda d: d["data"]["action_space"].__setitem__("type", "tuple"),
     r"field data\.action_space is not a valid space"),
    ("sha256 not hex", lambda d: d["sha256"].__setitem__(MODEL_FILE, "zz"),
     r"field sha256\.model\.safetensors must be 64 hex"),
    ("version", lambda d: d.__setitem__("format_version", 2), r"field format_version is 2, expected 1"),
    ("sampler words", lambda d: d["sampler"]["rng"].__setitem__("state", [2**64, 0]),
     r"field sampler\.rng\.state must hold ints in \[0, 18446744073709551616\)"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in SIDECAR_DAMAGE], ids=[c[0] for c in SIDECAR_DAMAGE])
def test_damaged_sidecar_fields_are_named(run, edit, message):
    edit_sidecar(run, edit)
    with pytest.raises(CheckpointError, match=message):
        load_model(run)


@pytest.mark.parametrize("raw, message", [
    (b"\xff\xfe{}", r"checkpoint\.json: not UTF-8 at byte offset 0"),
    (b"[" * 100_000, r"checkpoint\.json: (JSON nested too deeply|.*nested more than)"),
    (b'{"format_version": 1, "step": 1e999}', r"field step must be an int, got float"),
    (b'{"step": ' + b"9" * 5000 + b"}", r"checkpoint\.json: Exceeds the limit"),
    (b'{"format_version": 1,', r"checkpoint\.json: Expecting property name .*char 21"),
])
def test_unparsable_sidecars_are_named(run, raw, message):
    (ckpt_of(run) / SIDECAR_FILE).write_bytes(raw)
    with pytest.raises(CheckpointError, match=message):
        load_model(run)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["optimizer"]["param_groups"][0].__setitem__("lr", "fast"),
     r"checkpoint\.json: field optimizer\.param_groups\[0\]\.lr does not fit this optimizer"),
    (lambda d: d["optimizer"]["param_groups"][0].__setitem__("params", [0]),
     r"field optimizer\.param_groups\[0\] does not describe this optimizer"),
    (lambda d: d["train_config"].__setitem__("seq_len", 0), r"field train_config: TrainConfig\.seq_len must be >= 1"),
    (lambda d: d["sampler"].__setitem__("stream_len", 7), r"field sampler: sampler state has stream_len=7"),
])
def test_damaged_training_state_is_named_on_resume(run, pendulum_data, edit, message):
    edit_sidecar(run, edit)
    with pytest.raises(CheckpointError, match=message):
        resume(run, pendulum_data)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.__setitem__("0.exp_avg", torch.zeros(3)),
     r"optimizer\.safetensors: tensor '0\.exp_avg' has torch\.float32 \[3\], expected a float tensor of shape"),
    (lambda t: t.pop("1.exp_avg_sq"), r"optimizer\.safetensors: parameter 1 has state \['exp_avg', 'step'\]"),
    (lambda t: t.__setitem__("x.y", torch.zeros(1)), r"entry 'x\.y' is not IDX\.KEY"),
    (lambda t: t.pop("__rng__.torch"), r"tensor __rng__\.torch is missing or not a torch RNG state"),
])
def test_damaged_optimizer_tensors_are_named_on_resume(run, pendulum_data, edit, message):
    rewrite_tensors(run, OPTIMIZER_FILE, edit)
    with pytest.raises(CheckpointError, match=message):
        resume(run, pendulum_data)


# Opens a FIFO's write end (blocking until someone opens it for reading), then closes it at once.
WRITER = "import os, sys; os.close(os.open(sys.argv[1], os.O_WRONLY)); print('opened', flush=True)"


@contextlib.contextmanager
def fifo_watchdog(fifo):
    """Yield a list that gets an entry if anyone opened `fifo` for reading during the block.

    A reader blocked opening a FIFO cannot be interrupted from Python (the open may happen in
    native code that holds the GIL and retries after a signal), so another process plays the
    writer: the reader's open then returns, it reads an empty file, and the test fails instead
    of hanging.
    """
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(fifo)], stdout=subprocess.PIPE, text=True)
    opened = []
    try:
        yield opened
    finally:
        if writer.poll() is None:
            writer.kill()
        out, _ = writer.communicate()
        opened.extend(out.split())


@pytest.mark.parametrize("name", [MODEL_FILE, OPTIMIZER_FILE, SIDECAR_FILE])
def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(run, pendulum_data, tmp_path, name):
    path = ckpt_of(run) / name
    path.unlink()
    os.mkfifo(path)
    calls = [lambda: resume(run, pendulum_data)]
    if name != OPTIMIZER_FILE:
        calls += [lambda: load_model(run), lambda: evaluate(run, pendulum_data, tmp_path / "ev")]
    for call in calls:
        with fifo_watchdog(path) as opened:
            with pytest.raises(CheckpointError, match=rf"{name} is not a regular file"):
                call()
        assert not opened, "a reader opened the FIFO (and would have hung without the watchdog)"


# ----- class 10: integrity ----------------------------------------------------------------------
def test_sidecar_records_the_sha256_of_each_tensor_file(run):
    ckpt = ckpt_of(run)
    sums = json.loads((ckpt / SIDECAR_FILE).read_text())["sha256"]
    assert sums == {n: hashlib.sha256((ckpt / n).read_bytes()).hexdigest() for n in (MODEL_FILE, OPTIMIZER_FILE)}


def test_a_flipped_exponent_bit_is_caught(run, pendulum_data, tmp_path):
    path = ckpt_of(run) / MODEL_FILE
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40  # the high byte of the last float32 (little-endian): an exponent bit
    path.write_bytes(bytes(raw))
    message = r"model\.safetensors: its SHA-256 differs from the one in checkpoint\.json"
    for call in (lambda: load_model(run), lambda: resume(run, pendulum_data),
                 lambda: evaluate(run, pendulum_data, tmp_path / "ev")):
        with pytest.raises(CheckpointError, match=message):
            call()


def test_a_nan_weight_is_refused_naming_the_tensor(run):
    def poison(tensors):
        tensors["in_proj.weight"][0, 0] = float("nan")

    rewrite_tensors(run, MODEL_FILE, poison)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'in_proj\.weight' holds NaN or infinity"):
        load_model(run)


def test_a_checkpoint_without_checksums_still_loads_with_a_warning(run):
    edit_sidecar(run, lambda doc: doc.pop("sha256"))
    with pytest.warns(UserWarning, match="no sha256 field .* not verified"):
        model, sidecar = load_model(run)
    assert sidecar["step"] == 2 and all(torch.isfinite(p).all() for p in model.parameters())
