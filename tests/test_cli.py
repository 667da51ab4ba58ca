"""Every CLI subcommand runs end to end with tiny settings; bad input exits non-zero with a message."""

import dataclasses
import json
import re

import pytest

from worldssm.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "data"
    assert main(["collect", "--env", "Pendulum-v1", "--agents", "2", "--steps", "250", "--out", str(out)]) == 0
    return out


def test_collect_train_eval(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "DEBUG", "--steps", "4",
                 "--batch-size", "2", "--seq-len", "16", "--log-every", "2", "--no-progress"]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), "--steps", "6", "--resume", "--no-progress"]) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 6]
    assert main(["eval", "--checkpoint", str(run), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--context", "8"]) == 0
    out = capsys.readouterr().out
    assert "repeat" in out and (tmp_path / "ev" / "eval.json").is_file()


@pytest.mark.parametrize("progress", [False, True])
def test_quickstart_tiny(tmp_path, capsys, progress):
    flags = [] if progress else ["--no-progress"]
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--agents", "2", "--env-steps", "250",
                 "--preset", "DEBUG", "--steps", "4", *flags]) == 0
    out = capsys.readouterr().out
    assert "report:" in out
    head = json.loads((tmp_path / "qs" / "eval" / "headline.json").read_text())
    assert head["train_steps"] == 4 and head["h1_model"] > 0
    assert (tmp_path / "qs" / "eval" / "report.md").read_text().startswith("# worldssm quickstart report")


