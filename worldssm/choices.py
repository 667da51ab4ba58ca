"""The fixed vocabularies shared by configs, runtime checks and CLI flags (a leaf: imports nothing).

One tuple per name, so a flag's `choices=` and the check that refuses a bad value can never
disagree. The CLI imports this without importing torch.
"""

MODES = ("real", "dream", "mixed")  # what a Simulation's or a served World's agents act in
BACKENDS = ("ray", "local")  # how a Simulation runs its actors
FALLBACKS = ("repeat", "random")  # how a served agent acts without its client's action
TORCH_DEVICES = ("cpu", "cuda")  # where a model runs when the user names it
STATE_DTYPES = ("float32", "bfloat16")  # how an Engine stores Mamba-2 SSM states (None: the model's config)
PRECISIONS = ("auto", "float32", "bfloat16")  # the backbone weights of an Engine ("auto": bf16 on CUDA)
