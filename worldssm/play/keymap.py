"""Keyboard -> action for `worldssm play`: derived from the action space (and the env's id where a
better layout is known), or read from a keymap file of the user's own.

Keys are named as pygame names them (`pygame.key.name`: "left", "up", "space", "a", "1", ...),
so this module itself needs no pygame; the app turns key codes into names.

Discrete actions: a binding is a set of keys (a combo such as "up+space") and the action it
gives; of the bindings whose keys are all held, the largest combo wins, and among equals the one
whose key was pressed last. With no binding held the action is the keymap's `default` (the env's
no-op where it has one, else 0). Number keys 0-9 choose actions 0-9 unless the file says otherwise.

Box actions: a key pushes one dimension to its upper ("+") or lower ("-") bound while held;
a dimension with no key held sits at its rest value (0 where the bounds allow it, else the middle).
Both keys of one dimension held cancel to the rest value.

Keymap file, one binding per line, `#` starts a comment::

    left = 0          # Discrete: key (or combo a+b) = action index
    right = 1
    default = 0       # Discrete: the action with no key held
    up = 0+           # Box: key = dimension and direction
    down = 0-

A key that pygame does not know, a key bound twice, an action outside the space and a line that
is not `KEY = ACTION` are refused, naming the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldssm.errors import WorldssmError

# Keys the app itself uses (see worldssm.play.app.CONTROLS); a keymap may not bind them.
CONTROL_KEYS = ("m", "v", "p", "n", "return", "f", "r", "[", "]", "g", "t", "h", "escape", "tab")
# Box dimensions, in order: (key for -, key for +).
BOX_KEYS = (("left", "right"), ("down", "up"), ("a", "d"), ("s", "w"), ("j", "l"), ("k", "i"))
DIGITS = tuple(str(d) for d in range(10))

# Known envs: arrow bindings and the no-op (Discrete), or key -> (dim, sign) (Box).
_DISCRETE_LAYOUTS = {
    "CartPole": ({"left": 0, "right": 1}, 0),
    "MountainCar": ({"left": 0, "right": 2}, 1),
    "Acrobot": ({"left": 0, "right": 2}, 1),
    "LunarLander": ({"left": 1, "up": 2, "right": 3}, 0),
    "swarm_v0": ({"up": 1, "down": 2, "left": 3, "right": 4}, 0),
}
_BOX_LAYOUTS = {
    "LunarLander": {"up": (0, 1), "left": (1, -1), "right": (1, 1)},
}
_ATARI_WORDS = {"UP": "up", "DOWN": "down", "LEFT": "left", "RIGHT": "right", "FIRE": "space"}


class KeymapError(WorldssmError, ValueError):
    """A keymap that cannot drive the action space (named file and line for keymap files)."""


@dataclass
class Keymap:
    """What the held keys mean as an action.

    Attributes:
        kind: "discrete" or "box".
        combos: Discrete: (keys, action) pairs.
        default: Discrete: the action with no binding held.
        axes: Box: key -> (dimension, +1 or -1).
        low, high: Box: the action bounds (finite).
        rest: Box: the action with no key held.
    """

    kind: str
    combos: list[tuple[frozenset, int]] = field(default_factory=list)
    default: int = 0
    axes: dict[str, tuple[int, int]] = field(default_factory=dict)
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    rest: np.ndarray | None = None
    shape: tuple | None = None  # Box: the action's shape (the dimensions above are its flat entries)

    def action(self, held: dict[str, int]):
        """The action for `held` (key name -> the order it was pressed in; later is larger)."""
        if self.kind == "discrete":
            best, best_rank = self.default, (0, -1)
            for keys, action in self.combos:
                if keys <= held.keys():
                    rank = (len(keys), max(held[k] for k in keys))
                    if rank > best_rank:
                        best, best_rank = action, rank
            return np.int64(best)
        out = self.rest.copy()
        push = np.zeros_like(out)
        for key, (dim, sign) in self.axes.items():
            if key in held:
                push[dim] += sign
        out = np.where(push > 0, self.high, np.where(push < 0, self.low, out))
        return out.astype(np.float32).reshape(self.shape or out.shape)

    def describe(self) -> list[str]:
        """Lines for the screen: which keys do what."""
        if self.kind == "discrete":
            by_action: dict[int, list[str]] = {}
            for keys, action in self.combos:
                by_action.setdefault(action, []).append("+".join(sorted(keys)))
            lines = [f"{action}: {' / '.join(names)}" for action, names in sorted(by_action.items())]
            return lines + [f"no key: {self.default}"]
        dims: dict[int, list[str]] = {}
        for key, (dim, sign) in sorted(self.axes.items(), key=lambda kv: (kv[1][0], kv[1][1])):
            dims.setdefault(dim, []).append(f"{key} {'+' if sign > 0 else '-'}")
        lines = [f"dim {d}: {', '.join(keys)}" for d, keys in sorted(dims.items())]
        free = [d for d in range(self.rest.size) if d not in dims]
        if free:
            lines.append(f"dims {free} stay at rest")
        return lines


def _family(env_id: str) -> str:
    """The known layout's name for an env id ("LunarLanderContinuous-v3" -> "LunarLander")."""
    from worldssm.play.views import family

    name = family(env_id)
    return next((k for k in (*_DISCRETE_LAYOUTS, *_BOX_LAYOUTS) if name.startswith(k)), name)