def test_damaged_data_is_named_with_offset(data, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    shard = sorted(data.glob("*.wsr"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bad / shard.name).write_bytes(bytes(raw))
    code = main(["train", "--data", str(bad), "--out", str(tmp_path / "r"), "--preset", "DEBUG", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert shard.name in err and "byte offset" in err and "Traceback" not in err


def test_every_subcommand_has_help(capsys):
    from worldssm.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: worldssm " + name in capsys.readouterr().out


def config_flags(command):
    """(flag, help line) for every config field `command` offers as a flag."""
    from worldssm.commands.flags import field_help
    from worldssm.commands.quickstart import TRAIN_FLAGS, QuickstartConfig
    from worldssm.train.config import TrainConfig
    from worldssm.train.evaluate import EvalConfig

    groups = {"train": [(TrainConfig, None)], "eval": [(EvalConfig, None)],
              "quickstart": [(QuickstartConfig, None), (TrainConfig, TRAIN_FLAGS)]}[command]
    return [("--" + f.name.replace("_", "-"), field_help(cls)[f.name])
            for cls, only in groups for f in dataclasses.fields(cls) if only is None or f.name in only]


@pytest.mark.parametrize("command", ["train", "eval", "quickstart"])
def test_help_lists_every_config_field_with_its_help_line(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: help lines stay whole
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, help_line in config_flags(command):
        # The option, its metavar or --no- twin, then its help line.
        assert re.search(re.escape(flag) + r"(, --no-\S+| \S+)? " + re.escape(help_line), text), flag


REQUIRED = {"train": ["--data", "{tmp}/none", "--out", "{tmp}/out"],
            "eval": ["--checkpoint", "{tmp}/none", "--data", "{tmp}/none", "--out", "{tmp}/out"],
            "quickstart": ["--out", "{tmp}/out"]}
BAD_VALUES = [
    ("train", ["--steps", "0"], "--steps must be >= 1, got 0"),
    ("train", ["--preset", "FOO"], "argument --preset: invalid choice: 'FOO'"),
    ("train", ["--lr", "nan"], "--lr must be finite and > 0, got nan"),
    ("train", ["--lr", "-1"], "--lr must be finite and > 0, got -1.0"),
    ("train", ["--lr", "inf"], "--lr must be finite and > 0, got inf"),
    ("train", ["--grad-clip", "nan"], "--grad-clip must be finite and > 0, got nan"),
    ("train", ["--weight-decay", "nan"], "--weight-decay must be finite and >= 0, got nan"),
    ("train", ["--val-fraction", "1.0"], "--val-fraction must be in [0, 1), got 1.0"),
    ("train", ["--val-fraction", "nan"], "--val-fraction must be in [0, 1), got nan"),
    ("train", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ("train", ["--seed", "-5"], "--seed must be in [0, 2**63), got -5"),
    ("train", ["--seed", str(2**63)], f"--seed must be in [0, 2**63), got {2**63}"),
    ("train", ["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ("eval", ["--context", "0"], "--context must be >= 1, got 0"),
    ("eval", ["--max-windows", "0"], "--max-windows must be >= 1, got 0"),
    ("eval", ["--stride", "0"], "--stride must be >= 1, got 0"),
    ("eval", ["--seed", "-5"], "--seed must be in [0, 2**63), got -5"),
    ("eval", ["--split", "test"], "argument --split: invalid choice: 'test'"),
    ("eval", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ("quickstart", ["--steps", "0"], "--steps must be >= 1, got 0"),
    ("quickstart", ["--preset", "FOO"], "argument --preset: invalid choice: 'FOO'"),
    ("quickstart", ["--seed", "-5"], "--seed must be in [0, 2**63), got -5"),
    ("quickstart", ["--agents", "0"], "--agents must be >= 1, got 0"),
    ("quickstart", ["--env-steps", "0"], "--env-steps must be >= 1, got 0"),
    ("quickstart", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ("train", ["--threads", "-3"], "--threads must be >= 0, got -3"),
    ("train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


@pytest.mark.parametrize("command, flags, message", BAD_VALUES, ids=[f"{c} {' '.join(f)}" for c, f, _ in BAD_VALUES])
def test_bad_values_exit_2_with_one_error_line(command, flags, message, tmp_path, capsys):
    argv = [command, *(a.format(tmp=tmp_path) for a in REQUIRED[command]), *flags]
    try:
        code, from_argparse = main(argv), False
    except SystemExit as exc:  # argparse's own errors (type, choices) exit through SystemExit
        code, from_argparse = exc.code, True
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # argparse's errors too: one line, no usage dump
    assert lines[0] == f"worldssm {command}: error: {message}" or (
        from_argparse and lines[0].startswith(f"worldssm {command}: error: {message}")
        and lines[0].endswith(f"(see worldssm {command} --help)"))
    assert not (tmp_path / "out").exists()  # rejected before any work started


@pytest.mark.parametrize("command, flags", [
    ("plan", ["--checkpoint", "{tmp}/none"]),
    ("quickstart", ["--out", "{tmp}/out"]),
    ("train", REQUIRED["train"]),
    ("bench", ["dream", "--out", "{tmp}/out"]),
])
def test_device_cuda_without_cuda_is_one_error_line_before_any_work(command, flags, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([command, *(a.format(tmp=tmp_path) for a in flags), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"worldssm {command}: error: device 'cuda' was requested but torch sees no CUDA device"
    assert not (tmp_path / "out").exists()


def test_our_warnings_are_one_line(tmp_path, capsys):
    """A version-1 shard loads with a warning: one line naming the command, no source location."""
    import shutil
    from pathlib import Path

    fixtures = Path(__file__).parent / "data" / "fixtures"
    shards = sorted(fixtures.glob("v1-vector.wsr"))
    assert shards, "the version-1 fixtures are missing"
    data = tmp_path / "old"
    data.mkdir()
    shutil.copy(shards[0], data / shards[0].name)
    main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "DEBUG", "--steps", "1",
          "--batch-size", "1", "--seq-len", "2", "--no-progress"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines and all(line.startswith("worldssm train: warning: ") for line in lines), lines
    assert not any("iter_shard" in line or ".py:" in line for line in lines)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli_run") / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "DEBUG", "--steps", "2",
                 "--batch-size", "2", "--seq-len", "16", "--no-progress"]) == 0
    return run


NO_CUDA = pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="needs a machine without CUDA")
TRAIN = ["train", "--data", "{data}", "--preset", "DEBUG", "--steps", "2", "--batch-size", "2", "--seq-len", "16",
         "--no-progress"]
EVAL = ["eval", "--checkpoint", "{run}", "--data", "{data}", "--context", "8"]
MISUSE = [
    ("seq-len longer than the data", [*TRAIN, "--out", "{tmp}/r", "--seq-len", "100000"],
     r"cannot train on \S+ with this config: the dataset has \d+ steps in total, fewer than seq_len=100000.*"
     r"\(the training split: \d+ of the data's \d+ steps; val_fraction 0.1 holds out \d+\)"),
    ("out names a file", [*TRAIN, "--out", "{file}"], r"\S+a_file exists and is not a directory"),
    ("cuda without CUDA", [*TRAIN, "--out", "{tmp}/r", "--device", "cuda"], "device 'cuda' was requested", NO_CUDA),
    ("a non-empty run without flags", [*TRAIN, "--out", "{run}"],
     r"run directory \S+ is not empty .*pass --resume .* or --overwrite"),
    ("resume and overwrite", [*TRAIN, "--out", "{run}", "--resume", "--overwrite"], "exclude each other"),
    ("resume where nothing is", [*TRAIN, "--out", "{tmp}/r", "--resume"], r"no checkpoint found at \S+/r"),
    ("eval out names a file", [*EVAL, "--out", "{file}"], r"\S+a_file exists and is not a directory"),
    ("eval data missing", ["eval", "--checkpoint", "{run}", "--data", "{tmp}/none", "--out", "{tmp}/ev"],
     r"rollout path \S+none does not exist"),
    ("eval checkpoint missing", ["eval", "--checkpoint", "{tmp}/none", "--data", "{data}", "--out", "{tmp}/ev"],
     r"no checkpoint found at \S+none"),
    ("eval context longer than episodes", [*EVAL, "--out", "{tmp}/ev", "--context", "100000"],
     r"no episode is longer than the context \(100000 steps\)"),
    ("eval cuda without CUDA", [*EVAL, "--out", "{tmp}/ev", "--device", "cuda"], "device 'cuda' was requested",
     NO_CUDA),
    ("quickstart out names a file", ["quickstart", "--out", "{file}"], r"\S+a_file exists and is not a directory"),
    ("quickstart cuda without CUDA", ["quickstart", "--out", "{tmp}/qs", "--device", "cuda"],
     "device 'cuda' was requested", NO_CUDA),
    ("bench out names a file", ["bench", "soak", "--out", "{file}", "--agents", "10", "--seconds", "600"],
     r"--out \S+a_file is a file"),
    ("soak warm-up past half the run", ["bench", "soak", "--out", "{tmp}/r", "--seconds", "10", "--warmup-s", "8"],
     r"--warmup-s 8.0 must lie in \[0, --seconds / 2 = 5\]"),
    ("soak kill without ray", ["bench", "soak", "--out", "{tmp}/r", "--kill"], "--kill needs --backend ray"),
    ("fidelity too few updates", ["bench", "fidelity", "--out", "{tmp}/r", "--work", "{tmp}/ev", "--envs",
                                  "Pendulum-v1", "--train-steps", "1"], r"--train-steps must be in \[2, 10\*\*8\)"),
    ("fidelity re-evaluation with updates", ["bench", "fidelity", "--out", "{tmp}/r", "--work", "{tmp}/ev",
                                             "--reevaluate", "{file}", "--train-steps", "100"],
     "--train-steps trains runs; --reevaluate evaluates"),
    ("fidelity resume without a budget", ["bench", "fidelity", "--out", "{tmp}/r", "--work", "{tmp}/ev", "--resume"],
     "--resume needs --train-steps"),
    ("fidelity resume with nothing to resume", ["bench", "fidelity", "--out", "{tmp}/r", "--work", "{tmp}/ev",
                                                "--envs", "Pendulum-v1", "--resume", "--train-steps", "10"],
     "Pendulum-v1: nothing to resume in"),
    ("plan with an unknown env", ["plan", "--checkpoint", "{run}", "--episodes", "1", "--env", "Foo-v0"],
     "unknown env 'Foo-v0'"),
    ("plan out names a directory", ["plan", "--checkpoint", "{run}", "--episodes", "1", "--out", "{tmp}"],
     r"--out \S+ is a directory; give a file name"),
    ("plan out in a missing folder", ["plan", "--checkpoint", "{run}", "--episodes", "1", "--out", "{tmp}/ev/x.json"],
     r"--out \S+x.json': its folder \S+ev' does not exist"),
    ("simulate with an unknown env", ["simulate", "--checkpoint", "{run}", "--env", "Foo-v0", "--backend", "local",
                                      "--ticks", "2", "--out", "{tmp}/r"], "unknown env 'Foo-v0'"),
    ("simulate with env arguments the env does not take",
     ["simulate", "--checkpoint", "{run}", "--env-kwargs", '{{"bogus": 1}}', "--backend", "local", "--ticks", "2",
      "--out", "{tmp}/r"], "'Pendulum-v1' does not take these arguments"),
    ("simulate with the greedy agent outside swarm_v0", ["simulate", "--checkpoint", "{run}", "--agent", "greedy",
                                                         "--backend", "local", "--ticks", "2", "--out", "{tmp}/r"],
     "the greedy agent reads a swarm_v0 env's food"),
    ("play screenshot in a missing folder", ["play", "--checkpoint", "{run}", "--frames", "2", "--screenshot",
                                             "{tmp}/ev/x.png"], r"--screenshot \S+: its folder \S+ does not exist"),
    ("improve with an unknown env", ["improve", "--env", "Foo-v0", "--rounds", "1", "--out", "{tmp}/r"],
     "unknown env 'Foo-v0'"),
    ("improve out names a file", ["improve", "--env", "Pendulum-v1", "--out", "{file}"],
     "a file stands where a directory should be"),
    ("serve on a port out of range", ["serve", "--checkpoint", "{run}", "--port", "99999"],
     r"--port must be in 0\.\.65535"),
    ("bench env with no agents", ["bench", "env", "--agents", "0", "--out", "{tmp}/r"], "--agents must all be >= 1"),
]


@pytest.mark.parametrize("argv, message", [pytest.param(*c[1:3], marks=c[3:], id=c[0]) for c in MISUSE])
def test_misuse_is_one_error_line_and_exit_2(argv, message, data, trained, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a directory")
    before = sorted(p.name for p in trained.rglob("*"))
    names = {"data": data, "run": trained, "tmp": tmp_path, "file": tmp_path / "a_file"}
    code = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    command = argv[0]
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(rf"worldssm {command}: error: .*{message}", err), err
    assert sorted(p.name for p in trained.rglob("*")) == before  # the run is untouched
    assert not any((tmp_path / n).exists() for n in ("r", "ev", "qs"))  # nothing was started


def test_resume_names_the_settings_it_does_not_take(trained, data, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    argv = [a.format(data=data) for a in TRAIN] + ["--out", str(run), "--resume", "--lr", "0.5"]
    assert main(argv) == 0
    warn = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warn == ["worldssm train: warning: --resume trains on with the run's saved settings; ignored: "
                    "--lr 0.5 (the run's: 0.001)"], warn  # --preset DEBUG, --seq-len 16 ... match the run's


def test_a_full_disk_is_one_error_line_naming_the_file(data, trained, tmp_path, capsys, monkeypatch):
    import errno
    import os

    import worldssm.atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(worldssm.atomic.os, "fsync", full)
    code = main([a.format(run=trained, data=data) for a in EVAL] + ["--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("worldssm eval: error: No space left on device (") and "eval.json)" in err, err
    assert not [p for p in (tmp_path / "ev").iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_quickstart_report_shows_null_errors(tmp_path, capsys, monkeypatch):
    import worldssm.train.evaluate as evaluate_module

    real = evaluate_module.evaluate

    def with_nulls(*a, **k):
        result = real(*a, **k)
        result["obs_nmse"]["model"][0] = None  # what eval.json holds for a non-finite error
        return result

    monkeypatch.setattr(evaluate_module, "evaluate", with_nulls)
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--agents", "2", "--env-steps", "250",
                 "--preset", "DEBUG", "--steps", "2", "--no-progress"]) == 0
    assert "horizon 1: model n/a" in capsys.readouterr().out
    head = json.loads((tmp_path / "qs" / "eval" / "headline.json").read_text())
    assert head["h1_model"] is None and head["h1_ratio_repeat_over_model"] is None
    assert head["beats_both_naive_at_every_horizon"] is False
    assert "model n/a vs repeat-last" in (tmp_path / "qs" / "eval" / "report.md").read_text()
