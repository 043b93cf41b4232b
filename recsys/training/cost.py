"""What one training epoch of a stage costs, as a formula of the data's shape and the model's config.

Every model class answers :meth:`recsys.models.base.Model.epoch_cost` ``(config, shape) ->
EpochCost``: the FLOPs, bytes and steps of one training epoch (one fit for closed-form models),
written from the model's own layer shapes. ``benchmarks/cost_model.py`` checks each formula
against the same model trained at three synthetic sizes (FLOPs counted by torch's
``FlopCounterMode``, peak RSS sampled, seconds timed), fits the growth and extrapolates to
ML-20M / Netflix / MSD.

Conventions (so formulas stay comparable):

* a multiply-add is 2 FLOPs; ``flops`` = forward + backward of every product (backward of a
  product = 2x its forward: gradients of both operands, 1x where one side needs none);
* ``dense_flops`` is the part in dense products (mm / bmm / attention): what FlopCounterMode
  counts. ``flops - dense_flops`` are sparse products (embedding_bag, spmm, sparse Gram);
* ``host_bytes`` is the peak RSS of ``fit`` on the CPU (the interpreter with torch included);
  ``device_bytes`` the peak GPU memory of ``fit`` on one GPU (CUDA context, weights, gradients,
  optimiser state, one step's activations, whatever the model keeps resident);
* ``traffic_bytes`` is what the epoch reads and writes in memory: its time floor when it is
  memory-bound (softmax over [batch, items], Adam over the weights);
* elementwise work (softmax, activations, dropout) is counted in traffic, not in FLOPs.

The GPU seconds (:func:`estimate_seconds`) are an estimate from these counts and a device's
sustained rates, never a measurement; results say so.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Iterator, Sequence

F32 = 4
ADAM_STATE = 4  # weight, gradient, Adam's two moments (float32 each)
CUDA_CONTEXT_BYTES = 600 << 20  # a CUDA context with cuBLAS / cuSPARSE handles loaded


@dataclass(frozen=True)
class DataShape:
    """The sizes a cost formula reads: training users, items, training interactions, and
    optionally the sum of squared history lengths (pairs a co-occurrence count touches; default
    ``2 * users * mean^2``, a long-tailed length distribution with coefficient of variation 1)."""

    n_users: int
    n_items: int
    nnz: int
    len_sq_sum: float | None = None

    @property
    def mean_len(self) -> float:
        return self.nnz / max(self.n_users, 1)

    @property
    def density(self) -> float:
        return self.nnz / max(self.n_users * self.n_items, 1)

    @property
    def pairs(self) -> float:
        return self.len_sq_sum if self.len_sq_sum is not None else 2.0 * self.n_users * self.mean_len ** 2

    @classmethod
    def from_csr(cls, x) -> "DataShape":
        lens = x.indptr[1:] - x.indptr[:-1]
        return cls(int(x.shape[0]), int(x.shape[1]), int(x.nnz), float((lens.astype(float) ** 2).sum()))

    def scaled(self, n_users: int, n_items: int, nnz: int) -> "DataShape":
        """Another shape with this one's length spread (len_sq_sum scaled by users x mean^2)."""
        ratio = self.pairs / max(self.n_users * self.mean_len ** 2, 1e-12)
        return replace(self, n_users=n_users, n_items=n_items, nnz=nnz,
                       len_sq_sum=ratio * n_users * (nnz / max(n_users, 1)) ** 2)


@dataclass(frozen=True)
class EpochCost:
    """One training epoch (one fit for closed-form models) of a model on data of a shape."""

    flops: float
    dense_flops: float
    host_bytes: float
    device_bytes: float
    traffic_bytes: float
    steps: int
    params: int
    terms: dict = field(default_factory=dict)  # named parts of one phase's formula, for reports: per
    # epoch, not scaled by times(); a sum keeps both phases' names (the later one wins a clash)

    def to_dict(self) -> dict:
        return asdict(self)

    def __add__(self, other: "EpochCost") -> "EpochCost":
        """Two phases run one after the other: work adds, memory is the larger peak."""
        return EpochCost(self.flops + other.flops, self.dense_flops + other.dense_flops,
                         max(self.host_bytes, other.host_bytes), max(self.device_bytes, other.device_bytes),
                         self.traffic_bytes + other.traffic_bytes, self.steps + other.steps,
                         max(self.params, other.params), {**self.terms, **other.terms})

    def times(self, n: float) -> "EpochCost":
        """``n`` such epochs run one after another (same memory)."""
        return replace(self, flops=self.flops * n, dense_flops=self.dense_flops * n,
                       traffic_bytes=self.traffic_bytes * n, steps=int(round(self.steps * n)))


