"""Packaging: the folder mapping works in the editable install; light modules stay light."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mapped_packages_come_from_their_folders():
    import worldssm.agents
    import worldssm.envs
    import worldssm.kernels

    assert Path(worldssm.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"
    assert Path(worldssm.envs.__file__).resolve() == ROOT / "envs" / "__init__.py"
    assert Path(worldssm.agents.__file__).resolve() == ROOT / "agents" / "__init__.py"
    import worldssm.kernels.scan.ref  # subpackages map too

    assert Path(worldssm.kernels.scan.ref.__file__).resolve() == ROOT / "kernels" / "scan" / "ref.py"


def test_model_kernels_and_bench_import_only_their_dependencies():
    code = (
        "import sys, worldssm.model, worldssm.kernels, worldssm.kernels.step.ref, worldssm.codec, "
        "worldssm.checkpoint, worldssm.spaces\n"
        "heavy = {'gymnasium', 'ray', 'pygame', 'matplotlib', 'pettingzoo'}  # (torch itself may import tqdm)\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("worldssm")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for cmd in ("quickstart", "collect", "train", "eval"):
        assert cmd in out.stdout