def key_names() -> frozenset:
    """Every key name pygame has (its K_ constants' names; no display needed)."""
    from worldssm.errors import require

    pygame = require("pygame", "pygame>=2.5")
    return frozenset(pygame.key.name(getattr(pygame, k)) for k in dir(pygame) if k.startswith("K_")) - {""}


def _check_key(name: str, where: str) -> str:
    if name not in key_names():
        raise KeymapError(f"{where}: unknown key {name!r} (use pygame's key names: left, up, space, a, 1, ...)")
    if name in CONTROL_KEYS:
        raise KeymapError(f"{where}: key {name!r} is one of the app's own keys {CONTROL_KEYS}")
    return name


def _box_bounds(space: dict):
    low = np.asarray(space["low"], np.float64).reshape(-1)
    high = np.asarray(space["high"], np.float64).reshape(-1)
    low, high = np.where(np.isfinite(low), low, -1.0), np.where(np.isfinite(high), high, 1.0)
    rest = np.clip(0.0, low, high)
    return low.astype(np.float32), high.astype(np.float32), rest.astype(np.float32)


def derive(space: dict, env_id: str = "", action_meanings: list[str] | None = None) -> Keymap:
    """The keymap for an action space (SPACE dict): the env's known layout where there is one
    (CartPole, MountainCar, Acrobot, LunarLander, swarm_v0; Atari from its action meanings),
    else number keys for Discrete and arrows, WASD, JKLI per Box dimension."""
    family = _family(env_id)
    if space["type"] == "discrete":
        n = int(space["n"])
        combos = [(frozenset({DIGITS[a]}), a) for a in range(min(n, 10))]
        default = 0
        if action_meanings:
            for action, meaning in enumerate(action_meanings):
                words = [w for w in _ATARI_WORDS if w in meaning]
                if words:
                    combos.append((frozenset(_ATARI_WORDS[w] for w in words), action))
            default = action_meanings.index("NOOP") if "NOOP" in action_meanings else 0
        elif family in _DISCRETE_LAYOUTS:
            arrows, default = _DISCRETE_LAYOUTS[family]
            combos += [(frozenset({k}), a) for k, a in arrows.items() if a < n]
        elif n in (2, 3):  # left / right, and the middle action as the no-op of three
            combos += [(frozenset({"left"}), 0), (frozenset({"right"}), n - 1)]
            default = 1 if n == 3 else 0
        return Keymap("discrete", combos=combos, default=min(default, n - 1))
    if space["type"] != "box":
        raise KeymapError(f"play drives Discrete and Box actions, not {space['type']!r}")
    low, high, rest = _box_bounds(space)
    if family in _BOX_LAYOUTS and low.size >= 2:
        axes = dict(_BOX_LAYOUTS[family])
    else:
        axes = {}
        for dim, (minus, plus) in enumerate(BOX_KEYS[:low.size]):
            axes[minus], axes[plus] = (dim, -1), (dim, 1)
    if family == "LunarLander":
        rest = rest.copy()
        rest[0] = low[0]  # the main engine is off below 0; rest is "off", up fires it
    return Keymap("box", axes=axes, low=low, high=high, rest=rest, shape=tuple(space["shape"]))


