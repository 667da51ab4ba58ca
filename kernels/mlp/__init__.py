"""The world model's MLP layers (encoder and heads) as fused Triton launches (`triton.py`); the
specification is the model's own modules (`worldssm.model.nets.mlp`, run by `run_mlp`)."""
