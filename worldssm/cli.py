"""The `worldssm` command line: one subcommand per module in worldssm.commands.

Each command module defines `HELP` (one line), `configure(parser)` and `run(args) -> int`, and
keeps heavy imports inside `run` so that `--help` is fast and `worldssm bench` works on a
machine that has only torch, triton, numpy, msgpack and safetensors.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from worldssm.errors import WorldssmError, WorldssmWarning

# What the disk or the file system refuses (full, read-only, no permission, over quota, too big):
# the user's environment, not a bug, so one line naming the file rather than a traceback.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}

COMMANDS = {
    "quickstart": "worldssm.commands.quickstart",
    "collect": "worldssm.commands.collect",
    "train": "worldssm.commands.train",
    "eval": "worldssm.commands.evaluate",
    "simulate": "worldssm.commands.simulate",
    "plan": "worldssm.commands.plan",
    "improve": "worldssm.commands.improve",
    "play": "worldssm.commands.play",
    "serve": "worldssm.commands.serve",
    "bench": "worldssm.commands.bench",
}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: `worldssm CMD: error: ...` and exit code 2 (no usage dump;
    `--help` shows the usage). Subcommand parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="worldssm", description="Mamba-2 world models for many agents at once.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(cmd)
        cmd.set_defaults(_run=module.run, _parser=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    args, extra = build_parser().parse_known_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # what was typed: which flags were given
    if extra:  # named by the subcommand's parser, so the error says which command refused them
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, WorldssmWarning):  # ours: one line, no source location
            print(f"worldssm {args.command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        if getattr(args, "device", None) == "cuda":
            _check_cuda()
        return int(args._run(args) or 0)
    except WorldssmError as exc:
        print(f"worldssm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"worldssm {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"worldssm {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


def _check_cuda() -> None:
    """--device cuda where torch has no CUDA device: the trainer's WorldssmError, before any work,
    for every command (not torch's assertion from deep inside the first transfer)."""
    from worldssm.train.trainer import pick_device

    pick_device("cuda")


if __name__ == "__main__":
    sys.exit(main())