def load(path, space: dict) -> Keymap:
    """Read a keymap file (see the module docstring) for the action space `space`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeymapError(f"keymap file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeymapError(f"keymap file {path} cannot be read: {exc}") from None
    discrete = space["type"] == "discrete"
    if not discrete and space["type"] != "box":
        raise KeymapError(f"play drives Discrete and Box actions, not {space['type']!r}")
    n = int(space["n"]) if discrete else int(np.prod(space["shape"]))
    bound: dict[str, int] = {}  # key -> line it was bound on
    combos, axes, default, seen_combos = [], {}, 0, {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}, line {number}"
        left, eq, right = line.partition("=")
        left, right = left.strip(), right.strip()
        if not eq or not left or not right:
            raise KeymapError(f"{where}: expected KEY = ACTION, got {raw.strip()!r}")
        if discrete and left == "default":
            default = _discrete_action(right, n, where)
            continue
        keys = [_check_key(k.strip(), where) for k in left.split("+")]
        if discrete:
            combo = frozenset(keys)
            if len(keys) == 1 and keys[0] in bound:
                raise KeymapError(f"{where}: key {keys[0]!r} is bound twice (first on line {bound[keys[0]]})")
            if combo in seen_combos:
                raise KeymapError(f"{where}: combo {left!r} is bound twice (first on line {seen_combos[combo]})")
            if len(keys) == 1:
                bound[keys[0]] = number
            seen_combos[combo] = number
            combos.append((combo, _discrete_action(right, n, where)))
        else:
            if len(keys) != 1:
                raise KeymapError(f"{where}: a Box dimension is driven by one key, got {left!r}")
            if keys[0] in bound:
                raise KeymapError(f"{where}: key {keys[0]!r} is bound twice (first on line {bound[keys[0]]})")
            bound[keys[0]] = number
            axes[keys[0]] = _box_axis(right, n, where)
    if not combos and not axes:
        raise KeymapError(f"keymap file {path} binds no key")
    if discrete:
        return Keymap("discrete", combos=combos, default=default)
    low, high, rest = _box_bounds(space)
    return Keymap("box", axes=axes, low=low, high=high, rest=rest, shape=tuple(space["shape"]))


def _discrete_action(text: str, n: int, where: str) -> int:
    try:
        action = int(text)
    except ValueError:
        raise KeymapError(f"{where}: the action must be an integer in [0, {n}), got {text!r}") from None
    if not 0 <= action < n:
        raise KeymapError(f"{where}: action {action} is outside Discrete({n})")
    return action


def _box_axis(text: str, dims: int, where: str) -> tuple[int, int]:
    sign = {"+": 1, "-": -1}.get(text[-1:])
    try:
        dim = int(text[:-1]) if sign else None
    except ValueError:
        dim = None
    if sign is None or dim is None:
        raise KeymapError(f"{where}: a Box action is DIMENSION+ or DIMENSION-, got {text!r}")
    if not 0 <= dim < dims:
        raise KeymapError(f"{where}: dimension {dim} is outside the action's {dims}")
    return dim, sign
