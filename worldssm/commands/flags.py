"""Command-line flags generated from a frozen config dataclass, so no flag restates a field.

`add_config_flags(parser, TrainConfig)` adds one `--field-name` option per field:

- the type comes from the field's annotation (`typing.get_type_hints`, so postponed annotations
  work): `int`, `float` and `str` as they are; `bool` as `--name/--no-name`; `X | None` takes a
  value of X or the word `none`. Other types (dict, tuple, a nested dataclass) cannot be flags:
  the caller lists them in `exclude` and sets them another way.
- the help text is the field's help line, read from the class source: a trailing `# comment` on
  the field's line, or a docstring right under the field (both styles exist in the repo). A field
  without one is an error when the parser is built, so a test that builds the parser catches it.
- `choices=` comes from the class-level `CHOICES: ClassVar[dict[str, tuple]]`, the same
  constants the config's `__post_init__` validates against.

`config_from_args(TrainConfig, args)` builds the config back from the parsed namespace; a
`ValueError` from its validation becomes a `WorldssmError`, which the CLI prints as one line.

Mistakes in the dataclass or in the call (no help line, a type that cannot be a flag, an unknown
name in `exclude`, `defaults`, `CHOICES` or the overrides) raise `TypeError`: they are bugs in
the code, not user input.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing

from worldssm.errors import WorldssmError

_SCALARS = (int, float, str)


def add_config_flags(parser, cls, *, prefix: str = "", exclude=(), defaults: dict | None = None) -> None:
    """Add one option per field of the dataclass `cls` to `parser`, in an argument group.

    Args:
        parser: an `argparse.ArgumentParser` (or a subcommand's parser).
        cls: a dataclass whose fields all have a help line.
        prefix: put before every flag and dest: prefix "eval" makes `--eval-seed` (dest
            `eval_seed`); pass the same prefix to `config_from_args`.
        exclude: field names that get no flag (fields of a type that cannot be a flag must be
            listed here); they keep their dataclass default unless `config_from_args` is given them.
        defaults: field name -> default shown and used instead of the dataclass default.

    Raises:
        TypeError: `cls` is not a dataclass, a flagged field has no help line or a type that
            cannot be a flag, or `exclude`, `defaults` or `cls.CHOICES` names an unknown field.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"add_config_flags needs a dataclass, got {cls!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    defaults = dict(defaults or {})
    choices = _choices(cls)
    for what, names in (("exclude", exclude), ("defaults", defaults), ("CHOICES", choices)):
        unknown = sorted(set(names) - set(fields))
        if unknown:
            raise TypeError(f"{cls.__name__}: {what} names fields it does not have: {unknown}")
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    group = parser.add_argument_group(cls.__name__, _class_summary(cls))
    for name, f in fields.items():
        if name in exclude:
            continue
        if name not in helps:
            raise TypeError(
                f"{cls.__name__}.{name} has no help line: add a trailing '# comment' on its line "
                "or a docstring right under it"
            )
        kwargs = _flag_kwargs(cls, name, hints[name], choices.get(name))
        default = defaults[name] if name in defaults else _field_default(f)
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if "choices" in kwargs and "default" in kwargs and kwargs["default"] not in kwargs["choices"]:
            raise TypeError(f"{cls.__name__}.{name}: default {kwargs['default']!r} is not one of {kwargs['choices']}")
        # argparse %-formats help text: a literal % in a help line must be doubled.
        action = group.add_argument(
            "--" + _dest(prefix, name).replace("_", "-"), dest=_dest(prefix, name),
            help=helps[name].replace("%", "%%"), **kwargs,
        )
        # Some Python versions' BooleanOptionalAction append the default themselves.
        if "default" in kwargs and "%(default)" not in action.help:
            action.help += " (default: %(default)s)"


def config_from_args(cls, args: argparse.Namespace, *, prefix: str = "", **overrides):
    """Build `cls` from the flags `add_config_flags` added, validating it.

    Args:
        cls: the dataclass given to `add_config_flags`.
        args: the parsed namespace.
        prefix: the prefix given to `add_config_flags`.
        **overrides: field values that win over the namespace (for fields set another way).
            Every other field is read from the namespace where it has the field's dest (also a
            dest that another flag shares: give two configs with common names a prefix each);
            fields in neither keep their dataclass default.

    Returns:
        The config instance.

    Raises:
        WorldssmError: the config's `__post_init__` rejected a value (its message is kept).
        TypeError: an override names a field `cls` does not have.
    """
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}")
    values = {n: getattr(args, _dest(prefix, n)) for n in names if hasattr(args, _dest(prefix, n))}
    values.update(overrides)
    try:
        return cls(**values)
    except ValueError as exc:  # "CollectConfig.agents must be ..." reads "--agents must be ..." here
        text = str(exc)
        for n in names:
            if hasattr(args, _dest(prefix, n)) and n not in overrides:
                flag = "--" + _dest(prefix, n).replace("_", "-")
                text = re.sub(rf"\b{cls.__name__}\.{n}\b", flag, text)
        raise WorldssmError(text) from exc


