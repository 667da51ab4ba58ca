"""The flag generator: one option per dataclass field, help from the source, choices from CHOICES."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import pytest

from worldssm.commands.flags import add_config_flags, config_from_args, field_help
from worldssm.errors import WorldssmError

MODES = ("fast", "slow")


@dataclass(frozen=True)
class Toy:
    """A toy config.

    More text that is not the summary.
    """

    CHOICES: ClassVar[dict[str, tuple]] = {"mode": MODES}

    count: int = 3  # how many things
    rate: float = 0.5
    """How fast, in units per tick;
    50% is half."""
    mode: str = "fast"  # which way to go
    amp: bool = True  # use the amplifier
    limit: int | None = None  # cap on things; none: no cap
    scale: Optional[float] = 2.0  # a scale; none: unscaled
    label: str = "é"  # a label (non-ASCII default before the comment)
    extra: dict = field(default_factory=dict)  # extra keyword arguments

    def __post_init__(self):
        if not self.count >= 1:
            raise ValueError(f"Toy.count must be >= 1, got {self.count}")
        if self.mode not in MODES:
            raise ValueError(f"Toy.mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class MoreToy(Toy):
    """A subclass adds a field; the base's help lines still count."""

    depth: int = 1  # how deep


@dataclass(frozen=True)
class NoHelp:
    """One field forgot its help line."""

    width: int = 4  # columns
    height: int = 3


@dataclass(frozen=True)
class Needs:
    """A field without a default."""

    name: str  # the name


@dataclass(frozen=True)
class BadDefault:
    """The default is not among the choices."""

    CHOICES: ClassVar[dict[str, tuple]] = {"mode": MODES}

    mode: str = "medium"  # which way to go


def toy_parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_flags(parser, Toy, exclude=("extra",), **kwargs)
    return parser


def parse_error(parser, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_help_lines_come_from_comments_and_docstrings():
    assert field_help(Toy) == {
        "count": "how many things",
        "rate": "How fast, in units per tick; 50% is half.",
        "mode": "which way to go",
        "amp": "use the amplifier",
        "limit": "cap on things; none: no cap",
        "scale": "a scale; none: unscaled",
        "label": "a label (non-ASCII default before the comment)",
        "extra": "extra keyword arguments",
    }
    assert field_help(MoreToy)["depth"] == "how deep" and field_help(MoreToy)["count"] == "how many things"
    assert field_help(NoHelp) == {"width": "columns"}


def test_no_flags_gives_the_dataclass_defaults():
    assert config_from_args(Toy, toy_parser().parse_args([])) == Toy()


def test_every_kind_of_field_parses():
    args = toy_parser().parse_args(["--count", "5", "--rate", "0.25", "--mode", "slow", "--no-amp",
                                    "--limit", "7", "--scale", "none", "--label", "b"])
    cfg = config_from_args(Toy, args, extra={"k": 1})
    assert cfg == Toy(count=5, rate=0.25, mode="slow", amp=False, limit=7, scale=None, label="b", extra={"k": 1})
    assert config_from_args(Toy, toy_parser().parse_args(["--amp", "--limit", "None"])).limit is None
    assert config_from_args(Toy, toy_parser().parse_args(["--scale", "3"])).scale == 3.0


def test_wrong_values_are_argparse_errors(capsys):
    parser = toy_parser()
    assert "invalid choice: 'medium'" in parse_error(parser, ["--mode", "medium"], capsys)
    assert "invalid int or none value: 'x'" in parse_error(parser, ["--limit", "x"], capsys)
    assert "invalid int value: '1.5'" in parse_error(parser, ["--count", "1.5"], capsys)


def test_choices_are_the_classes_constant():
    parser = toy_parser()
    (mode,) = [a for a in parser._actions if a.dest == "mode"]
    assert mode.choices == MODES


def test_help_shows_help_lines_and_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = " ".join(toy_parser(defaults={"count": 9}).format_help().split())
    assert "--count COUNT how many things (default: 9)" in text
    assert "How fast, in units per tick; 50% is half. (default: 0.5)" in text
    assert "--mode {fast,slow} which way to go (default: fast)" in text
    assert "--amp, --no-amp use the amplifier (default: True)" in text
    assert "--limit INT|none cap on things; none: no cap (default: None)" in text
    assert "Toy: A toy config." in text and "--extra" not in text
    assert toy_parser(defaults={"count": 9}).parse_args([]).count == 9


def test_a_field_without_default_is_a_required_flag(capsys):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Needs)
    assert "the following arguments are required: --name" in parse_error(parser, [], capsys)
    assert config_from_args(Needs, parser.parse_args(["--name", "n"])) == Needs("n")


