"""Which Triton path each `worldssm bench step` arm runs (no GPU needed to check the choice).

Here, not under tests/bench: importing the kernel modules before tests/kernels/conftest.py sets
TRITON_INTERPRET would define every kernel for a GPU the CPU machines do not have."""

from worldssm.bench.step import WORLD_MODEL_ARMS, arm_path, skip_mega
from worldssm.kernels.step.layer import MEGA_MAX_BATCH


def test_each_arm_names_its_path():
    assert arm_path("fused mega+graph").env["WORLDSSM_STEP_PATH"] == "mega"
    assert arm_path("fused layer nopdl+graph").env == {"WORLDSSM_STEP_PATH": "layer", "WORLDSSM_PDL": "0"}
    assert arm_path("fused v1+graph").env == {"WORLDSSM_STEP_PATH": "v1", "WORLDSSM_PDL": "0"}
    assert arm_path("fused split+graph").env == {"WORLDSSM_STEP_PATH": "split", "WORLDSSM_PDL": "1"}
    assert arm_path("fused+graph").env["WORLDSSM_STEP_PATH"] == "auto"


def test_the_one_launch_arm_only_where_it_serves_and_only_when_asked():
    arms = ("fused+graph", "fused mega+graph")
    assert skip_mega(arms, MEGA_MAX_BATCH) == arms
    assert skip_mega(arms, MEGA_MAX_BATCH + 1) == ("fused+graph",)  # it would time the layer path again
    assert not any(" mega" in a for a in WORLD_MODEL_ARMS)  # `bench step --mega` adds it
