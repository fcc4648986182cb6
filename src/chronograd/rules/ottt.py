"""Online training through time, OTTT (Xiao et al., NeurIPS 2022).

For every relation ``y = W z + b`` of a step (each trainable linear map; see
:mod:`chronograd.traces.intercept`), OTTT keeps a presynaptic trace of the map's input::

    â_t = λ â_{t-1} + z_t            (â_{-1} = 0; reset at each sequence)

The model state is detached at every step and the step's instantaneous loss ``w_t ℓ_t`` is
back-propagated through the layers of that step only; each relation's weight gradient then
uses the trace in place of the instantaneous input::

    ∇W += δ_tᵀ â_t        ∇b += c_t Σ_b δ_t        ∂/∂z_t = Wᵀ δ_t   (the usual spatial path)

with ``δ_t = ∂(w_t ℓ_t)/∂y_t`` and ``c_t = λ c_{t-1} + 1`` the trace of the bias's constant
input (the bias is a weight on an input that is always 1; ``c = 1`` where the input is raw).
For a layer ``u_t = λ u_{t-1} + W z_t + b`` (no reset, no recurrence), ``â_t = ∂u_t/∂W`` and
``c_t = ∂u_t/∂b``, so the rule is exact for a leaky linear integrator read out at the same
step; the reset and the recurrent paths through time are what it drops.

Choices stated:

* ``λ`` of a relation is, by default, the decay of the neuron population the map feeds: the
  ``alpha`` of the nearest enclosing cell (LIF/ALIF membrane, LeakyRNN leak), else its
  ``kappa`` (LeakyReadout), and ``0`` for a stateless cell (``Map``: the output does not
  integrate, so the instantaneous input is exact). Any other cell needs ``decay=`` (a float
  for every relation, or ``{weight-name pattern: λ}``).
* Relations whose input is computed from the network input alone (through parameterless
  layers, with no parameter and no state involved) use that raw input, not a trace
  (``trace_input=True`` traces them too). Recurrent inputs (from the state) are traced.
* Traces are taken at each relation's own input, so parameterless layers between layers
  (flatten, average pooling, dropout with one mask per sequence) need no special handling: the
  trace is always the trace of what the map actually receives. For linear parameterless layers
  this equals passing the upstream trace through the layer (they commute with the decay sum);
  for a nonlinear one (max pooling) it is the trace of the pooled spikes, which is what the
  map's ``∂u/∂W`` needs.
* Parameters outside any relation (a trainable threshold, say) get their instantaneous,
  same-step gradient.
* ``chunk_size=1``: one update per step (each step's loss normalised as its own window, like
  TBPTT(1)); ``chunk_size=k`` one every ``k`` steps. ``chunk_size=None`` (default): steps are
  still processed one by one with flat memory, their gradients summed, one update per sequence
  with the whole-sequence weights.

The weight gradient is produced by a small autograd function (value ``W z + b``, input gradient
``Wᵀ δ``, weight gradient ``δᵀ â``), so there is no extra forward matmul.

Xiao, Meng, Zhang, Wang, Lin: "Online Training Through Time for Spiking Neural Networks",
NeurIPS 2022.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from chronograd.cells.base import Map, State, is_cell, param_like
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    PersistentCarry,
    RuleStep,
    check_chunk_size,
)
from chronograd.sequence import unroll_states
from chronograd.traces.instantaneous import check_replay_block, instantaneous_window
from chronograd.traces.intercept import LinearCall, find_relations, intercept_linears

Key = tuple[str, int]  # (weight name, position of the call in the step)


class _TracedLinear(torch.autograd.Function):
    """``y = z Wᵀ + b`` (or ``z W + b``) whose weight gradient is ``δᵀ â`` instead of ``δᵀ z``."""

    @staticmethod
    def forward(
        z: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        trace: Tensor,
        right: bool,
        ones: float | Tensor,
    ) -> Tensor:
        if not right:
            return F.linear(z, weight, bias)
        y = z @ weight
        return y if bias is None else y + bias

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, weight, bias, trace, right, ones = inputs
        ctx.save_for_backward(weight, trace)
        ctx.right, ctx.ones = right, ones
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, trace = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, H)
        a2 = trace.reshape(-1, trace.shape[-1])  # (N, I)
        dz = dw = db = None
        if ctx.needs_input_grad[0]:
            dz = grad @ (weight.t() if ctx.right else weight)  # (..., I)
        if ctx.needs_input_grad[1]:
            dw = a2.t() @ g2 if ctx.right else g2.t() @ a2  # (I, H) or (H, I)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            ones = ctx.ones
            if isinstance(ones, Tensor):  # one bias trace per row (steps replayed side by side)
                db = (
                    (grad * ones.reshape(ones.shape + (1,) * (grad.dim() - 1)))
                    .reshape(-1, grad.shape[-1])
                    .sum(0)
                )
            else:
                db = g2.sum(0) * ones
        return dz, dw, db, None, None, None


def _scan(
    z: Tensor, steps: int, lam: float, prev: tuple[Tensor, float] | None
) -> tuple[Tensor, Tensor]:
    """Presynaptic traces of ``steps`` consecutive steps stacked along the batch.

    ``z``: ``(K·B, ...)`` the relation's inputs of the ``K`` steps in order; ``prev``: the
    trace and bias trace before the first of them. Returns ``â`` shaped like ``z`` and the
    bias traces ``(K·B,)``, with ``â_k = λ â_{k-1} + z_k`` and ``c_k = λ c_{k-1} + 1``
    (``â = z``, ``c = 1`` at the first step of a sequence).
    """
    zs = z.reshape(steps, -1, *z.shape[1:])  # (K, B, ...)
    a, c = (None, 0.0) if prev is None else prev
    out: list[Tensor] = []
    ones: list[float] = []
    for k in range(steps):
        a = zs[k] if a is None else torch.add(zs[k], a, alpha=lam)
        c = lam * c + 1.0 if out or prev is not None else 1.0
        out.append(a)
        ones.append(c)
    rows = zs.shape[1]
    c_t = torch.tensor(ones, dtype=z.dtype, device=z.device).repeat_interleave(rows)
    return torch.stack(out).reshape(z.shape), c_t


def check_form(call: LinearCall) -> None:
    """Raise ``TypeError`` for a relation written ``W @ z`` (the trace needs ``z``'s last dim)."""
    if call.form == "left":
        raise TypeError(
            f"relation {call.weight!r} multiplies its input from the left (W @ z); write it as "
            "F.linear(z, W) or z @ W.T so the input's last dimension is the presynaptic one"
        )


def traced_linear(
    call: LinearCall,
    weight: Tensor,
    bias: Tensor | None,
    trace: Tensor,
    ones: float | Tensor = 1.0,
) -> Tensor:
    """The relation's output with OTTT's gradients.

    Args:
        trace: ``â``, shaped like ``call.input``; the weight gradient is ``δᵀ â``.
        ones: the trace of the bias's constant input 1 (``Σ_τ λ^{t-τ}``); ``∇b = ones · Σ δ``;
            a tensor ``(N,)`` gives one value per row of the input's first dimension.
    """
    check_form(call)
    ones = ones if isinstance(ones, Tensor) else float(ones)
    out: Tensor = _TracedLinear.apply(call.input, weight, bias, trace, call.form == "right", ones)
    return out


def _decay_of(cell: nn.Module) -> float | None:
    """The membrane/leak decay of a cell (``alpha``, else ``kappa``; 0 for ``Map``)."""
    if isinstance(cell, Map):
        return 0.0
    for attr in ("alpha", "kappa"):
        v = getattr(cell, attr, None)
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise TypeError(
                    f"{type(cell).__name__}.{attr} has {v.numel()} values (one per neuron); "
                    "OTTT's presynaptic trace needs one decay per relation: pass OTTT(decay=...)"
                )
            return float(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def relation_decay(
    model: nn.Module, weight: str, decay: float | tuple[tuple[str, float], ...] | None = None
) -> float:
    """``λ`` of the relation whose weight is named ``weight`` (see the module docstring)."""
    if isinstance(decay, (int, float)):
        return float(decay)
    if decay is not None:
        for pattern, value in decay:
            if fnmatch.fnmatchcase(weight, pattern):
                return float(value)
    parts = weight.split(".")[:-1]
    for i in range(len(parts), -1, -1):
        module = model.get_submodule(".".join(parts[:i]))
        if is_cell(module):
            lam = _decay_of(module)
            if lam is None:
                break
            return lam
    raise TypeError(
        f"OTTT cannot tell the decay of the neurons fed by {weight!r}: its cell has no `alpha` "
        "or `kappa`. Pass OTTT(decay=λ) or OTTT(decay={'" + weight + "': λ})"
    )


def _probe(
    model: nn.Module,
    x: Tensor,
    state: State,
    named: Mapping[str, Tensor],
    trained: Mapping[str, Tensor],
) -> frozenset[Key]:
    """Relations whose input depends on the network input and on no parameter (nor state).

    Two probe steps with substituted copies of every parameter: one where only ``x`` carries
    gradient, one where only the parameters do. Also checks that every relation's bias is a
    parameter (or absent), since the traced op rebuilds ``W z + b`` from the call.
    """
    frozen = {n: p.detach() for n, p in named.items()}
    live = {n: p.detach().requires_grad_(p.is_floating_point()) for n, p in named.items()}
    from_x: set[Key] = set()
    from_params: set[Key] = set()

    def check(params: dict[str, Tensor], seen: set[Key]) -> Any:
        def handler(call: LinearCall, default: Any) -> Tensor:
            if call.input.requires_grad:
                seen.add((call.weight, call.position))
            out: Tensor = default()
            if call.weight not in trained:
                return out
            check_form(call)
            bias = params[call.bias] if call.bias is not None else None
            with torch.no_grad():
                rebuilt = _TracedLinear.forward(
                    call.input, params[call.weight], bias, call.input, call.form == "right", 1.0
                )
            if rebuilt.shape != out.shape or not torch.allclose(rebuilt, out):
                raise TypeError(
                    f"relation {call.weight!r} adds a bias that is not a model parameter; "
                    "OTTT rebuilds W z + b from the call, so make the bias an nn.Parameter "
                    "(requires_grad=False to keep it fixed) or add it outside the map"
                )
            return out

        return handler

    xg = x.detach()
    if xg.is_floating_point():
        xg = xg.requires_grad_(True)
    with torch.enable_grad():
        with intercept_linears(frozen, check(frozen, from_x)):
            functional_call(model, frozen, (xg, state))
        with intercept_linears(live, check(live, from_params)):
            functional_call(model, live, (x.detach(), state))
    return frozenset(from_x - from_params)


class OTTTCarry(NamedTuple):
    """OTTT's carry.

    Attributes:
        traces: ``{(weight name, call position): (â, c)}``: ``â`` shaped like the relation's
            input, ``c = Σ_τ λ^{t-τ}`` the trace of the bias's constant input 1.
        raw: relations fed by the raw network input (found at the first step, then kept).
        decays: ``{weight name: λ}`` (resolved once, then kept).
    """

    traces: dict[Key, tuple[Tensor, float]]
    raw: frozenset[Key] | None
    decays: dict[str, float]


@final
@dataclass(frozen=True)
class OTTT(LearningRule, PersistentCarry):
    """Online training through time (presynaptic traces, spatial backprop only).

    Args:
        chunk_size: steps per update: ``1`` (online, one update per step), ``k``, or ``None``
            (default: one per sequence, the step gradients summed). Memory is flat in ``T``
            either way.
        decay: ``λ`` of the traces: ``None`` (default) uses the decay of the population each
            map feeds; a float for every relation; or ``{weight-name pattern: λ}`` (patterns
            not matched fall back to the default).
        trace_input: trace the relations fed by the raw network input too (default: they use
            the instantaneous input, as in the paper).
        replay_block: steps replayed side by side as one batch after running in sequence
            without a graph (their traces a scan over the block), one backward pass per block;
            memory ``O(replay_block · B)``, flat in ``T``. ``None``: one graph per step.
        (plus the options shared by every rule, see :class:`LearningRule`)
    """

    chunk_size: int | None = None
    decay: float | Mapping[str, float] | tuple[tuple[str, float], ...] | None = None
    trace_input: bool = False
    replay_block: int | None = 32

    def _check(self) -> None:
        check_chunk_size(self.chunk_size)
        check_replay_block(self.replay_block)
        if isinstance(self.decay, Mapping):
            object.__setattr__(self, "decay", tuple((str(k), v) for k, v in self.decay.items()))
        values: list[Any]
        if self.decay is None:
            values = []
        elif isinstance(self.decay, tuple):
            values = [v for _, v in self.decay]
        else:
            values = [self.decay]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"a trace decay must be a number in [0, 1], got {v!r}")
            if math.isnan(v):
                raise ValueError("a trace decay must not be NaN")

    def _decay(self) -> float | tuple[tuple[str, float], ...] | None:
        return self.decay  # type: ignore[return-value]  # normalised in _check

    def check_model(self, model: nn.Module) -> None:
        size = getattr(model, "input_size", None)
        if not isinstance(size, int):
            return  # checked at the first step instead
        live = self.trained(model)
        device, dtype = param_like(model)
        x = torch.zeros(1, size, device=device, dtype=dtype)
        # a probe step; the generator is restored (init_state may draw, e.g. a dropout mask)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            state = model.init_state(1, device=x.device, dtype=x.dtype)  # type: ignore[operator]
            calls = find_relations(model, x, state, live)
        for call in calls:
            check_form(call)
            relation_decay(model, call.weight, self._decay())

    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        return OTTTCarry({}, None, {})

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        c: OTTTCarry = carry
        return OTTTCarry({}, c.raw, c.decays)

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        c: OTTTCarry = carry
        live = self.trained(model)
        named = dict(model.named_parameters())
        raw = c.raw if c.raw is not None else _probe(model, xs[0], state, named, live)
        if self.trace_input:
            raw = frozenset()
        traces = dict(c.traces)
        decays = dict(c.decays)

        def handler(call: LinearCall, default: Any) -> Tensor:
            if call.weight not in live:
                out: Tensor = default()
                return out
            key = (call.weight, call.position)
            z = call.input.detach()
            if key in raw:
                trace, ones = z, 1.0
            else:
                if call.weight not in decays:
                    decays[call.weight] = relation_decay(model, call.weight, self._decay())
                lam = decays[call.weight]
                prev = traces.get(key)
                if prev is None:
                    trace, ones = z, 1.0
                else:
                    trace, ones = torch.add(z, prev[0], alpha=lam), lam * prev[1] + 1.0
                traces[key] = (trace, ones)
            if not torch.is_grad_enabled():
                out = default()
                return out
            bias = named[call.bias] if call.bias is not None else None
            return traced_linear(call, live[call.weight], bias, trace, ones)

        def step(x: Tensor, s: State, t: int) -> tuple[Any, State]:
            with intercept_linears(named, handler):
                out: tuple[Any, State] = model(x, s)
            return out

        def side_by_side(steps: int) -> Any:
            """The handler for ``steps`` steps run as one batch: each relation's input
            ``(K·B, I)`` holds the steps in order, so the traces are a scan over ``K``."""

            def handler(call: LinearCall, default: Any) -> Tensor:
                if call.weight not in live:
                    out: Tensor = default()
                    return out
                key = (call.weight, call.position)
                z = call.input.detach()
                if key in raw:
                    trace, ones = z, torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
                else:
                    if call.weight not in decays:
                        decays[call.weight] = relation_decay(model, call.weight, self._decay())
                    trace, ones = _scan(z, steps, decays[call.weight], traces.get(key))
                    traces[key] = (trace[-(z.shape[0] // steps) :], float(ones[-1]))
                if not torch.is_grad_enabled():
                    return default()
                bias = named[call.bias] if call.bias is not None else None
                return traced_linear(call, live[call.weight], bias, trace, ones)

            return handler

        def replay(x: Tensor, s: State, captured: list[Any]) -> tuple[Any, State]:
            with intercept_linears(named, side_by_side(len(captured))):
                out: tuple[Any, State] = model(x, s)
            return out

        r = instantaneous_window(
            step, xs, targets, state, objective, span, dict(live),
            replay=None if self.replay_block is None else replay, block=self.replay_block or 1,
            segment=lambda x, s: unroll_states(model, x, s), replay_all=True,
        )  # fmt: skip
        return RuleStep(r.grads, r.state, OTTTCarry(traces, raw, decays), r.loss, r.outputs)