# ----------------------------------------------------------------------------- building blocks


def dense_layer_flops(rows: float, d_in: int, d_out: int, input_grad: bool = True) -> float:
    """Forward + backward of ``[rows, d_in] @ [d_in, d_out]``: 2 r d_in d_out forward, the same for
    the weight's gradient and (unless the input is data) for the input's."""
    return 2.0 * rows * d_in * d_out * (3 if input_grad else 2)


def sparse_input_flops(nnz: float, rows: float, n_items: int, width: int, *, groups: int = 1) -> tuple[float, float]:
    """(dense, sparse) FLOPs of the sparse input layer ``A @ W`` (``recsys.training.sparse_input``)
    over `rows` rows holding `nnz` entries in total: the forward is an embedding_bag (sparse); the
    backward is one batched dense product over the densified rows when they are at least
    ``DENSE_BACKWARD_DENSITY`` dense, else one sparse product."""
    from recsys.training.sparse_input import DENSE_BACKWARD_DENSITY

    forward = 2.0 * nnz * width
    if nnz >= DENSE_BACKWARD_DENSITY * rows * n_items:
        return 2.0 * rows * n_items * width, forward
    return 0.0, 2.0 * forward


def adam_traffic(params: float) -> float:
    """Bytes one Adam step moves: reads weight, gradient, two moments; writes weight and moments."""
    return 7.0 * F32 * params


def adam_bytes(params: float) -> float:
    return ADAM_STATE * F32 * params


# ----------------------------------------------------------------------------- devices and estimates


@dataclass(frozen=True)
class Device:
    """Sustained rates of one device: dense fp32 FLOP/s, sparse (gather / scatter) FLOP/s,
    memory bandwidth and a fixed cost per optimiser step (kernel launches)."""

    name: str
    dense_flops_per_s: float
    sparse_flops_per_s: float
    bytes_per_s: float
    step_seconds: float
    measured: bool = False


# NVIDIA H100 SXM: 67 TFLOP/s fp32 without tensor cores (PyTorch's default: TF32 matmul is off),
# 3.35 TB/s HBM3. Sustained shares are assumptions (60 % of fp32 peak for the batched products of
# these models, 70 % of bandwidth, sparse gathers at a tenth of dense), so every figure derived
# from this device is marked estimated.
H100 = Device("H100 SXM (estimated: 60 % of 67 TFLOP/s fp32, 70 % of 3.35 TB/s)",
              dense_flops_per_s=0.6 * 67e12, sparse_flops_per_s=0.06 * 67e12, bytes_per_s=0.7 * 3.35e12,
              step_seconds=1e-4)


def estimate_seconds(cost: EpochCost, device: Device) -> float:
    """Seconds for `cost` on `device`: the steps' fixed cost plus the larger of the compute time
    and the memory time (a roofline: each epoch is bounded by one of the two)."""
    compute = cost.dense_flops / device.dense_flops_per_s + (cost.flops - cost.dense_flops) / device.sparse_flops_per_s
    return cost.steps * device.step_seconds + max(compute, cost.traffic_bytes / device.bytes_per_s)


# ----------------------------------------------------------------------------- counting


def _addmm_flops(self, a, b, *args, out_shape=None, **kwargs) -> int:
    return 2 * a[0] * a[1] * b[1]


@contextlib.contextmanager
def counted_flops() -> Iterator:
    """torch's ``FlopCounterMode`` (``.get_total_flops()``) with what it misses on the CPU in
    torch 2.13 put back, so it counts what the formulas count: attention runs on its math kernel
    (the flash kernel has no formula; the math one is counted as its products), and the in-place
    ``addmm_`` of the blocked cross-entropy's backward gets the addmm formula."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), \
            FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops}) as counter:
        yield counter


# ----------------------------------------------------------------------------- fits


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(size): value ~ size^slope."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-300)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("growth_exponent needs at least two different sizes")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def fit_rate(work: Iterable[float], seconds: Iterable[float]) -> float:
    """Units of work per second through the origin (least squares of seconds = work / rate)."""
    work, seconds = list(work), list(seconds)
    num = sum(w * w for w in work)
    den = sum(w * s for w, s in zip(work, seconds))
    if den <= 0:
        raise ValueError("fit_rate needs positive work and seconds")
    return num / den
