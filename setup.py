"""Package discovery for worldssm.

The top-level folders kernels/, envs/ and agents/ are installed as worldssm.kernels,
worldssm.envs and worldssm.agents (bare `kernels` and `agents` are import names other
packages own). Subpackages are discovered, so adding one needs no edit here.
"""

from setuptools import find_packages, setup

MAPPED = {"worldssm.kernels": "kernels", "worldssm.envs": "envs", "worldssm.agents": "agents"}

packages = ["worldssm"] + [f"worldssm.{p}" for p in find_packages("worldssm")]
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{p}" for p in find_packages(folder)]

# The small CartPole-v1 model that `worldssm play` opens without a checkpoint (scripts/make_play_model.py).
# py.typed: worldssm's type hints are for users' type checkers too (PEP 561; tests/test_typing.py).
PACKAGE_DATA = {"worldssm": ["py.typed"],
                "worldssm.play": ["assets/cartpole/checkpoint.json", "assets/cartpole/model.safetensors"]}

setup(packages=packages, package_dir={"worldssm": "worldssm", **MAPPED}, package_data=PACKAGE_DATA)