def test_a_validation_error_becomes_a_worldssm_error():
    """The config's message is kept, with the field named by the flag that set it."""
    with pytest.raises(WorldssmError, match=r"^--count must be >= 1, got 0$"):
        config_from_args(Toy, toy_parser().parse_args(["--count", "0"]))
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toy, prefix="toy", exclude=("extra",))
    with pytest.raises(WorldssmError, match=r"^--toy-count must be >= 1, got 0$"):
        config_from_args(Toy, parser.parse_args(["--toy-count", "0"]), prefix="toy")
    with pytest.raises(WorldssmError, match=r"^Toy.count must be >= 1, got 0$"):  # set by the caller: no flag
        config_from_args(Toy, parser.parse_args([]), prefix="toy", count=0)


def test_prefix_names_flags_and_dests():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toy, prefix="toy", exclude=("extra",))
    args = parser.parse_args(["--toy-count", "2", "--no-toy-amp"])
    assert args.toy_count == 2 and not hasattr(args, "count")
    assert config_from_args(Toy, args, prefix="toy") == Toy(count=2, amp=False)


def test_a_field_without_help_fails_when_the_parser_is_built():
    with pytest.raises(TypeError, match=r"NoHelp.height has no help line"):
        add_config_flags(argparse.ArgumentParser(), NoHelp)
    add_config_flags(argparse.ArgumentParser(), NoHelp, exclude=("height",))


def test_a_field_that_cannot_be_a_flag_must_be_excluded():
    with pytest.raises(TypeError, match=r"Toy.extra: .*cannot be a flag.*exclude=\('extra',\)"):
        add_config_flags(argparse.ArgumentParser(), Toy)


@pytest.mark.parametrize("kwargs, what", [
    ({"exclude": ("extra", "nope")}, "exclude"),
    ({"exclude": ("extra",), "defaults": {"nope": 1}}, "defaults"),
])
def test_unknown_names_are_errors(kwargs, what):
    with pytest.raises(TypeError, match=f"{what} names fields it does not have: \\['nope'\\]"):
        add_config_flags(argparse.ArgumentParser(), Toy, **kwargs)


def test_bad_choices_and_overrides_are_errors():
    with pytest.raises(TypeError, match=r"default 'medium' is not one of \('fast', 'slow'\)"):
        add_config_flags(argparse.ArgumentParser(), BadDefault)

    @dataclass
    class Typo:
        CHOICES: ClassVar[dict] = {"mdoe": MODES}
        mode: str = "fast"

    with pytest.raises(TypeError, match=r"CHOICES names fields it does not have: \['mdoe'\]"):
        add_config_flags(argparse.ArgumentParser(), Typo)
    with pytest.raises(TypeError, match=r"Toy has no fields \['nope'\]"):
        config_from_args(Toy, argparse.Namespace(), nope=1)


def test_docstring_style_config_from_the_repo():
    from envs.swarm.config import SwarmConfig

    parser = argparse.ArgumentParser()
    add_config_flags(parser, SwarmConfig, exclude=("obstacle_radius",))
    args = parser.parse_args(["--n-agents", "5", "--arena-size", "none", "--action-mode", "continuous"])
    cfg = config_from_args(SwarmConfig, args)
    assert dataclasses.replace(SwarmConfig(), n_agents=5, action_mode="continuous") == cfg
    assert "Agents at reset; the population is refilled" in parser.format_help()
