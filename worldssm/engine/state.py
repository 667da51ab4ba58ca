"""The state slab: every agent's recurrent state in preallocated tensors, addressed by slot.

A slab holds, per named state (one per layer and kind, e.g. "0.conv", "0.ssm"), one tensor
[S + 1, ...] on one device: S usable slots plus one scratch row (`scratch_slot`) that no agent
ever owns, so padded rows of a CUDA-graph bucket have somewhere harmless to write. Agents are
slot indices; a free list makes join, leave and reset O(1) per agent. Capacity changes only
when `grow` is called: stepping never reallocates, so tensor addresses captured in a CUDA graph
stay valid until then.

Snapshots are msgpack (worldssm.codec, never pickle): the spec, the slots, and one array per
state with the rows of those slots. bfloat16 rows travel as their raw 16-bit patterns, so a
snapshot restores bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

from worldssm import codec
from worldssm.errors import WorldssmError

SNAPSHOT_FORMAT = 2  # 2: each state a list of row blocks; 1 (still read): one array per state
CHUNK_BYTES = 1 << 30  # a snapshot's arrays are cut into row blocks of at most this (msgpack's ext < 4 GiB)
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
           "uint8": torch.uint8}
_NAMES = {v: k for k, v in _DTYPES.items()}

Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]


class SlabError(WorldssmError):
    """A slot operation names slots that do not exist, are not owned, or repeat."""


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # raw bit patterns: the codec has no bfloat16
    return t.numpy()


def _from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def _row_blocks(a: np.ndarray) -> list[np.ndarray]:
    """`a` cut along its first axis into blocks of at most `CHUNK_BYTES` (one block if it fits)."""
    rows = max(1, CHUNK_BYTES // max(1, a[:1].nbytes))
    return [a[i:i + rows] for i in range(0, a.shape[0], rows)] or [a]


def _join_blocks(blocks, name: str) -> np.ndarray:
    if not isinstance(blocks, list) or not blocks or not all(isinstance(b, np.ndarray) for b in blocks):
        raise SlabError(f"snapshot state {name!r} must be a non-empty list of arrays")
    if any(b.shape[1:] != blocks[0].shape[1:] or b.dtype != blocks[0].dtype for b in blocks):
        raise SlabError(f"snapshot state {name!r}: its blocks differ in shape or dtype")
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


class StateSlab:
    """Per-agent state tensors with a fixed capacity of slots on one device.

    Args:
        spec: name -> (per-agent shape, dtype), e.g. `model.backbone.state_spec()`.
        capacity: number of slots S an agent can own.
        device: where the tensors live.
    """

    def __init__(self, spec: Spec, capacity: int, device="cpu"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        for name, (_, dtype) in spec.items():
            if dtype not in _NAMES:
                raise ValueError(f"state {name!r}: dtype {dtype} is not supported in a slab")
        self.spec = {k: (tuple(int(s) for s in shape), dt) for k, (shape, dt) in spec.items()}
        self.device = torch.device(device)
        self.capacity = int(capacity)
        self.tensors = {k: torch.zeros(self.capacity + 1, *shape, dtype=dt, device=self.device)
                        for k, (shape, dt) in self.spec.items()}
        self._owned = np.zeros(self.capacity, dtype=bool)
        # Stack of free slots, lowest on top, so a fresh slab hands out 0, 1, 2, ...
        self._free = list(range(self.capacity - 1, -1, -1))

    # ----- bookkeeping --------------------------------------------------------------------------
    @property
    def scratch_slot(self) -> int:
        """A row no agent owns (the last one); padded CUDA-graph rows read and write it."""
        return self.capacity

    @property
    def slot_nbytes(self) -> int:
        """Bytes of one slot's row across every state tensor."""
        return int(sum(t[0].numel() * t.element_size() for t in self.tensors.values()))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_owned(self) -> int:
        return self.capacity - len(self._free)

    def owned_slots(self) -> np.ndarray:
        """int64 [n] of the owned slots, ascending."""
        return np.flatnonzero(self._owned).astype(np.int64)

    def is_owned(self, slots) -> np.ndarray:
        slots = np.asarray(slots, dtype=np.int64)
        inside = (slots >= 0) & (slots < self.capacity)
        out = np.zeros(slots.shape, dtype=bool)
        out[inside] = self._owned[slots[inside]]
        return out

    def check_slots(self, slots, what: str = "slots") -> np.ndarray:
        """Validate owned, distinct slot indices; returns them as int64 [B].

        Raises:
            SlabError: not a 1-D integer array, out of range, not owned, or repeated.
        """
        arr = np.asarray(slots)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise SlabError(f"{what} must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if arr.size == 0:
            return arr
        bad = ~self.is_owned(arr)
        if bad.any():
            raise SlabError(f"{what}: slot {int(arr[np.argmax(bad)])} is not an owned slot "
                            f"(capacity {self.capacity})")
        if arr.size > 1 and np.bincount(arr, minlength=0).max() > 1:  # O(B + capacity), no sort
            raise SlabError(f"{what} repeat a slot; each agent may appear once per call")
        return arr

    def join(self, n: int) -> np.ndarray:
        """Take `n` free slots and zero their state; returns int64 [n].

        Raises:
            SlabError: fewer than `n` slots are free (call `grow` first).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > len(self._free):
            raise SlabError(f"cannot join {n} agents: {len(self._free)} of {self.capacity} slots "
                            "are free; grow the slab first")
        slots = np.array([self._free.pop() for _ in range(n)], dtype=np.int64)
        self._owned[slots] = True
        self.reset(slots)
        return slots

    def claim(self, slots) -> np.ndarray:
        """Take these specific free slots (used when restoring into the same slot numbers)."""
        arr = np.asarray(slots, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.capacity):
            raise SlabError(f"cannot claim slots outside [0, {self.capacity})")
        if self._owned[arr].any() or np.unique(arr).size != arr.size:
            raise SlabError("cannot claim slots that are owned or repeated")
        self._owned[arr] = True
        taken = set(arr.tolist())
        self._free = [s for s in self._free if s not in taken]
        self.reset(arr)
        return arr

    def leave(self, slots) -> None:
        """Give slots back to the free list (their contents are zeroed on the next join)."""
        arr = self.check_slots(slots)
        self._owned[arr] = False
        self._free.extend(arr[::-1].tolist())

    def reset(self, slots) -> None:
        """Zero the state of owned `slots`."""
        idx = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
        if idx.numel():
            for t in self.tensors.values():
                t[idx] = 0

    def grow(self, capacity: int) -> None:
        """Reallocate with a larger capacity, keeping every owned slot's number and state.

        Tensors are new objects afterwards: anything captured against the old ones (CUDA graphs)
        must be rebuilt.
        """
        if capacity <= self.capacity:
            raise ValueError(f"new capacity {capacity} must exceed the current {self.capacity}")
        old = self.capacity
        new = {}
        for k, (shape, dt) in self.spec.items():
            t = torch.zeros(capacity + 1, *shape, dtype=dt, device=self.device)
            t[:old] = self.tensors[k][:old]
            new[k] = t
        self.tensors = new
        self._owned = np.concatenate([self._owned, np.zeros(capacity - old, dtype=bool)])
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free
        self.capacity = int(capacity)

    # ----- copies -------------------------------------------------------------------------------
    def fork(self, slots, n: int = 1) -> np.ndarray:
        """Copy each agent's state into `n` new slots.

        Args:
            slots: owned slots int64 [B].
            n: copies per slot.

        Returns:
            int64 [B * n]: the new slots, lined up with `np.repeat(slots, n)`.
        """
        src = self.check_slots(slots)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        new = self.join(src.size * n)
        s = torch.as_tensor(np.repeat(src, n), device=self.device)
        d = torch.as_tensor(new, device=self.device)
        for t in self.tensors.values():
            t[d] = t[s]
        return new

    def snapshot(self, slots=None) -> bytes:
        """The state of `slots` (default: every owned slot) as msgpack bytes."""
        arr = self.owned_slots() if slots is None else self.check_slots(slots)
        idx = torch.as_tensor(arr, device=self.device)
        return codec.packb({
            "format": SNAPSHOT_FORMAT,
            "spec": {k: [list(shape), _NAMES[dt]] for k, (shape, dt) in self.spec.items()},
            "slots": arr,
            "state": {k: _row_blocks(_to_numpy(t[idx])) for k, t in self.tensors.items()},
        })

    def restore(self, data: bytes, slots=None) -> np.ndarray:
        """Load a snapshot's states.

        Args:
            data: bytes from `snapshot` of a slab with the same spec.
            slots: where to put them: None takes new slots (`join`); "same" claims the slot
                numbers the snapshot was taken from; or owned slots int64 [n], one per saved row.

        Returns:
            int64 [n]: the slots now holding the saved states, in snapshot order.

        Raises:
            SlabError: the snapshot is damaged (shapes, dtypes, non-finite rows) or its spec
                differs, or the slots cannot be taken; nothing changes then (no slot is taken).
        """
        doc = self._parse(data)  # everything is checked before a slot is taken
        saved = doc["slots"]
        if slots is None:
            dst = self.join(saved.size)
        elif isinstance(slots, str) and slots == "same":
            dst = self.claim(saved)
        else:
            dst = self.check_slots(slots)
            if dst.size != saved.size:
                raise SlabError(f"snapshot holds {saved.size} agents, {dst.size} slots were given")
        idx = torch.as_tensor(dst, device=self.device)
        for k, (_, dt) in self.spec.items():
            self.tensors[k][idx] = _from_numpy(doc["state"][k], dt).to(self.device)
        return dst

    def _parse(self, data: bytes) -> dict:
        try:
            doc = codec.unpackb(data)
        except codec.CodecError as exc:
            raise SlabError(f"damaged snapshot: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") not in (1, SNAPSHOT_FORMAT):
            raise SlabError("not a state-slab snapshot (format field missing or unknown)")
        spec = {k: [list(shape), _NAMES[dt]] for k, (shape, dt) in self.spec.items()}
        if doc.get("spec") != spec:
            raise SlabError(f"snapshot spec {doc.get('spec')} differs from this slab's {spec}")
        saved = doc.get("slots")
        if not isinstance(saved, np.ndarray) or saved.dtype != np.int64 or saved.ndim != 1:
            raise SlabError("snapshot slots must be an int64 vector")
        if not isinstance(doc.get("state"), dict) or set(doc["state"]) != set(self.spec):
            raise SlabError(f"snapshot states must be exactly {sorted(self.spec)}")
        for k, (shape, dt) in self.spec.items():
            arr = doc["state"][k]
            if doc["format"] > 1:
                arr = _join_blocks(arr, k)
                doc["state"][k] = arr
            want = (saved.size, *shape)
            if not isinstance(arr, np.ndarray) or arr.shape != want:
                raise SlabError(f"snapshot state {k!r} must have shape {want}")
            stored = np.dtype(np.int16) if dt == torch.bfloat16 else _to_numpy(torch.zeros(0, dtype=dt)).dtype
            if arr.dtype != stored:
                raise SlabError(f"snapshot state {k!r} has dtype {arr.dtype}, this slab stores {stored}")
            finite = _from_numpy(arr, dt).float().isfinite() if dt.is_floating_point else None
            if finite is not None and not bool(finite.all()):
                row = int((~finite.reshape(saved.size, -1).all(1)).nonzero()[0, 0])
                raise SlabError(f"snapshot state {k!r}: the row of slot {int(saved[row])} holds NaN or infinity")
        return doc
