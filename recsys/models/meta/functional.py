"""The meta stage's inner loop: batched, functional, differentiable (MAML / MAML++ / MELO).

The backbone (a :class:`~recsys.models.sequential.layers.SequenceNetwork`) runs functionally --
its parameters are a dict of tensors passed to :func:`torch.func.functional_call` -- and one
meta-batch of T tasks is adapted at once: ``vmap`` over the tasks of ``grad`` of each task's
support loss, so the adapted parameters of all tasks are batched tensors, no module is copied
and no Python loop runs over tasks. The outer (meta) gradient is ordinary autograd through the
whole computation: second order by default, first order when each inner gradient is detached.

What had to change for ``vmap`` (the backbones themselves are untouched; see :func:`vmappable`):

* ``nn.GRU`` has no batching rule (GRU4Rec, NARM): inside the meta stage each GRU of the
  backbone runs :func:`gru_forward`, the same recurrence written with matmuls over the GRU's own
  parameters (so ``functional_call`` substitutes them as usual). This also avoids cuDNN's RNN,
  which has no double backward.
* The attention masks of :mod:`recsys.models.sequential.layers` return ``None`` when a batch has
  no padding (a data-dependent branch ``vmap`` cannot trace): the meta stage swaps in branch-free
  versions with the same values (all-True / lower-triangular masks) while it runs, and pins
  scaled-dot-product attention to its math kernel (vmap and double backward both work there).
* ``F.layer_norm``: under ``vmap`` its double backward gives wrong second-order gradients in
  torch 2.13 (the first-order ones are right), so each LayerNorm runs
  :func:`layer_norm_forward`, the same normalisation written out (checked by
  ``test_layer_norm_used_under_vmap_gives_true_second_order_gradients``).
* Dropout: ``vmap(randomness="different")`` -- each task draws its own dropout masks, as separate
  forward passes would.

Exact shortcuts that make a meta-iteration cheap (results equal the padded, per-task computation
up to float summation order; ``tests/unit/test_models_meta.py`` checks it against a deep-copy
reference):

* **Per-task item tables.** A task's sequences are sub-windows of one user's window (<= 30
  items), so only those rows of the item embedding can receive an inner gradient. Each task
  adapts its own ``[K, d]`` slice of the table (K <= window + 1, PAD first) with its tokens
  renumbered into it, instead of a per-task copy of the whole ``[n_items, d]`` table.
* **Length buckets and groups.** Rows are independent, so a task's support rows are sorted by
  length and cut into a few buckets, each trimmed to its longest row (positions count from the
  right, so trimming left padding changes nothing); rows that are padding in every task are
  skipped; the support loss is the bucket sums over the task's count of known ratings. Tasks
  whose windows differ much in length (a meta-batch of Amazon users mixes 5- and 30-item ones)
  are split into at most ``max_groups`` groups, one ``vmap`` call each. Bucket and group cuts
  are chosen by dynamic programming on padded positions plus a per-call overhead.

The loss of a set of rows is MELO's: ``sum(w * (pred - rating / 5) ** 2 * known) / #known`` with
``pred = 0.1 + sigmoid(.)`` (the backbone's output) and w = 1 unless a weighting net gives one
weight per position (MELO).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from recsys.errors import ConfigError
from recsys.models.sequential.layers import RATING_SCALE
from recsys.models.sequential.sequences import PAD
from recsys.protocols.meta_tasks import Tasks

RANDOMNESS = ("different", "same")


# ---- making a backbone vmappable ----------------------------------------------------------


def static_key_padding_mask(tokens: Tensor) -> Tensor:
    """:func:`~recsys.models.sequential.layers.key_padding_mask` without its ``None`` branch."""
    return (tokens != PAD)[:, None, None, :]


def static_causal_mask(tokens: Tensor) -> Tensor:
    """:func:`~recsys.models.sequential.layers.causal_mask` without its ``None`` branch (with no
    padding it is the lower triangle, what SDPA's ``is_causal`` means)."""
    w = tokens.shape[1]
    tril = torch.ones(w, w, dtype=torch.bool, device=tokens.device).tril()
    eye = torch.eye(w, dtype=torch.bool, device=tokens.device)
    return tril & ((tokens != PAD)[:, None, None, :] | eye)


_STATIC_MASKS = {"key_padding_mask": static_key_padding_mask, "causal_mask": static_causal_mask}


def gru_forward(gru: nn.GRU, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``nn.GRU.forward`` (batch_first, unidirectional) as plain tensor operations on the
    module's current parameters: r = s(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h; inter-layer dropout as
    the module's. Returns (outputs [B, W, H], last states [layers, B, H])."""
    if not gru.batch_first or gru.bidirectional or getattr(gru, "proj_size", 0) or not gru.bias:
        raise ConfigError("the meta stage's functional GRU supports batch_first, unidirectional GRUs with biases")
    b, w, _ = x.shape
    out, last = x, []
    for layer in range(gru.num_layers):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{layer}"), getattr(gru, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(gru, f"bias_ih_l{layer}"), getattr(gru, f"bias_hh_l{layer}")
        gi = out @ w_ih.T + b_ih  # input projections of every step at once
        h = x.new_zeros(b, gru.hidden_size) if hx is None else hx[layer]
        states = []
        for t in range(w):
            i_r, i_z, i_n = gi[:, t].chunk(3, -1)
            h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, -1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
            states.append(h)
        out = torch.stack(states, 1) if states else x.new_zeros(b, 0, gru.hidden_size)
        last.append(h)
        if gru.dropout and gru.training and layer < gru.num_layers - 1:
            out = F.dropout(out, gru.dropout, True)
    return out, torch.stack(last)


def layer_norm_forward(ln: nn.LayerNorm, x: Tensor) -> Tensor:
    """``nn.LayerNorm.forward`` as mean / variance / rsqrt (biased variance, as LayerNorm)."""
    dims = tuple(range(-len(ln.normalized_shape), 0))
    mu = x.mean(dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dims, keepdim=True)
    out = (x - mu) * torch.rsqrt(var + ln.eps)
    if ln.weight is not None:
        out = out * ln.weight
    if ln.bias is not None:
        out = out + ln.bias
    return out


_FUNCTIONAL_FORWARDS = {nn.GRU: gru_forward, nn.LayerNorm: layer_norm_forward}


@contextlib.contextmanager
def vmappable(net: nn.Module) -> Iterator[None]:
    """Run `net` under ``vmap`` / double backward for the duration of the block (see the module
    docstring): its GRUs use :func:`gru_forward`, its LayerNorms :func:`layer_norm_forward`, the branch-free masks replace the layer
    module's in the network's own module, and SDPA uses its math kernel. Not thread-safe (it
    patches module globals for the block); re-entrant."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    patched = []
    for mod_name in {type(m).__module__ for m in net.modules()}:
        mod = sys.modules.get(mod_name)
        for name, fn in _STATIC_MASKS.items():
            if mod is not None and callable(getattr(mod, name, None)) and getattr(mod, name) is not fn:
                patched.append((mod, name, getattr(mod, name)))
                setattr(mod, name, fn)
    swapped = [m for m in net.modules() if type(m) in _FUNCTIONAL_FORWARDS and "forward" not in vars(m)]
    for m in swapped:
        m.forward = functools.partial(_FUNCTIONAL_FORWARDS[type(m)], m)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for mod, name, fn in patched:
            setattr(mod, name, fn)
        for m in swapped:
            del m.forward


# ---- which parameters adapt ------------------------------------------------------------------


def rating_parameters(net: nn.Module) -> list[str]:
    """Names of the parameters the rating output depends on (BERT4Rec's next-item projection and
    output bias do not: they are neither adapted nor meta-learned)."""
    n = max(1, min(int(getattr(net, "n_items", 3)), 3))
    tokens = torch.tensor([[PAD, 1, n], [1, n, 1]], device=next(net.parameters()).device)
    was = net.training
    net.eval()
    try:
        with vmappable(net):
            out = net(tokens).sum()
        names = [k for k, _ in net.named_parameters()]
        grads = torch.autograd.grad(out, [p for _, p in net.named_parameters()], allow_unused=True)
    finally:
        net.train(was)
    return [k for k, g in zip(names, grads) if g is not None]


def item_table_name(net: nn.Module) -> str | None:
    """The name of the parameter holding the item embedding table (the one ``item_table()``
    slices), or None when the network has none."""
    try:
        ptr = net.item_table().untyped_storage().data_ptr()
    except (AttributeError, NotImplementedError):
        return None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Embedding) and mod.weight.untyped_storage().data_ptr() == ptr:
            return f"{name}.weight" if name else "weight"
    return None


# ---- one meta-batch as device tensors ----------------------------------------------------------


@dataclass
class Rows:
    """A block of rows of every task of a group: tokens [G, R, W], target rating / 5 and known
    mask [G, R, W] (floats), and which of the task's [S] (or [Q]) rows they are ([G, R])."""

    tokens: Tensor
    target: Tensor
    known: Tensor
    rows: Tensor
    width: int


@dataclass
class Group:
    """Tasks of a meta-batch with similar lengths, adapted by one ``vmap`` call."""

    index: Tensor                 # [G] positions of these tasks in the meta-batch
    table: Tensor | None          # [G, K] token ids of each task's item-table rows (PAD first)
    support: list[Rows]           # length buckets of the support rows
    query: Rows                   # all query rows, trimmed to the longest
    support_count: Tensor         # [G] known support ratings (>= 1)
    query_count: Tensor           # [G] known query ratings (>= 1)


@dataclass
class Batch:
    """T tasks ready for :class:`InnerLoop`, in groups of similar length."""

    n_tasks: int
    max_len: int
    groups: list[Group]
    query_real: Tensor            # [T, Q] bool: real (not all-PAD) query rows
    support_ratings: Tensor       # [T, S, L] long 0..5: the support rows' ratings (MELO's weighting input)
    targets: np.ndarray           # [T] the rating of each task's last item

    def weight_blocks(self, group: Group, weights: Tensor) -> list[Tensor]:
        """Per-position weights [T, S, L] (task row order) cut into a group's support buckets."""
        w = weights[group.index]
        return [torch.take_along_dim(w, r.rows[:, :, None], dim=1)[:, :, self.max_len - r.width:]
                for r in group.support]


def _buckets(colmax: np.ndarray, n_tasks: int, overhead: float) -> tuple[list[tuple[int, int]], float]:
    """Cut rows 0..S-1 (row j of every task is at most colmax[j] long, colmax non-increasing) into
    contiguous buckets minimising sum(T * rows * width + overhead) (dynamic programming); returns
    the cuts and their cost."""
    s = len(colmax)
    best = np.full(s + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(s + 1, dtype=np.int64)
    for b in range(1, s + 1):
        costs = best[:b] + overhead + n_tasks * (b - np.arange(b)) * colmax[:b].astype(float)
        a = int(np.argmin(costs))
        best[b], cut[b] = costs[a], a
    out, b = [], s
    while b > 0:
        out.append((int(cut[b]), b))
        b = int(cut[b])
    return out[::-1], float(best[s])


def _groups(lens_sorted: np.ndarray, max_groups: int, overhead: float) -> list[np.ndarray]:
    """Split tasks (rows of `lens_sorted` [T, S]: each task's support lengths, longest first)
    into at most `max_groups` groups of similar length profile: tasks ordered by their longest
    row, contiguous groups chosen by dynamic programming on the padded positions they cost
    (``sum_j width_j`` per task, the per-row lower bound) plus `overhead` per group."""
    t = len(lens_sorted)
    order = np.lexsort(tuple(-lens_sorted[:, j] for j in range(lens_sorted.shape[1] - 1, -1, -1)))
    if max_groups <= 1 or t <= 1:
        return [order]
    ls = lens_sorted[order]
    # cost[a, b): tasks a..b-1 padded to their column maxima (the first task has the largest rows)
    cost = np.full((t + 1, t + 1), np.inf)
    for a in range(t):
        colmax = np.maximum.accumulate(ls[a:], axis=0)  # running column maxima over b
        sizes = np.arange(1, t - a + 1)
        cost[a, a + 1:] = overhead + sizes * colmax.sum(1)
    k_max = min(max_groups, t)
    best = np.full((k_max + 1, t + 1), np.inf)
    best[0, 0] = 0.0
    arg = np.zeros((k_max + 1, t + 1), dtype=np.int64)
    for k in range(1, k_max + 1):
        for b in range(1, t + 1):
            c = best[k - 1, :b] + cost[:b, b]
            a = int(np.argmin(c))
            best[k, b], arg[k, b] = c[a], a
    k = int(np.argmin(best[1:, t])) + 1
    cuts, b = [], t
    while k > 0:
        a = int(arg[k, b])
        cuts.append(order[a:b])
        b, k = a, k - 1
    return cuts[::-1]


def _local_tokens(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per task: the sorted distinct tokens (PAD first) and the tokens renumbered into them."""
    t = items.shape[0]
    flat = items.reshape(t, -1)
    uniq = [np.union1d(row, [PAD]) for row in flat]
    k = max(len(u) for u in uniq)
    table = np.zeros((t, k), dtype=np.int64)
    local = np.empty_like(flat)
    for i, u in enumerate(uniq):
        table[i, : len(u)] = u
        local[i] = np.searchsorted(u, flat[i])
    return table, local.reshape(items.shape)


def _rows(items: np.ndarray, ratings: np.ndarray, rows: np.ndarray, width: int, device) -> Rows:
    """Rows `rows` [G, R] of tokens / ratings [G, N, L], the last `width` columns; an all-PAD row
    gets one placeholder token (id 1, rating unknown) so every row has a real position (a fully
    masked attention row would be NaN), which no loss reads."""
    tok = np.take_along_axis(items, rows[:, :, None], 1)[:, :, items.shape[2] - width:].copy()
    rat = np.take_along_axis(ratings, rows[:, :, None], 1)[:, :, items.shape[2] - width:]
    empty = ~(tok != PAD).any(-1)
    tok[..., -1] = np.where(empty, 1, tok[..., -1])
    known = (rat > 0).astype(np.float32)
    return Rows(torch.from_numpy(tok).to(device), torch.from_numpy((rat / RATING_SCALE).astype(np.float32)).to(device),
                torch.from_numpy(known).to(device), torch.from_numpy(rows).to(device), int(width))


def _group(index: np.ndarray, s_items, s_ratings, q_items, q_ratings, *, local_table: bool,
           bucket_overhead: float | None, device) -> Group:
    s_items, q_items = s_items[index], q_items[index]
    s_ratings, q_ratings = s_ratings[index], q_ratings[index]
    g, s, length = s_items.shape
    q = q_items.shape[1]
    table = None
    if local_table:
        table_np, local = _local_tokens(np.concatenate([s_items, q_items], axis=1))
        s_items, q_items = local[:, :s], local[:, s:]
        table = torch.from_numpy(table_np).to(device)
    lens = (s_items != PAD).sum(-1)
    order = np.argsort(-lens, axis=1, kind="stable")
    colmax = np.take_along_axis(lens, order, 1).max(0)
    if bucket_overhead is None:
        cuts, widths = [(0, s)], [length]
    else:
        used = max(int((colmax > 0).sum()), 1)
        cuts, _ = _buckets(colmax[:used], g, float(bucket_overhead))
        widths = [max(int(colmax[a]), 1) for a, _ in cuts]
    support = [_rows(s_items, s_ratings, order[:, a:b], w, device) for (a, b), w in zip(cuts, widths)]
    q_width = max(int((q_items != PAD).sum(-1).max()), 1) if bucket_overhead is not None else length
    query = _rows(q_items, q_ratings, np.tile(np.arange(q), (g, 1)), q_width, device)
    count = lambda r: torch.from_numpy(np.maximum((r > 0).reshape(g, -1).sum(1), 1).astype(np.float32)).to(device)
    return Group(torch.from_numpy(index).to(device), table, support, query, count(s_ratings), count(q_ratings))


def prepare_batch(tasks: Tasks, device: torch.device | str = "cpu", *, local_table: bool = True,
                  bucket_overhead: float | None = 512.0, max_groups: int = 4,
                  group_overhead: float = 512.0) -> Batch:
    """Device tensors of `tasks` for :class:`InnerLoop` (see the module docstring).

    `local_table`: per-task item tables; `bucket_overhead`: the cost of one more support bucket
    in token positions (None: no trimming at all -- one bucket of all rows at the full window, one
    group); `max_groups` / `group_overhead`: tasks are split into at most that many groups of
    similar length (one ``vmap`` call each), a group costing `group_overhead` positions."""
    s_items, q_items = tasks.support_items, tasks.query_items
    t = s_items.shape[0]
    lens = -np.sort(-(s_items != PAD).sum(-1), axis=1)
    if bucket_overhead is None or max_groups <= 1:
        groups = [np.arange(t)]
    else:
        groups = _groups(lens, max_groups, float(group_overhead))
    built = [_group(np.sort(ix), s_items, tasks.support_ratings, q_items, tasks.query_ratings, local_table=local_table,
                    bucket_overhead=bucket_overhead, device=device) for ix in groups]
    return Batch(
        n_tasks=t, max_len=s_items.shape[2], groups=built,
        query_real=torch.from_numpy((q_items != PAD).any(-1)).to(device),
        support_ratings=torch.from_numpy(np.rint(tasks.support_ratings).astype(np.int64)).to(device),
        targets=np.asarray(tasks.targets, dtype=np.float64),
    )


# ---- the inner loop -----------------------------------------------------------------------------


class InnerLoop:
    """Adapt a backbone to T tasks at once and score the adapted parameters on the query rows.

    `adapted`: the parameter names adapted in the inner loop (the meta-parameters); the others
    stay as the module holds them. `table`: the item-table parameter (per-task slices, see the
    module docstring) or None. Inner step k updates parameter i by ``rate[i, k] * gradient``
    (`rates`: a float for MAML's fixed rate, or a tensor [n_adapted, steps] of learnable
    per-layer, per-step rates, MAML++'s LSLR).
    """

    def __init__(self, net: nn.Module, adapted: Sequence[str], table: str | None, steps: int,
                 first_order: bool = False, randomness: str = "different") -> None:
        if randomness not in RANDOMNESS:
            raise ConfigError(f"randomness must be one of {RANDOMNESS}, got {randomness!r}")
        self.net, self.adapted, self.steps = net, list(adapted), int(steps)
        self.table = table if table in self.adapted else None
        self.first_order, self.randomness = bool(first_order), randomness

    def meta_parameters(self) -> dict[str, Tensor]:
        params = dict(self.net.named_parameters())
        return {k: params[k] for k in self.adapted}

    @staticmethod
    def _rate(rates, i: int, k: int):
        return rates if isinstance(rates, (int, float)) else rates[i, k]

    def _task(self, meta: Mapping[str, Tensor], d: Mapping, *, rates, mode: str, record: bool):
        net = self.net
        p = dict(meta)
        if self.table is not None and "table" in d:
            p[self.table] = meta[self.table][d["table"]]
        weighted = "s_w" in d

        def support_loss(params):
            total = 0.0
            for i, tok in enumerate(d["s_tok"]):
                err = (functional_call(net, params, (tok,)) - d["s_tgt"][i]) ** 2 * d["s_known"][i]
                if weighted:
                    err = err * d["s_w"][i]
                total = total + err.sum()
            return total / d["s_cnt"]

        def query_loss(params):
            err = (functional_call(net, params, (d["q_tok"],)) - d["q_tgt"]) ** 2 * d["q_known"]
            return err.sum() / d["q_cnt"]

        losses = []
        for k in range(self.steps):
            g = grad(support_loss)(p)
            if self.first_order:
                g = {n: v.detach() for n, v in g.items()}
            p = {n: p[n] - self._rate(rates, i, k) * g[n] for i, n in enumerate(self.adapted)}
            if record and mode == "loss":
                losses.append(query_loss(p))
        if mode == "predict":
            return RATING_SCALE * functional_call(net, p, (d["q_tok"],))[:, -1]
        if not losses:
            losses.append(query_loss(p))
        return torch.stack(losses)

    def _data(self, batch: Batch, group: Group, weights: Tensor | None) -> dict:
        d = {"s_tok": tuple(r.tokens for r in group.support), "s_tgt": tuple(r.target for r in group.support),
             "s_known": tuple(r.known for r in group.support), "s_cnt": group.support_count,
             "q_tok": group.query.tokens, "q_tgt": group.query.target, "q_known": group.query.known,
             "q_cnt": group.query_count}
        if self.table is not None and group.table is not None:
            d["table"] = group.table
        if weights is not None:
            d["s_w"] = tuple(batch.weight_blocks(group, weights))
        return d

    def _run(self, batch: Batch, rates, weights, mode: str, record: bool, meta=None) -> Tensor:
        meta = self.meta_parameters() if meta is None else meta
        fn = functools.partial(self._task, rates=rates, mode=mode, record=record)
        parts, where = [], []
        with vmappable(self.net):
            for group in batch.groups:
                parts.append(vmap(fn, in_dims=(None, 0), randomness=self.randomness)(meta, self._data(batch, group, weights)))
                where.append(group.index)
        if len(parts) == 1:
            return parts[0]
        order = torch.argsort(torch.cat(where))
        return torch.cat(parts)[order]

    def losses(self, batch: Batch, rates, weights: Tensor | None = None, *, record_steps: bool = False,
               meta: Mapping[str, Tensor] | None = None) -> Tensor:
        """Query losses [T, n] of the adapted parameters: after every inner step (n = steps) when
        `record_steps` (MAML++'s multi-step loss), else after the last (n = 1; with 0 steps: the
        meta-parameters' own query loss). Differentiable w.r.t. the meta-parameters, `rates`
        and `weights` ([T, S, L] per support position, MELO)."""
        return self._run(batch, rates, weights, "loss", record_steps and self.steps > 0, meta)

    def predict(self, batch: Batch, rates, weights: Tensor | None = None) -> Tensor:
        """Adapted predictions [T, Q] (1..5 scale) at the last position of every query row."""
        return self._run(batch, rates, weights, "predict", False)


# ---- the reference (what upstream does) ------------------------------------------------------


def reference_losses(net: nn.Module, tasks: Tasks, adapted: Sequence[str], rates, steps: int, *,
                     first_order: bool = False, weights: Tensor | None = None, record_steps: bool = False,
                     device: torch.device | str = "cpu") -> Tensor:
    """The same query losses [T, n] as :meth:`InnerLoop.losses`, computed as MAML code usually
    does (and MELO's): a Python loop over tasks, a deep copy of the backbone per task, each task's
    real rows padded to the full window, ``torch.autograd.grad(create_graph=True)`` per inner
    step, the whole item table adapted. The tests' and the benchmark's reference."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    params = dict(net.named_parameters())
    meta = {k: params[k] for k in adapted}
    out = []
    with sdpa_kernel(SDPBackend.MATH):
        for t in range(len(tasks)):
            fast = copy.deepcopy(net)
            ns, nq = int(tasks.support_n[t]), int(tasks.query_n[t])
            s_tok = torch.from_numpy(tasks.support_items[t, :ns]).to(device)
            s_rat = torch.from_numpy(tasks.support_ratings[t, :ns]).to(device)
            q_tok = torch.from_numpy(tasks.query_items[t, :nq]).to(device)
            q_rat = torch.from_numpy(tasks.query_ratings[t, :nq]).to(device)
            w = None if weights is None else weights[t, :ns]

            def loss(p, tok, rat, w=None):
                known = (rat > 0).float()
                err = (functional_call(fast, p, (tok,)) - rat / RATING_SCALE) ** 2 * known
                if w is not None:
                    err = err * w
                return err.sum() / known.sum().clamp_min(1)

            p, losses = dict(meta), []
            for k in range(steps):
                g = torch.autograd.grad(loss(p, s_tok, s_rat, w), list(p.values()), create_graph=not first_order)
                p = {n: p[n] - InnerLoop._rate(rates, i, k) * (g[i].detach() if first_order else g[i])
                     for i, n in enumerate(p)}
                if record_steps:
                    losses.append(loss(p, q_tok, q_rat))
            if not losses:
                losses.append(loss(p, q_tok, q_rat))
            out.append(torch.stack(losses))
    return torch.stack(out)


def step_importance(steps: int, iteration: int, anneal_iterations: int) -> list[float]:
    """MAML++'s multi-step loss weights over the inner steps at meta-iteration `iteration`: equal
    (1/N) at the start, every non-final weight falling linearly to 0.03/N over
    `anneal_iterations` while the final one takes the rest; after that only the last step counts."""
    if steps <= 1:
        return [1.0]
    if anneal_iterations <= 0 or iteration >= anneal_iterations:
        return [0.0] * (steps - 1) + [1.0]
    start = 1.0 / steps
    non_final = max(start - iteration * start / anneal_iterations, 0.03 / steps)
    return [non_final] * (steps - 1) + [1.0 - (steps - 1) * non_final]