def field_help(cls) -> dict[str, str]:
    """Field name -> help line of a dataclass (and its dataclass bases), read from the source.

    A docstring right under the field wins over a trailing comment on its line; a docstring of
    several lines is joined into one. Fields without either are absent from the result.

    Raises:
        TypeError: the source of `cls` cannot be read (e.g. it was defined in a REPL).
    """
    return dict(_help_lines(cls))


@functools.lru_cache(maxsize=None)
def _help_lines(cls) -> tuple[tuple[str, str], ...]:
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__dataclass_fields__" in vars(klass):
            helps.update(_own_field_help(klass))
    return tuple(helps.items())


def _own_field_help(cls) -> dict[str, str]:
    node, lines = _class_node(cls)
    helps = {}
    body = node.body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            helps[stmt.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
            continue
        # ast columns count UTF-8 bytes, so cut the line as bytes.
        rest = lines[stmt.end_lineno - 1].encode()[stmt.end_col_offset:].decode().strip()
        if rest.startswith("#") and rest.lstrip("#").strip():
            helps[stmt.target.id] = rest.lstrip("#").strip()
    return helps


def _class_node(cls) -> tuple[ast.ClassDef, list[str]]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError) as exc:
        raise TypeError(f"cannot read the source of {cls.__qualname__} for its help lines ({exc})") from exc
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"the source of {cls.__qualname__} does not start with its class statement")
    return node, source.splitlines()


def _class_summary(cls) -> str | None:
    doc = ast.get_docstring(_class_node(cls)[0])
    return doc.splitlines()[0] if doc else None


def _choices(cls) -> dict[str, tuple]:
    choices = getattr(cls, "CHOICES", None) or {}
    if not isinstance(choices, dict):
        raise TypeError(f"{cls.__name__}.CHOICES must be a dict of field name -> tuple of values")
    return {name: tuple(values) for name, values in choices.items()}


def _dest(prefix: str, name: str) -> str:
    prefix = prefix.strip("-_").replace("-", "_")
    return f"{prefix}_{name}" if prefix else name


def _field_default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _flag_kwargs(cls, name: str, hint, choices: tuple | None) -> dict:
    """argparse keyword arguments (type, action, choices, metavar) for one field's annotation."""
    base, optional = _unwrap_optional(hint)
    if base is bool and not optional:
        if choices is not None:
            raise TypeError(f"{cls.__name__}.{name}: a bool field cannot have CHOICES")
        return {"action": argparse.BooleanOptionalAction}
    if base not in _SCALARS:
        shown = hint.__name__ if isinstance(hint, type) else str(hint)
        raise TypeError(
            f"{cls.__name__}.{name}: a field of type {shown} cannot be a flag (only int, float, str, "
            f"bool, and int, float or str | None can); pass exclude=({name!r},) and set it another way"
        )
    kwargs: dict = {"type": _or_none(base) if optional else base}
    if choices is not None:
        kwargs["choices"] = choices + (None,) if optional else choices
        if optional:  # the word typed is `none` (argparse would show the value, None)
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + ",none}"
    elif optional:
        kwargs["metavar"] = f"{base.__name__.upper()}|none"
    return kwargs


def _unwrap_optional(hint) -> tuple[object, bool]:
    """(X, True) for `X | None` or `Optional[X]`, else (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return hint, False


def _or_none(base):
    """An argparse type that reads the word `none` (any case) as None and anything else as `base`."""

    def parse(text: str):
        return None if text.lower() == "none" else base(text)

    # argparse names the type in its error message: "invalid int or none value: 'x'".
    parse.__name__ = f"{base.__name__} or none"
    return parse
