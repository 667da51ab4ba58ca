"""The layer rules of DESIGN.md, read from the source: every `import` of every module, at module
level or inside a function, must point down the layers.

    leaf (spaces, checkpoint, codec, errors, atomic, locks, choices) -> numpy, msgpack, safetensors, torch
    kernels  -> leaf                              (torch, triton)
    model    -> kernels, leaf                     (no gymnasium, ray, pygame)
    engine   -> model, kernels, leaf              (no ray, no envs, no data, no train)
    envs     -> leaf                              (numpy, gymnasium, pygame; never torch)
    agents   -> engine, model, envs, leaf         (no sim, data, train; no ray)
    data     -> agents, envs, leaf                (the collector takes its agents from agents/)
    train    -> data, model, leaf
    sim      -> engine, model, envs, agents, leaf (ray only in sim/actors.py and sim/ray_start.py)
    commands, cli, bench, api, dream, play -> anything

A rule broken here names the file, the line and the import.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folders and the package each one is installed as.
FOLDERS = {"worldssm": ROOT / "worldssm", "worldssm.kernels": ROOT / "kernels",
           "worldssm.envs": ROOT / "envs", "worldssm.agents": ROOT / "agents"}
LEAF = {"spaces", "checkpoint", "codec", "errors", "atomic", "locks", "choices"}
HEAVY = {"gymnasium", "ray", "pygame", "pettingzoo", "matplotlib"}

# layer -> (worldssm layers it may import, third-party top-level modules it must not import)
RULES = {
    "leaf": (set(), HEAVY | {"triton", "worldssm"}),
    "kernels": ({"kernels"}, HEAVY),
    "model": ({"model", "kernels"}, HEAVY),
    "engine": ({"engine", "model", "kernels"}, HEAVY),
    "envs": ({"envs"}, {"torch", "triton", "ray", "matplotlib"}),
    "agents": ({"agents", "engine", "model", "kernels", "envs"}, {"ray"}),
    "data": ({"data", "agents", "envs", "engine", "model", "kernels"}, {"ray"}),
    "train": ({"train", "data", "model", "kernels"}, {"ray"}),
    "sim": ({"sim", "engine", "model", "kernels", "envs", "agents"}, {"ray"}),
}
# Imports a rule allows by name, each for a stated reason.
ALLOWED = {
    # converting a gymnasium space needs gymnasium; imported inside the two converters only
    ("worldssm/spaces.py", "gymnasium"),
    # the only sim modules that import Ray
    ("worldssm/sim/actors.py", "ray"),
    ("worldssm/sim/ray_start.py", "ray"),
}


def _subpackages() -> set[str]:
    top = FOLDERS["worldssm"]
    names = {p.stem for p in top.glob("*.py")} | {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    return {f"worldssm.{n}" for n in names} | set(FOLDERS)


SUBPACKAGES = _subpackages()


def sources():
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield path, ".".join([package, *parts])


def layer_of(module: str) -> str | None:
    """The layer of a worldssm module name, None for the top floor (commands, bench, ...)."""
    parts = module.split(".")
    if parts[0] != "worldssm":
        return None
    if len(parts) == 1:
        return None  # the package's own __init__
    if parts[1] in LEAF:
        return "leaf"
    return parts[1] if parts[1] in RULES else None


def imports(path: Path, module: str, text: str):
    """(line, absolute module name) of every import in a file's source `text`."""
    tree = ast.parse(text, str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield node.lineno, name
            for alias in node.names:  # `from worldssm import codec` imports worldssm.codec
                if name == "worldssm" and f"worldssm.{alias.name}" in SUBPACKAGES:
                    yield node.lineno, f"worldssm.{alias.name}"


def violations(read=Path.read_text):
    """Every broken rule as "file:line: what"; `read(path)` gives a file's source."""
    out = []
    for path, module in sources():
        layer = layer_of(module)
        if layer is None:
            continue
        may, must_not = RULES[layer]
        rel = path.relative_to(ROOT).as_posix()
        for line, name in imports(path, module, read(path)):
            top = name.split(".")[0]
            if top == "worldssm":
                target = layer_of(name)
                if name == "worldssm" or target in (None, "leaf") and name.split(".")[1] in LEAF:
                    continue  # leaf modules may be used by every layer
                if target is None or target not in may:
                    out.append(f"{rel}:{line}: {layer} imports {name} ({target or 'the top floor'})")
            elif top in must_not and (rel, top) not in ALLOWED:
                out.append(f"{rel}:{line}: {layer} imports {top}")
    return out


def test_imports_point_down_the_layers():
    assert violations() == []


@pytest.mark.parametrize("source, name, layer", [
    ("worldssm/engine/engine.py", "worldssm.sim.roster", "engine"),
    ("worldssm/engine/engine.py", "ray", "engine"),
    ("worldssm/model/mamba2.py", "gymnasium", "model"),
    ("envs/api.py", "torch", "envs"),
    ("worldssm/sim/simulation.py", "ray", "sim"),
    ("agents/base.py", "worldssm.sim", "agents"),
])
def test_a_broken_rule_is_caught(source, name, layer):
    """The checker itself: an import that breaks a rule, added to a real file, is reported."""
    target = ROOT / source

    def read(path):
        text = path.read_text()
        return text + f"\nimport {name}\n" if path == target else text

    found = [v for v in violations(read) if v.startswith(source)]
    assert len(found) == 1 and name in found[0] and f": {layer} imports" in found[0]
