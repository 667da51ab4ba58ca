"""CUDA-graph stepping: capture a slot-indexed step once per batch-size bucket, then replay.

`GraphedStep(fn, bucket_sizes, scratch_slot)` wraps any `fn(slots, reset, *inputs) -> outputs`
that advances rows `slots` of some preallocated state in place (a model's `step_slots`, a
`mamba2_step_*` call on a slab). A batch of B agents runs the graph of the smallest bucket >= B:
its real rows are copied into static input buffers, and the padded rows point at `scratch_slot`
with reset set, so they never read a real agent's state and only ever write the scratch slot.
The whole step must be capturable: static shapes and no host synchronisation inside `fn`.
"""

from __future__ import annotations

import bisect

import torch


class _Bucket:
    def __init__(self, graph, slots, reset, inputs, outputs):
        self.graph, self.slots, self.reset, self.inputs, self.outputs = graph, slots, reset, inputs, outputs


class GraphedStep:
    """One CUDA graph per batch bucket over static input buffers.

    Args:
        fn: `fn(slots int64 [B], reset bool [B], *inputs [B, ...]) -> Tensor | tuple | dict` of
            tensors with batch first. It must only touch state rows named by `slots`.
        bucket_sizes: the batch sizes to capture, e.g. (1, 8, 64, 512, 4096, 16384).
        scratch_slot: a slot index no agent owns; padded rows read nothing (reset) and write it.
        warmup: eager runs on a side stream before each capture (they compile Triton kernels);
            they run on padded rows only, so they change nothing but the scratch slot.
        pool: optional shared graph memory pool (`torch.cuda.graph_pool_handle()`).

    Calling returns `fn`'s outputs for the B real rows. They are views of the graph's static
    output buffers: valid until the next call with the same bucket; clone them to keep them.
    """

    def __init__(self, fn, bucket_sizes, scratch_slot: int, warmup: int = 2, pool=None):
        sizes = sorted({int(s) for s in bucket_sizes})
        if not sizes or sizes[0] < 1:
            raise ValueError(f"bucket_sizes must be positive integers, got {bucket_sizes!r}")
        self.fn = fn
        self.sizes = sizes
        self.scratch_slot = int(scratch_slot)
        self.warmup = int(warmup)
        self.pool = pool
        self.buckets: dict[int, _Bucket] = {}

    def bucket_for(self, batch: int) -> int:
        """The smallest captured bucket that holds `batch` rows."""
        i = bisect.bisect_left(self.sizes, batch)
        if i == len(self.sizes):
            raise ValueError(f"batch {batch} exceeds the largest bucket {self.sizes[-1]}; add a bucket")
        return self.sizes[i]

    def capture(self, size: int, example_inputs) -> _Bucket:
        """Capture the graph for bucket `size`, shaping static buffers like `example_inputs`."""
        if not torch.cuda.is_available():
            raise RuntimeError("GraphedStep needs CUDA: CUDA graphs do not exist on CPU; call fn directly there")
        device = example_inputs[0].device if example_inputs else torch.device("cuda")
        if device.type != "cuda":
            raise ValueError(f"GraphedStep inputs must be CUDA tensors, got {device}")
        slots = torch.full((size,), self.scratch_slot, dtype=torch.int64, device=device)
        reset = torch.ones(size, dtype=torch.bool, device=device)
        inputs = [torch.zeros(size, *x.shape[1:], dtype=x.dtype, device=device) for x in example_inputs]
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.fn(slots, reset, *inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.fn(slots, reset, *inputs)
        bucket = _Bucket(graph, slots, reset, inputs, outputs)
        self.buckets[size] = bucket
        return bucket

    def __call__(self, slots: torch.Tensor, reset: torch.Tensor, *inputs: torch.Tensor):
        b = slots.shape[0]
        size = self.bucket_for(b)
        bucket = self.buckets.get(size)
        if bucket is None:
            bucket = self.capture(size, inputs)
        if len(inputs) != len(bucket.inputs):
            raise ValueError(f"expected {len(bucket.inputs)} inputs, got {len(inputs)}")
        bucket.slots[:b].copy_(slots)
        bucket.reset[:b].copy_(reset)
        if b < size:
            bucket.slots[b:].fill_(self.scratch_slot)
            bucket.reset[b:].fill_(True)
        for static, x in zip(bucket.inputs, inputs):
            if static.shape[1:] != x.shape[1:] or static.dtype != x.dtype:
                raise ValueError(f"input {tuple(x.shape)} {x.dtype} does not match the captured "
                                 f"{tuple(static.shape)} {static.dtype}")
            static[:b].copy_(x)
        bucket.graph.replay()
        return _rows(bucket.outputs, b)

    def replay(self, size: int):
        """Replay bucket `size` on whatever its static buffers hold (for benchmarks)."""
        self.buckets[size].graph.replay()


def _rows(out, b: int):
    if isinstance(out, torch.Tensor):
        return out[:b]
    if isinstance(out, dict):
        return {k: _rows(v, b) for k, v in out.items()}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(*(_rows(v, b) for v in out))
    if isinstance(out, (tuple, list)):
        return type(out)(_rows(v, b) for v in out)
    return out
