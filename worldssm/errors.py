"""User-facing errors.

Every error a user can cause (bad input, damaged files, a missing optional dependency) is a
subclass of `WorldssmError`; the CLI prints its message and exits non-zero without a traceback.
"""

from __future__ import annotations


class WorldssmError(Exception):
    """Base class of errors caused by input, files or the environment rather than a bug."""


class DataError(WorldssmError):
    """A rollout file is damaged or disagrees with its header.

    Args:
        path: the file.
        offset: byte offset of the damaged record or field.
        message: what is wrong.
    """

    def __init__(self, path, offset: int, message: str):
        self.path = str(path)
        self.offset = int(offset)
        self.reason = message
        super().__init__(f"{self.path}: at byte offset {self.offset}: {message}")


class CheckpointError(WorldssmError):
    """A checkpoint is missing, damaged, or disagrees with the data or config it is used with."""


class MissingDependencyError(WorldssmError, ImportError):
    """An optional dependency is not installed; the message names the install command."""


def require(module: str, install: str):
    """Import an optional dependency or raise `MissingDependencyError` naming how to install it.

    Args:
        module: the import name, e.g. "ray".
        install: the pip requirement that provides it, e.g. "ray>=2.40".
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is required here but could not be imported ({exc}); "
            f"install it with: pip install '{install}'"
        ) from exc


class EnvError(WorldssmError, ValueError):
    """An env name that names no env, or arguments the env does not take."""


class AgentError(WorldssmError, ValueError):
    """An agent kind that does not exist, or cannot act where it was asked to."""


class TickRejected(WorldssmError, ValueError):
    """A Simulation call's inputs are invalid (an unknown agent, a bad action or start
    observation); nothing was sent and no env or engine state changed."""


class WorldssmWarning(UserWarning):
    """Something the user should know that does not stop the work (an old file format read, a
    check that could not be made); the CLI prints it as one line `worldssm CMD: warning: ...`."""
