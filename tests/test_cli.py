"""Every CLI subcommand runs end to end with tiny settings; bad input exits non-zero with a message."""

import json

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
