"""The engine: a world model plus a state slab on one device; observe and imagine any agents.

Per agent the slab holds the backbone state and the latent the model drew for the agent's next
step ("engine.z"), so the two verbs chain without the caller carrying anything:

- `observe(slots, obs, actions, resets)`: the agent saw o_t and took a_t. The posterior of o_t and
  a_t advance its state; the prior then gives the prediction for t+1: a latent z_{t+1} (drawn,
  or its expectation), reward r_{t+1}, continue c_{t+1}, and on request the decoded o_{t+1}.
- `imagine(slots, actions)`: the agent dreams. The stored z_{t+1} (the step it "sees") and the
  action a_{t+1} advance its state, and the same kind of prediction for t+2 comes back.

Both take any subset of slots in any order, validate every input before touching state (a
rejected call changes nothing), and run one batched model step. On CUDA (with `graphs`
enabled) the step is replayed from one CUDA graph per batch bucket (`worldssm.kernels.graphs`);
on CPU the step runs in numpy (`worldssm.model.numpy_step`, faster than PyTorch's eager ops
at simulation batch sizes: `worldssm bench tick` times both) where it can, else the model's
reference path eagerly; `Engine.impl` says which.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from worldssm.choices import PRECISIONS, STATE_DTYPES
from worldssm.engine.state import SlabError, StateSlab
from worldssm.errors import WorldssmError
from worldssm.model import numpy_step
from worldssm.spaces import SpaceError, check_batch, first_nonfinite_row

# Graph buckets: powers of two, and 1.5x steps from 1,024 on (a batch pads up to at most 2x
# below 1,024 rows, where a step costs about the same at any size, and 1.33x above). A bucket
# is captured on its first use; batches above the largest run eagerly.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288,
                   16384)
ENGINE_IMPLS = ("auto", "numpy", "torch")
# Page-locked input buffers on CUDA (`Engine._to_device`): how many copies may be in flight.
_INPUT_BUFFERS = 4
_INPUT_BUFFER_MAX = 64 << 20


def _packed(nbytes: list[int]) -> list[int]:
    """Byte offsets of buffers laid end to end, each start 64-byte aligned; the last entry is the
    total size."""
    ends = np.cumsum([-(-n // 64) * 64 for n in nbytes])
    return [0, *(int(e) for e in ends)]


def _pinned(buf: torch.Tensor | None, nbytes: int) -> torch.Tensor:
    """`buf`, or a new page-locked byte buffer (at least 64 KiB) where it is missing or holds
    fewer than `nbytes`."""
    if buf is not None and buf.numel() >= nbytes:
        return buf
    return torch.empty(max(nbytes, 1 << 16), dtype=torch.uint8, pin_memory=True)


class EngineInputError(WorldssmError, ValueError):
    """Inputs to observe / imagine have the wrong shape, dtype or values; no state changed."""


class EngineOutput(NamedTuple):
    """The model's prediction for each agent's next step (rows follow the call's slots)."""

    z: torch.Tensor | None  # latent drawn for the next step [B, V*K] (None: asked without `latents`)
    reward: torch.Tensor  # predicted reward on arriving there [B]
    cont: torch.Tensor  # probability the episode continues there [B]
    obs: torch.Tensor | None  # decoded next observation [B, *obs_shape], when asked for
    # log of `cont`, from the logit: exact where `cont` rounds to 1 in float32 (a planner ranks
    # safe states by it)
    log_cont: torch.Tensor
    # the feature the reward and continue heads read [B, D], in the backbone's dtype (a planner's
    # value reads it too; None: asked without `latents`)
    h: torch.Tensor | None = None


def _ignoring_latents(core):
    """A step core called as the graphed steps are (`latents` only spares their copies out)."""
    return lambda *a, latents=True: core(*a)


def _as_numpy(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise EngineInputError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")


class Engine:
    """A world model and the states of up to `capacity` agents on one device.

    Args:
        model: a `WorldModel` (moved to `device`, put in eval mode).
        capacity: slots in the slab; `grow` raises it.
        device: torch device; default the model's.
        sample: draw latents from the prior (True) or take its expectation, the class
            probabilities (False, deterministic).
        seed: seed of the engine's own generator (used when `sample`).
        graphs: "auto" (CUDA graphs on CUDA when not sampling), "on" or "off".
        buckets: batch sizes to capture graphs for.
        impl: "auto" (numpy on CPU when `numpy_step.supports` the model, else torch), "numpy"
            (an error where it cannot run) or "torch".
        precision: the backbone's weights: "bfloat16" (the model's backbone is cast in place;
            SSM states, encoder, latents and heads stay float32, as training's autocast keeps
            them; the conv states, which hold past in-projection outputs, follow the weights:
            `Mamba2Backbone.state_spec`), "float32", or "auto": bfloat16 on CUDA, float32
            elsewhere. On CUDA the float32 encoder, heads and decoder multiply on TF32 inputs
            unless WORLDSSM_TF32=0 (`worldssm.kernels.serving_tf32`; about 1% on the
            predictions, like the bf16 backbone).
        state_dtype: how the slab stores each Mamba-2 layer's SSM state, the bulk of an agent's
            bytes: "float32", "bfloat16" (half the bytes a step reads and writes; updates are
            computed in float32 and rounded on store), or None: the model's config. The weights
            do not change. Other backbones take only "float32" or None.
    """

    def __init__(self, model, capacity: int, device=None, sample: bool = False, seed: int = 0,
                 graphs: str = "auto", buckets=DEFAULT_BUCKETS, impl: str = "auto", precision: str = "auto",
                 state_dtype: str | None = None):
        if graphs not in ("auto", "on", "off"):
            raise ValueError(f"graphs must be 'auto', 'on' or 'off', got {graphs!r}")
        if impl not in ENGINE_IMPLS:
            raise ValueError(f"impl must be one of {ENGINE_IMPLS}, got {impl!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        kind = model.cfg.backbone.kind
        if state_dtype not in (None,) + STATE_DTYPES:
            raise ValueError(f"state_dtype must be None or one of {STATE_DTYPES}, got {state_dtype!r}")
        if state_dtype == "bfloat16" and kind != "mamba2":
            raise ValueError(f"state_dtype='bfloat16' stores Mamba-2 SSM states; this model's backbone is {kind}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cuda" else "float32"
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.model.backbone.to(torch.bfloat16 if precision == "bfloat16" else torch.float32)
        self.sample = bool(sample)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.obs_shape = tuple(model.obs_shape)
        self.obs_space, self.action_space = model.obs_space, model.action_space
        self.dtype = model.in_proj.weight.dtype
        latent = model.cfg.latent_vars * model.cfg.latent_classes
        spec = dict(model.backbone.state_spec() if state_dtype is None or kind != "mamba2"
                    else model.backbone.state_spec(state_dtype))
        spec["engine.z"] = ((latent,), self.dtype)
        self.slab = StateSlab(spec, capacity, self.device)
        use = graphs == "on" or (graphs == "auto" and self.device.type == "cuda" and not self.sample)
        if use and self.sample:
            raise ValueError("CUDA graphs replay a fixed random stream; use graphs='off' with sample=True")
        if use and self.device.type != "cuda":
            raise ValueError(f"graphs='on' needs a CUDA device, got {self.device}")
        self.use_graphs = use
        why_not = numpy_step.supports(self.model, self.sample, self.device, state_dtype)
        if impl == "numpy" and why_not is not None:
            raise ValueError(f"impl='numpy' cannot run this engine: {why_not}")
        self.impl = "numpy" if impl == "numpy" or (impl == "auto" and why_not is None) else "torch"
        self._numpy = numpy_step.NumpyStep(self.model) if self.impl == "numpy" else None
        # The eager path runs under inference_mode (no version counters or autograd bookkeeping
        # on any op: same arithmetic, less dispatch per op; the slab's own tensors are ordinary
        # tensors written in place, which inference_mode allows). Outputs are then inference
        # tensors: read them, clone them to use them in autograd. The CUDA-graph path keeps
        # no_grad (its static buffers are captured and refilled across calls).
        self._no_grad = torch.no_grad if use else torch.inference_mode
        self.buckets = tuple(buckets)
        self._staging: torch.Tensor | None = None  # page-locked host buffer of `to_host`
        # page-locked host buffers of `_to_device`, each with the event of its last copy
        self._inputs: list[list] = [[None, None] for _ in range(_INPUT_BUFFERS)]
        self._next_input = 0
        self._build_steps()

    # ----- slots --------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.slab.capacity

    def join(self, n: int) -> np.ndarray:
        """Slots for `n` new agents (zero state); int64 [n]."""
        return self.slab.join(n)

    def leave(self, slots) -> None:
        self.slab.leave(slots)

    def reset(self, slots) -> None:
        self.slab.reset(self.slab.check_slots(slots))

    def fork(self, slots, n: int = 1) -> np.ndarray:
        """Copy agents into `n` new slots each (lined up with `np.repeat(slots, n)`)."""
        return self.slab.fork(slots, n)

    def snapshot(self, slots=None) -> bytes:
        """msgpack bytes of the states (and pending latents) of `slots`, default all owned."""
        return self.slab.snapshot(slots)

    def restore(self, data: bytes, slots=None) -> np.ndarray:
        """Load `snapshot` bytes; see `StateSlab.restore` for `slots`."""
        return self.slab.restore(data, slots)

    def grow(self, capacity: int) -> None:
        self.slab.grow(capacity)
        self._build_steps()

    def warm(self, sizes, verbs=("observe", "imagine")) -> list[int]:
        """Capture now the CUDA graphs that calls of `sizes` rows will replay, so that none of
        those calls pays a capture (a bucket's first use compiles its Triton kernels and records
        the graph: up to seconds). Steps freshly joined slots once per bucket and verb, then gives
        them back: no agent's state changes. Without CUDA graphs it does nothing.

        Args:
            sizes: batch sizes the caller will step (each at most the free slots).
            verbs: which steps to capture, "observe" and/or "imagine" (without decoding);
                "observe" also runs `fork_observed`'s encoder once per bucket.

        Returns:
            the buckets captured, ascending.

        Raises:
            EngineInputError: a verb other than observe or imagine, or a size above the free slots.
        """
        bad = [v for v in verbs if v not in ("observe", "imagine")]
        if bad:
            raise EngineInputError(f"warm takes the verbs 'observe' and 'imagine', got {bad}")
        sizes = sorted({int(s) for s in sizes if int(s) > 0})
        if sizes and sizes[-1] > self.slab.num_free:
            raise EngineInputError(f"warm: {sizes[-1]} rows need as many free slots; {self.slab.num_free} of "
                                   f"{self.capacity} are free")
        if not self.use_graphs or not sizes:
            return []
        from worldssm.spaces import sample_batch

        first: dict[int, int] = {}  # bucket -> the smallest size that replays it
        for s in sizes:
            if s <= max(self.buckets):
                first.setdefault(min(b for b in self.buckets if b >= s), s)
        rng = np.random.default_rng(0)  # the values do not matter: the captures are of shapes
        for n in first.values():
            slots = self.join(n)
            try:
                obs = sample_batch(self.obs_space, n, rng)
                act = sample_batch(self.action_space, n, rng)
                if "observe" in verbs:
                    self.observe(slots, obs, act, np.ones(n, dtype=bool))
                    # `fork_observed`'s encoder runs outside the graphs: its kernels compile
                    # for a new row count's specialisation (one row) on first use.
                    self._posterior(self._check_obs(obs, n))
                if "imagine" in verbs:
                    self.imagine(slots, act)
            finally:
                self.leave(slots)
        return sorted(first)

    def rng_state(self) -> np.ndarray:
        return self.generator.get_state().numpy()

    def to_host(self, *tensors: torch.Tensor) -> list[np.ndarray]:
        """Copy device tensors (an `EngineOutput`'s fields) to host arrays in one round trip.

        On CUDA every tensor goes into one reused page-locked buffer by an asynchronous copy, and
        the host waits once; `.cpu()` per tensor would wait once each and copy through pageable
        memory. The arrays returned are views of that buffer: **valid until the next `to_host`
        call**; copy what must outlive it. On CPU the tensors' own memory is returned.
        """
        if self.device.type != "cuda":
            return [t.detach().numpy() for t in tensors]
        sizes = [t.numel() * (4 if t.dtype == torch.bfloat16 else t.element_size()) for t in tensors]
        offsets = _packed(sizes)
        self._staging = _pinned(self._staging, offsets[-1])
        out = []
        for t, at, n in zip(tensors, offsets, sizes):
            t = t.detach()
            t = (t.float() if t.dtype == torch.bfloat16 else t).contiguous()  # numpy has no bfloat16
            dst = self._staging[at:at + n].view(t.dtype).view(t.shape)
            dst.copy_(t, non_blocking=True)
            out.append(dst)
        torch.cuda.current_stream(self.device).synchronize()
        return [d.numpy() for d in out]

    def _to_device(self, *arrays: np.ndarray) -> list[torch.Tensor]:
        """Host arrays as device tensors. On CUDA they go through one of `_INPUT_BUFFERS`
        page-locked buffers by one asynchronous copy, so the host does not wait here for the GPU's
        earlier work (a copy from pageable memory waits until the stream is idle): a caller that
        steps many times and reads the results once (a planner) keeps the GPU busy. A buffer is
        refilled only after the event of its previous copy. Inputs of more than
        `_INPUT_BUFFER_MAX` bytes (large image batches) are copied from pageable memory. On CPU
        the tensors share the arrays' memory. The caller may change its arrays once this returns."""
        arrays = [np.ascontiguousarray(a) for a in arrays]
        offsets = _packed([a.nbytes for a in arrays])
        if self.device.type != "cuda" or offsets[-1] > _INPUT_BUFFER_MAX:
            return [torch.as_tensor(a, device=self.device) for a in arrays]
        entry = self._inputs[self._next_input]
        self._next_input = (self._next_input + 1) % len(self._inputs)
        buf, done = entry
        if done is not None:
            done.synchronize()  # the previous copy out of this buffer has been read
        buf = entry[0] = _pinned(buf, offsets[-1])
        host = buf.numpy()
        for a, at in zip(arrays, offsets):
            host[at:at + a.nbytes] = a.reshape(-1).view(np.uint8)
        dev = torch.empty(offsets[-1], dtype=torch.uint8, device=self.device)
        dev.copy_(buf[:offsets[-1]], non_blocking=True)
        entry[1] = done = done or torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        return [dev[at:at + a.nbytes].view(torch.from_numpy(np.empty(0, a.dtype)).dtype).view(a.shape)
                for a, at in zip(arrays, offsets)]

    def set_rng_state(self, state: np.ndarray) -> None:
        self.generator.set_state(torch.from_numpy(np.asarray(state, dtype=np.uint8)))

    def fork_observed(self, slots, obs, n: int = 1, resets=None) -> np.ndarray:
        """Copy each agent into `n` new slots that stand where `observe(slots, obs, a)` would
        start: the agent's state before this step (zeroed where `resets`), with the posterior
        latent of `obs` as the latent the next `imagine` steps with. So `imagine(forks, a)` on a
        copy gives what `observe(slots, obs, a)` gives (to float rounding), and a planner can try
        many actions a_t from o_t without touching the agents' own states.

        Args:
            slots: owned, distinct slots int64 [B].
            obs: observations o_t [B, *obs_shape].
            n: copies per agent.
            resets: bool [B]; True where o_t starts an episode. Default none.

        Returns:
            int64 [B * n]: the new slots, lined up with `np.repeat(slots, n)`; `leave` them after.

        Raises:
            EngineInputError / SlabError: bad input or fewer than B * n free slots; nothing changed.
        """
        s = self._slots(slots)
        b = s.shape[0]
        o = self._check_obs(obs, b)
        r = np.zeros(b, dtype=bool) if resets is None else _as_numpy(resets, "resets")
        if r.shape != (b,) or r.dtype != np.bool_:
            raise EngineInputError(f"resets must be bool [{b}], got {r.dtype} {r.shape}")
        if n < 1:
            raise EngineInputError(f"n must be >= 1, got {n}")
        if b * n > self.slab.num_free:
            raise EngineInputError(f"{b * n} slots are needed for {b} agents x {n} copies; "
                                   f"{self.slab.num_free} of {self.capacity} are free (grow the engine)")
        z = self._posterior(o)
        forks = self.slab.fork(s, n)
        if r.any():
            self.slab.reset(forks[np.repeat(r, n)])
        idx = torch.as_tensor(forks, device=self.device)
        self.slab.tensors["engine.z"][idx] = z.to(self.device, self.dtype).repeat_interleave(n, 0)
        return forks

    def _posterior(self, o: np.ndarray) -> torch.Tensor:
        """The posterior latents of checked observations `o`, outside any CUDA graph."""
        if self._numpy is not None:
            return torch.from_numpy(self._numpy.posterior_mean(o))
        with self._no_grad():
            return self.model.posterior_latent(torch.as_tensor(o, device=self.device), self.sample, self.generator)

    # ----- the two verbs ------------------------------------------------------------------------
    def observe(self, slots, obs, actions, resets=None, decode: bool = False, latents: bool = True) -> EngineOutput:
        """The agents in `slots` saw `obs` and took `actions`.

        Args:
            slots: owned, distinct slots int64 [B].
            obs: observations o_t [B, *obs_shape].
            actions: actions a_t [B] (discrete) or [B, *act_shape] (box).
            resets: bool [B]; True starts a new episode (state zeroed first). Default none.
            decode: also decode the predicted next observation.
            latents: False leaves `z` and `h` out of the output (None). Under CUDA graphs they
                are the step's two largest outputs, copied out of the graph's buffers at every
                call (at 16,384 BASE agents 84 MB, read and written); a caller that reads only
                rewards, continues and observations (a dream env, a tick) skips that.

        Raises:
            EngineInputError / SlabError: nothing changed.
        """
        s = self._slots(slots)
        b = s.shape[0]
        o = self._check_obs(obs, b)
        a = self._actions(actions, b)
        r = np.zeros(b, dtype=bool) if resets is None else _as_numpy(resets, "resets")
        if r.shape != (b,) or r.dtype != np.bool_:
            raise EngineInputError(f"resets must be bool [{b}], got {r.dtype} {r.shape}")
        if b == 0:
            out = self._empty(decode)
        elif self._numpy is not None:
            out = self._numpy_output(*self._numpy_observe(s, r, o, a), decode)
        else:
            with self._no_grad():
                out = self._output(*self._steps["observe", decode](*self._to_device(s, r, o, a), latents=latents))
        return out if latents else out._replace(z=None, h=None)

    def imagine(self, slots, actions, decode: bool = False, latents: bool = True) -> EngineOutput:
        """The agents in `slots` take `actions` in the step they were last predicted into.

        Args:
            slots: owned, distinct slots int64 [B].
            actions: actions [B] or [B, *act_shape].
            decode: also decode the predicted next observation.
            latents: as in `observe`.
        """
        s = self._slots(slots)
        b = s.shape[0]
        a = self._actions(actions, b)
        if b == 0:
            out = self._empty(decode)
        elif self._numpy is not None:
            out = self._numpy_output(*self._numpy_imagine(s, a), decode)
        else:
            with self._no_grad():
                st, at = self._to_device(s, a)
                out = self._output(*self._steps["imagine", decode](st, self._no_resets[:b], at, latents=latents))
        return out if latents else out._replace(z=None, h=None)

    # ----- internals ----------------------------------------------------------------------------
    def _slots(self, slots) -> np.ndarray:
        try:
            return self.slab.check_slots(_as_numpy(slots, "slots"))
        except SlabError as exc:
            raise EngineInputError(str(exc)) from exc

    def _check_obs(self, obs, b: int) -> np.ndarray:
        o = _as_numpy(obs, "obs")
        if o.shape != (b, *self.obs_shape):
            raise EngineInputError(f"obs have shape {o.shape}, expected {(b, *self.obs_shape)}")
        if o.dtype.kind not in "biuf":
            raise EngineInputError(f"obs have dtype {o.dtype}, expected a numeric dtype")
        bad = first_nonfinite_row(o)
        if bad is not None:
            raise EngineInputError(f"obs: row {bad} contains NaN or infinity (in float32)")
        return o

    def _actions(self, actions, b: int) -> np.ndarray:
        a = _as_numpy(actions, "actions")
        try:
            check_batch(self.action_space, a, b)
        except SpaceError as exc:
            raise EngineInputError(str(exc)) from exc
        dt = np.int64 if self.action_space["type"] == "discrete" else np.float32
        return a.astype(dt, copy=False)

    def _observe_core(self, slots, reset, obs, action):
        pred = self.model.observe_slots(self.slab.tensors, slots, obs, action, reset,
                                        self.sample, self.generator)
        z = self.model.next_latent(pred, self.sample, self.generator)  # [B, V*K]
        self.slab.tensors["engine.z"][slots] = z
        return z, pred.reward, pred.cont, F.logsigmoid(pred.cont_logit), pred.h

    def _imagine_core(self, slots, reset, action):
        # `reset` is unused: real rows never reset while dreaming, and padded graph rows only
        # touch the scratch slot.
        z_now = self.slab.tensors["engine.z"][slots]  # [B, V*K]
        pred = self.model.imagine_slots(self.slab.tensors, slots, z_now, action)
        z = self.model.next_latent(pred, self.sample, self.generator)
        self.slab.tensors["engine.z"][slots] = z
        return z, pred.reward, pred.cont, F.logsigmoid(pred.cont_logit), pred.h

    def _numpy_observe(self, slots, reset, obs, action):
        """`_observe_core` with the numpy step (numpy arrays in and out)."""
        z, rew, logit, h = self._numpy.observe(self._numpy_slab, slots, obs, action, reset)
        self._numpy_slab["engine.z"][slots] = z
        return z, rew, logit, h

    def _numpy_imagine(self, slots, action):
        """`_imagine_core` with the numpy step."""
        z_now = self._numpy_slab["engine.z"][slots]  # [B, V*K]
        z, rew, logit, h = self._numpy.imagine(self._numpy_slab, slots, z_now, action)
        self._numpy_slab["engine.z"][slots] = z
        return z, rew, logit, h

    def _decoding(self, core):
        """`core` with the decoded next observation as a fifth output (inside the same graph)."""
        def step(*args):
            z, rew, cont, log_cont, h = core(*args)
            return z, rew, cont, log_cont, h, self.model.decode(z, h)
        return step

    def _build_steps(self) -> None:
        # The numpy step reads and writes the slab through numpy views that share the tensors'
        # memory; `grow` replaces the tensors, so the views are taken again here.
        self._numpy_slab = None if self._numpy is None else {k: t.numpy() for k, t in self.slab.tensors.items()}
        # `reset` of an imagined step, all False: one per slot, as a call holds distinct owned slots
        self._no_resets = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        cores = {("observe", False): self._observe_core, ("imagine", False): self._imagine_core}
        cores["observe", True] = self._decoding(self._observe_core)
        cores["imagine", True] = self._decoding(self._imagine_core)
        if not self.use_graphs:
            self._steps = {key: _ignoring_latents(core) for key, core in cores.items()}
            return
        from worldssm.kernels.graphs import GraphedStep

        largest = max(self.buckets)

        def graphed(core):
            graph = GraphedStep(core, self.buckets, self.slab.scratch_slot)

            # Graph outputs are views of static buffers that the next replay overwrites: copy
            # them, z (0) and h (4) only where asked for. A batch above the largest bucket runs
            # eagerly (launches are a small share of a step that size).
            def step(*a, latents: bool = True):
                if a[0].shape[0] > largest:
                    return core(*a)
                return tuple(t.clone() if latents or i not in (0, 4) else None for i, t in enumerate(graph(*a)))
            return step

        self._steps = {key: graphed(core) for key, core in cores.items()}

    def _output(self, z, rew, cont, log_cont, h, obs=None) -> EngineOutput:
        return EngineOutput(z, rew.float(), cont.float(), obs, log_cont.float(), h)

    def _numpy_output(self, z, rew, logit, h, decode: bool) -> EngineOutput:
        obs = torch.from_numpy(self._numpy.decode(z, h)) if decode else None
        # The continue logit's sigmoid and log-sigmoid in numpy: a torch op here wakes torch's
        # thread pool between numpy's BLAS calls (log_sigmoid of 640 values cost 6 ms).
        log_cont = -np.logaddexp(np.float32(0.0), -logit)
        return EngineOutput(torch.from_numpy(z), torch.from_numpy(rew), torch.from_numpy(np.exp(log_cont)), obs,
                            torch.from_numpy(log_cont), torch.from_numpy(h))

    def _empty(self, decode: bool) -> EngineOutput:
        v = self.slab.spec["engine.z"][0][0]
        e = torch.zeros(0, device=self.device)
        obs = torch.zeros(0, *self.obs_shape, device=self.device) if decode else None
        return EngineOutput(torch.zeros(0, v, dtype=self.dtype, device=self.device), e, e, obs, e,
                            torch.zeros(0, self.model.cfg.backbone.d_model, device=self.device))
