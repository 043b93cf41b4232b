"""A bank of E Mult-VAE experts I -> H -> I run as one batched module.

Every local / mixture-of-experts method of this family (LOCA's local models, LFT / EnLFT's
fine-tuned copies, TALL's experts, and the E = 1 global VAE / WL) is a set of independent
single-hidden-layer Mult-VAEs. Instead of a Python list of E modules, the weights are stacked:

* encoder ``w_in [E, I, 2H]`` (mu and logvar halves), ``b_in [E, 2H]``: a sparse product, one
  ``F.embedding_bag`` over the batch's non-zeros for all experts at once (row e * I + i of the
  flattened weight is item i of expert e), whose backward is one sparse-dense product
  (:mod:`recsys.training.sparse_input`);
* decoder ``w_out [E, H, I]``, ``b_out [E, I]``: one ``torch.baddbmm`` for all experts.

Two input layouts:

* **shared** (TALL, LOCA): B user rows seen by every expert -> logits [E, B, I];
* **grouped** (LFT / EnLFT fine-tuning): E * B rows, rows ``e*B .. e*B+B-1`` belong to expert e
  (an empty row is padding) -> logits [E, B, I].

Losses are per expert and per user ([E, B]); summing independent experts' losses gives each
expert exactly the gradient it would get alone. Every parameter has the expert axis first, so
each expert's slice is contiguous: :class:`BankAdam` runs PyTorch's fused Adam kernel on the
slices of the experts that had data in a batch, each with its own step count, so an idle
expert's weights and Adam moments stay untouched (a separate optimiser per module would simply
not have been called).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch import Tensor, nn

from recsys.errors import DataError
from recsys.training.compile import exp_shifted_sum
from recsys.training.batches import SparseRows
from recsys.training.sparse_input import bag_matmul, grouped_bag_matmul, replaces_backward, transpose_order


class ExpertBank(nn.Module):
    """E Mult-VAE experts I -> H -> I (tanh-free: one hidden code, as LFT / TALL's ``enc_dims=[H]``)."""

    def __init__(self, n_experts: int, n_items: int, hidden: int, dropout: float = 0.0, noise_std: float = 1.0) -> None:
        super().__init__()
        self.n_experts, self.n_items, self.hidden = int(n_experts), int(n_items), int(hidden)
        self.dropout, self.noise_std = float(dropout), float(noise_std)
        self.w_in = nn.Parameter(torch.empty(self.n_experts, self.n_items, 2 * self.hidden))
        self.b_in = nn.Parameter(torch.empty(self.n_experts, 2 * self.hidden))
        self.w_out = nn.Parameter(torch.empty(self.n_experts, self.hidden, self.n_items))
        self.b_out = nn.Parameter(torch.empty(self.n_experts, self.n_items))
        self.reset_parameters()

    # the expert axis of each parameter (first everywhere: an expert's slice is contiguous)
    EXPERT_AXIS = {"w_in": 0, "b_in": 0, "w_out": 0, "b_out": 0}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-normal weights per expert (fan-in / fan-out of one expert), biases ~ N(0, 0.001^2)."""
        nn.init.normal_(self.w_in, std=math.sqrt(2.0 / (self.n_items + 2 * self.hidden)))
        nn.init.normal_(self.w_out, std=math.sqrt(2.0 / (self.hidden + self.n_items)))
        nn.init.normal_(self.b_in, std=0.001)
        nn.init.normal_(self.b_out, std=0.001)

    @torch.no_grad()
    def replicate_from(self, other: "ExpertBank", expert: int = 0) -> "ExpertBank":
        """Copy expert `expert` of `other` into every expert of this bank (LFT starts each local copy from WL)."""
        if (other.n_items, other.hidden) != (self.n_items, self.hidden):
            raise DataError(f"cannot copy a bank of {other.n_items} items / hidden {other.hidden} "
                            f"into one of {self.n_items} / {self.hidden}")
        self.w_in.copy_(other.w_in[expert : expert + 1].expand_as(self.w_in))
        self.b_in.copy_(other.b_in[expert : expert + 1].expand_as(self.b_in))
        self.w_out.copy_(other.w_out[expert : expert + 1].expand_as(self.w_out))
        self.b_out.copy_(other.b_out[expert : expert + 1].expand_as(self.b_out))
        return self

    def select(self, experts: Tensor | list[int]) -> "ExpertBank":
        """A new bank holding copies of the given experts (in that order)."""
        idx = torch.as_tensor(experts, dtype=torch.long, device=self.w_in.device)
        out = ExpertBank(len(idx), self.n_items, self.hidden, self.dropout, self.noise_std).to(self.w_in.device)
        with torch.no_grad():
            for name, axis in self.EXPERT_AXIS.items():
                getattr(out, name).copy_(getattr(self, name).index_select(axis, idx))
        return out

    @staticmethod
    def concat(banks: list["ExpertBank"]) -> "ExpertBank":
        """One bank with the experts of `banks` in order (shards of a sharded run)."""
        first = banks[0]
        out = ExpertBank(sum(b.n_experts for b in banks), first.n_items, first.hidden, first.dropout, first.noise_std)
        out = out.to(first.w_in.device)
        with torch.no_grad():
            for name, axis in ExpertBank.EXPERT_AXIS.items():
                getattr(out, name).copy_(torch.cat([getattr(b, name).to(out.w_in.device) for b in banks], dim=axis))
        return out

    # ---- forward --------------------------------------------------------------------------
    def encode(self, rows: SparseRows, grouped: bool = False) -> tuple[Tensor, Tensor]:
        """(mu, logvar), each [E, B, H]; see the module docstring for `grouped`."""
        E, I, H2 = self.n_experts, self.n_items, 2 * self.hidden
        values = rows.l2_normalised_values()
        weight = self.w_in.view(E * I, H2)
        if grouped:
            if rows.shape[0] % E:
                raise DataError(f"grouped input needs a multiple of {E} rows, got {rows.shape[0]}")
            vals = values
            if self.training and self.dropout > 0:
                vals = F.dropout(vals, self.dropout, True)
            h = grouped_bag_matmul(weight, rows.row_ids, rows.indices, rows.offsets, vals, rows.shape[0], E, I)
        else:
            # every expert reads the batch's rows (and, with dropout, draws its own mask, as E
            # separate modules would): E bags per row, over the flattened [E * I, 2H] weight
            nnz, B = rows.indices.numel(), rows.shape[0]
            experts = torch.arange(E, device=rows.device)
            flat_idx = (experts[:, None] * I + rows.indices[None, :]).reshape(-1)
            offsets = (rows.offsets[None, :] + experts[:, None] * nnz).reshape(-1)
            vals = values.repeat(E)
            if self.training and self.dropout > 0:
                vals = F.dropout(vals, self.dropout, True)
            transpose = None
            if replaces_backward(weight, vals):
                # Aᵀ is block-diagonal with E copies of the batch's transpose: sort nnz, not E x nnz
                crow, order = transpose_order(rows.indices, I)
                col = rows.row_ids[order]
                t_crow = torch.cat([(crow[:-1][None, :] + experts[:, None] * nnz).reshape(-1),
                                    crow.new_full((1,), E * nnz)])
                t_col = (col[None, :] + experts[:, None] * B).reshape(-1)
                t_val = vals.view(E, nnz)[:, order].reshape(-1)
                transpose = (t_crow, t_col, t_val)
            h = bag_matmul(weight, flat_idx, offsets, vals, None, transpose)
        h = h.view(E, -1, H2)
        h = h + self.b_in[:, None, :]
        return h[..., : self.hidden], h[..., self.hidden :]

    def decode(self, z: Tensor) -> Tensor:
        """Logits [E, B, I] from codes [E, B, H]."""
        return torch.baddbmm(self.b_out[:, None, :], z, self.w_out)

    def forward(self, rows: SparseRows, grouped: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(logits [E, B, I], mu, logvar); z is sampled only in training mode."""
        mu, logvar = self.encode(rows, grouped)
        z = mu + torch.randn_like(mu) * self.noise_std * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


# ---- per-expert, per-user losses -------------------------------------------------------------


class _SoftmaxNLL(torch.autograd.Function):
    """L[e, r] = c_r * logsumexp(l_er) - sum_j v_j l_{e, r_j, i_j} for logits [E, R, I] and one
    sparse target (r_j, i_j, v_j) shared by the E experts.

    The same value and gradient as ``logsumexp`` plus a gather, in fewer passes over the [E, B, I]
    buffer (which is the size of a decoder matmul's output; LFT fine-tuning runs 64 x 128 x
    3,260 of them per step): forward is max, exp and sum into one buffer, backward scales that
    buffer in place and scatters the sparse targets, instead of logsumexp's recomputed exp, a zero
    filled gather gradient and their sum. The buffer replaces the logits as the saved tensor.
    """

    @staticmethod
    def forward(ctx, logits, rows, items, values, counts):
        E, R, I = logits.shape
        values = values.to(logits.dtype)
        flat = rows * I + items  # 1-D gathers over the flattened rows: 4x faster than 2-D indexing
        shift = logits.amax(dim=2, keepdim=True)
        e, total = exp_shifted_sum(logits, shift)
        picked = logits.new_zeros(E, R).index_add_(1, rows, logits.reshape(E, -1).index_select(1, flat) * values)
        ctx.save_for_backward(e, total, counts, rows, flat, values)
        return counts * (shift[..., 0] + torch.log(total)) - picked

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        e, total, counts, rows, flat, values = ctx.saved_tensors
        g = e.mul_((grad * counts / total)[..., None])  # e is not needed again
        g.view(g.shape[0], -1).index_add_(1, flat, -grad[:, rows] * values)  # CSR (row, item) pairs are unique
        return g, None, None, None, None


def bank_nll(logits: Tensor, rows: SparseRows, grouped: bool = False) -> Tensor:
    """-sum_i x_ui log softmax(logits_e)_i for every expert e and row u -> [E, B] (sparse x)."""
    E, B, I = logits.shape
    counts = rows.row_reduce(rows.values)
    if grouped:  # row e * B + b of the flattened logits is row b of expert e: the batch's own layout
        out = _SoftmaxNLL.apply(logits.reshape(1, E * B, I), rows.row_ids, rows.indices, rows.values, counts[None])
        return out.view(E, B)
    return _SoftmaxNLL.apply(logits, rows.row_ids, rows.indices, rows.values, counts[None])


def bank_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per expert and row -> [E, B]."""
    return 0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1).sum(dim=-1)


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Per expert sum_u w_eu v_eu / sum_u w_eu (0 where an expert has no weight) -> [E]."""
    total = weights.sum(dim=1)
    return (values * weights).sum(dim=1) / total.clamp_min(1e-12)


class BankAdam:
    """Adam (PyTorch semantics, L2 ``weight_decay`` added to the gradient) where each expert keeps
    its own moments and step count and only the experts marked active take a step.

    Equivalent to one ``torch.optim.Adam`` per expert module, called only for the experts that saw
    data in the batch (LOCA skips a local model's batch when none of its users is in it; LFT's
    local sets have different sizes, so their copies make different numbers of steps). Runs the
    fused (single-kernel) Adam on the active experts' contiguous parameter slices.
    """

    def __init__(self, bank: ExpertBank, lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.bank, self.lr, self.weight_decay, self.betas, self.eps = bank, lr, weight_decay, betas, eps
        self.params = [p for _, p in bank.named_parameters()]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        # one step counter per (parameter, expert), as E separate optimisers would keep
        self.steps = [[torch.zeros((), dtype=torch.float32, device=p.device) for _ in range(bank.n_experts)]
                      for p in self.params]

    def zero_grad(self) -> None:
        self.bank.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"m": [t.clone() for t in self.m], "v": [t.clone() for t in self.v],
                "steps": [[t.clone() for t in row] for row in self.steps]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """In place, so the tensors the fused step writes stay the ones this optimiser holds."""
        for mine, saved in ((self.m, state["m"]), (self.v, state["v"])):
            for t, s in zip(mine, saved):
                t.copy_(s)
        for row, saved in zip(self.steps, state["steps"]):
            for t, s in zip(row, saved):
                t.copy_(s)

    @torch.no_grad()
    def step(self, active: Tensor | None = None) -> None:
        """One Adam step for the experts where `active` [E] is True (all when None)."""
        from torch.optim.adam import adam as adam_step

        experts = range(self.bank.n_experts) if active is None else active.nonzero().flatten().tolist()
        params, grads, ms, vs, steps = [], [], [], [], []
        for j, p in enumerate(self.params):
            if p.grad is None:
                continue
            for e in experts:
                params.append(p[e])
                grads.append(p.grad[e])
                ms.append(self.m[j][e])
                vs.append(self.v[j][e])
                steps.append(self.steps[j][e])
        if params:
            adam_step(params, grads, ms, vs, [], steps, fused=True, amsgrad=False, beta1=self.betas[0],
                      beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, maximize=False)


# ---- cost formulas (recsys.training.cost) ------------------------------------------------------


def bank_params(n_experts: int, n_items: int, hidden: int) -> int:
    """Parameters of an E-expert bank I -> H -> I: w_in [E, I, 2H], b_in [E, 2H], w_out [E, H, I], b_out [E, I]."""
    return int(n_experts) * (3 * hidden * n_items + 2 * hidden + n_items)


def shared_bank_epoch(n_experts: int, n_users: int, nnz: float, n_items: int, hidden: int, batch_size: int, *,
                      head_dense_per_entry: float = 0.0, passes: float = 8.0, blocks: float = 2.0):
    """One epoch of an E-expert bank on the shared layout (every expert reads each batch of
    `batch_size` of `n_users` rows holding `nnz` entries), Adam over every expert each step.

    FLOPs: encoder 3 x 2 E nnz 2H, all sparse (embedding_bag forward, sparse-product backward: the
    shared layout never takes the dense backward); decoder baddbmm 2 E n H I forward, twice that
    backward (dense); `head_dense_per_entry` x E n I more dense FLOPs for a head over the
    [E, B, I] logits (TALL's mixture: 4). Traffic: `passes` passes over the [E, B, I] logits per
    step, Adam over the whole bank, w_out read three times, w_in's gradient zero-filled and written.
    Returns the EpochCost with host / device bytes of the bank alone (weights, gradient, two
    moments, `blocks` [E, B, I] float32 blocks, the encoder's E x nnz_batch index copies); the
    caller adds the process, its data and its own state.
    """
    from recsys.training.cost import F32, ADAM_STATE, EpochCost, adam_traffic, dense_layer_flops

    E, n, I, H = int(n_experts), int(n_users), int(n_items), int(hidden)
    b = min(batch_size, n)
    steps = math.ceil(n / batch_size)
    params = bank_params(E, I, H)
    encoder = 3 * 2.0 * E * nnz * 2 * H
    decoder = dense_layer_flops(E * n, H, I)
    head = head_dense_per_entry * E * n * I
    block = F32 * E * b * I
    nnz_b = nnz * b / max(n, 1)
    index_bytes = E * nnz_b * (8 + 8 + 4 + 8 + 4) + 8 * E * I  # flat idx, offsets, values, Aᵀ col / val / crow
    state = ADAM_STATE * F32 * params
    peak = state + blocks * block + index_bytes + F32 * E * b * 2 * H * 4
    traffic = steps * (passes * block + adam_traffic(params) + 3 * F32 * E * H * I + 2 * F32 * E * I * 2 * H) \
        + 3 * F32 * E * nnz * 2 * H
    return EpochCost(flops=encoder + decoder + head, dense_flops=decoder + head, host_bytes=peak, device_bytes=peak,
                     traffic_bytes=traffic, steps=steps, params=params,
                     terms={"encoder_sparse_flops": encoder, "decoder_flops": decoder, "head_flops": head,
                            "logits_block_bytes": block, "bank_state_bytes": state})
