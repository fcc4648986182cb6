"""The two evaluations of e-prop's gradient for one update window (:mod:`chronograd.rules.eprop`).

Both compute, for the network of :mod:`chronograd.traces.eprop_network`::

    ∂E/∂W_ji = Σ_t Σ_b L^b_{j,t} F_κ(e^b_ji)_t        L_t = B ∂ℓ_t/∂y_t

(plus the firing-rate regularizer's ``Σ_t λ^reg_j e_t`` and the readout's exact gradient):

* :func:`online_chunk` — forward, in time: the eligibility traces are carried step by step
  (advanced once per block of up to 32 steps by an exact regrouping of the recursion,
  :func:`chronograd.traces.recursion.advance`; one step at a time when traces are norm-clipped),
  so memory is flat in ``T`` and any window works (every step, every ``k`` steps, the whole
  sequence).
* :func:`reverse_chunk` — backward, in time, for one update per sequence: the same sums
  ``Σ_t L_t F_t`` regrouped as an adjoint recursion over ``T`` (the transpose of the trace
  recursion), which needs no ``(B, I, H)`` trace: about the cost of one BPTT and ``O(T)``
  memory. It is the reference code's "autodiff" e-prop (BPTT with the recurrent spikes' and
  the reset's gradient stopped, ``B`` in place of ``W_outᵀ``), written out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from chronograd.cells.lif import ALIF
from chronograd.objectives import Objective
from chronograd.rules.base import penalty_grads
from chronograd.sequence import Span
from chronograd.traces.analytic import alif_jacobian, lif_jacobian
from chronograd.traces.chunk import BLOCK, add_grad, time_slice
from chronograd.traces.eprop_network import (
    Block,
    Layout,
    Net,
    layout,
    presynaptic,
    readout_error,
    readout_traces,
    relation_input,
    run_block,
    transition,
)
from chronograd.traces.learning_signal import hidden_signal
from chronograd.traces.recursion import advance


class Options(NamedTuple):
    """The options of :class:`~chronograd.rules.EProp` the evaluations read.

    Attributes:
        trace_norm_clip: per-sample Frobenius-norm bound of ``F_κ(e)`` (None: no clip).
        rate_target: target rate ``f*`` of the firing-rate regularizer (None: off).
        rate_reg: its coefficient ``c_reg``.
        trace_dtype: dtype of the traces (None: the input's).
    """

    trace_norm_clip: float | None
    rate_target: float | None
    rate_reg: float
    trace_dtype: torch.dtype | None


class Window(NamedTuple):
    """What an evaluation returns for one window: the rule's step, less the carry.

    Attributes:
        grads: per trained parameter name, its gradient.
        state: the model state after the window.
        traces: the traces after the window (to carry into the next window of the sequence).
        loss: the window's detached loss.
        outputs: ``(T_w, B, O)`` the readout's outputs.
    """

    grads: dict[str, Tensor]
    state: Any
    traces: dict[str, Tensor]
    loss: Tensor
    outputs: Tensor


def _rate_signal(rule: Options, spikes: Tensor, count: int) -> Tensor:
    """``∂E_reg/∂z_{b,t,j} = 2 c_reg (f̄_j − f*) / (B·T_w)`` for the window's mean rate ``f̄``.

    ``spikes`` (H,): the window's spike count per neuron; ``count = B · T_w``.
    """
    assert rule.rate_target is not None
    rate = spikes / count
    return 2.0 * rule.rate_reg * (rate - rule.rate_target) / count


def _finish(
    params: dict[str, Any], grads: dict[str, Tensor], objective: Objective
) -> dict[str, Tensor]:
    pen = penalty_grads(objective, params)
    for n, g in (pen or {}).items():
        add_grad(grads, n, g)
    return {
        n: (grads[n] if n in grads else torch.zeros_like(p)).to(p.dtype).reshape(p.shape)
        for n, p in params.items()
    }


def online_chunk(
    rule: Options,
    net: Net,
    params: dict[str, Any],
    xs: Tensor,
    targets: Any,
    state: Any,
    traces: dict[str, Tensor],
    objective: Objective,
    span: Span,
    feedback: Tensor,
    modulator: Tensor | None = None,
) -> Window:
    """e-prop over one window ``xs`` (T_w, B, I) with the traces ``traces`` carried in.

    ``feedback``: ``B`` (H, O) for this window. ``modulator``: a neuromodulator ``M`` (T_w, B)
    or (T_w, B, H) that replaces the learning signal ``B ∂ℓ_t/∂y_t``
    (:mod:`chronograd.traces.learning_signal`). ``traces`` is not modified (a new dictionary
    is returned; its tensors are advanced in place).
    """
    T, Bsz = xs.shape[0], xs.shape[1]
    traces = dict(traces)
    names = net.names
    roles = [r for r in ("w_in", "b_in", "w_rec") if r in names and names[r] in params]
    kappa = net.readout.kappa
    rate = rule.rate_target is not None
    lay = layout(net.hidden, rate)
    tdtype = rule.trace_dtype
    w = objective.weights(
        span.total, Bsz, start=span.start, stop=span.stop, device=xs.device, dtype=xs.dtype
    )
    if rate and lay.G is not None:  # G sums e over this window only
        for r in roles:
            if f"X:{r}" in traces:
                traces[f"X:{r}"][lay.G].zero_()
    spikes = xs.new_zeros(net.hidden.hidden_size)
    grads: dict[str, Tensor] = {}
    total = xs.new_zeros(())
    outs = []
    step = 1 if rule.trace_norm_clip is not None else BLOCK
    for b0 in range(0, T, step):
        b1 = min(T, b0 + step)
        blk = run_block(net, xs[b0:b1], state)
        state = blk.state
        outs.append(blk.y)
        wb = w[b0:b1]
        loss, gy = readout_error(objective, blk.y, time_slice(targets, b0, b1), wb)
        total = total + loss
        _readout_grads(net, params, blk, gy, traces, grads)
        if not roles:
            continue
        mb = None if modulator is None else modulator[b0:b1]
        signal = bool(wb.ne(0).any()) if mb is None else bool(mb.ne(0).any())
        delta = None
        if signal or (rate and b1 == T):
            delta = blk.psi.new_zeros(*blk.psi[1:].shape, lay.S)  # (K, B, H, S)
            delta[..., lay.F] = hidden_signal(gy, feedback, mb)  # L_t = B ∂ℓ_t/∂y_t, or M_t
        if rate:
            spikes += blk.z[1:].sum((0, 1))
            if b1 == T:
                assert delta is not None and lay.G is not None
                delta[-1, ..., lay.G] = _rate_signal(rule, spikes, T * Bsz)
        D, c = transition(net.hidden, kappa, blk.psi[:-1], blk.psi[1:], lay)
        for role in roles:
            _advance(rule, net, role, blk, lay, D, c, delta, traces, grads, tdtype)
    grads = _finish(params, grads, objective)
    return Window(grads, state, traces, total.detach(), torch.cat(outs))


def _advance(
    rule: Options,
    net: Net,
    role: str,
    blk: Block,
    lay: Layout,
    D: Tensor,
    c: Tensor,
    delta: Tensor | None,
    traces: dict[str, Tensor],
    grads: dict[str, Tensor],
    tdtype: torch.dtype | None,
) -> None:
    """Advance one relation's trace over the block and add its gradient."""
    u = relation_input(role, blk)  # (K, B, I)
    if lay.fold:
        zbar = traces.get(f"zbar:{role}")
        if zbar is None:
            zbar = traces[f"zbar:{role}"] = u.new_zeros(u.shape[1:])
        zeta = presynaptic(zbar, net.hidden.alpha, u)
    else:
        zeta = u
    key = f"X:{role}"
    X = traces.get(key)
    fresh = X is None
    if X is None:  # written in full by the first advance
        _, B, I = zeta.shape  # (K, B, I)
        X = traces[key] = zeta.new_empty(lay.S, B, I, c.shape[2], dtype=tdtype or zeta.dtype)
    clip = rule.trace_norm_clip
    if clip is None:
        g = advance(X, zeta, D, c, delta, None, fresh)  # (I, H)
    else:  # one step: advance, clip each sample's ‖F_b‖ to `clip`, then contract
        advance(X, zeta, D, c, None, None, fresh)
        F = X[lay.F]  # (B, I, H)
        norm = torch.linalg.vector_norm(F.flatten(1), dim=1)  # (B,)
        F.mul_(torch.clamp(clip / (norm + 1e-30), max=1.0)[:, None, None])
        g = None if delta is None else torch.einsum("bha,abih->ih", delta[0].to(X.dtype), X)
    if g is not None:
        name = net.names[role]
        add_grad(grads, name, g[0] if role == "b_in" else g.t())


def _readout_grads(
    net: Net,
    params: dict[str, Any],
    blk: Block,
    gy: Tensor,
    traces: dict[str, Tensor],
    grads: dict[str, Tensor],
) -> None:
    """Exact online gradient of the readout's weight and bias (``κ``-traces of ``z`` and 1)."""
    names = net.names
    wanted = [r for r in ("w_out", "b_out") if r in names and names[r] in params]
    if not wanted:
        return
    z = blk.z[1:]  # (K, B, H)
    if "zk" not in traces:
        traces["zk"] = z.new_zeros(z.shape[1:])
        traces["ck"] = z.new_zeros(())
    zh, ch = readout_traces(net.readout.kappa, z, traces["zk"], traces["ck"])
    K, B, O = gy.shape
    if "w_out" in wanted:
        add_grad(grads, names["w_out"], gy.reshape(K * B, O).t() @ zh.reshape(K * B, -1))
    if "b_out" in wanted:
        add_grad(grads, names["b_out"], (gy.sum(1) * ch[:, None]).sum(0))


def reverse_chunk(
    rule: Options,
    net: Net,
    params: dict[str, Any],
    xs: Tensor,
    targets: Any,
    state: Any,
    traces: dict[str, Tensor],
    objective: Objective,
    span: Span,
    feedback: Tensor,
    modulator: Tensor | None = None,
) -> Window:
    """e-prop over the whole sequence ``xs`` (T, B, I) by the adjoint of the trace recursion.

    With ``ν_t = Σ_{s≥t} κ^{s-t} ∂ℓ_s/∂y_s`` (O), ``λ_t = B ν_t`` (+ the rate signal) is the
    signal the eligibility trace ``e_t`` meets (``Σ_t L_t F_κ(e)_t = Σ_t λ_t e_t``), and
    ``p_t = c_t λ_t + M_{t+1}ᵀ p_{t+1}`` (``c_t = (ψ_t, −βψ_t)``) carries it back through the
    eligibility vector, so ``∂E/∂W = Σ_{t,b} p^v_t ⊗ u_t``. Readout: ``Σ_t ν_t ⊗ z_t``.
    With a neuromodulator ``M`` (T, B) or (T, B, H), ``λ_t = Σ_{s≥t} κ^{s-t} M_s``.
    """
    T, Bsz = xs.shape[0], xs.shape[1]
    names = net.names
    blk = run_block(net, xs, state)
    w = objective.weights(
        span.total, Bsz, start=span.start, stop=span.stop, device=xs.device, dtype=xs.dtype
    )
    loss, gy = readout_error(objective, blk.y, targets, w)
    nu = torch.empty_like(gy)  # (T, B, O)
    acc = torch.zeros_like(gy[0])
    kappa = net.readout.kappa
    for t in range(T - 1, -1, -1):
        acc = gy[t] + kappa * acc
        nu[t] = acc
    grads: dict[str, Tensor] = {}
    z = blk.z[1:]
    if names.get("w_out") in params:
        grads[names["w_out"]] = nu.reshape(T * Bsz, -1).t() @ z.reshape(T * Bsz, -1)
    if names.get("b_out") in params:
        grads[names["b_out"]] = nu.sum((0, 1))
    roles = [r for r in ("w_in", "b_in", "w_rec") if r in names and names[r] in params]
    if roles:
        if modulator is None:
            lam = nu @ feedback.t().to(nu.dtype)  # (T, B, H)
        else:
            mu = hidden_signal(gy, feedback, modulator)
            lam = torch.empty_like(mu)
            run = torch.zeros_like(mu[0])
            for t in range(T - 1, -1, -1):
                run = mu[t] + kappa * run
                lam[t] = run
        if rule.rate_target is not None:
            lam = lam + _rate_signal(rule, z.sum((0, 1)), T * Bsz)
        pv = _adjoint(net, blk, lam)  # (T, B, H)
        P = pv.reshape(T * Bsz, -1)
        for role in roles:
            u = relation_input(role, blk).reshape(T * Bsz, -1)
            grads[names[role]] = P.sum(0) if role == "b_in" else P.t() @ u
    grads = _finish(params, grads, objective)
    return Window(grads, blk.state, traces, loss, blk.y)


def _adjoint(net: Net, blk: Block, lam: Tensor) -> Tensor:
    """``p^v_t`` (T, B, H) of ``p_t = c_t λ_t + M_{t+1}ᵀ p_{t+1}`` (see :func:`reverse_chunk`).

    ``M_{t+1}`` is the neuron's Jacobian (:func:`~chronograd.traces.analytic.alif_jacobian`)
    built from ``ψ_t``; its entries are computed for all steps at once, so each step is the
    transposed 2×2 (ALIF) or 1×1 (LIF) product ``p ← M_{t+1}ᵀ p`` and the source ``c_t λ_t``.
    """
    hidden = net.hidden
    psi = blk.psi[1:]  # ψ_t, (T, B, H); M_{t+1} is built from ψ_t
    reset = not hidden.detach_reset
    th, alpha = hidden.threshold, hidden.alpha
    T = psi.shape[0]
    out = torch.empty_like(lam)
    pv = torch.zeros_like(lam[0])
    s = psi * lam  # ψ_t λ_t: the v-part of c_t λ_t
    if isinstance(hidden, ALIF):
        beta = hidden.beta
        vv, va, av, aa = (
            _per_step(m, psi, T) for m in alif_jacobian(psi, alpha, hidden.rho, beta, th, reset)
        )
        bs = beta * s  # βψ_t λ_t: the a-part of c_t λ_t is its negative
        pa = torch.zeros_like(pv)
        for t in range(T - 1, -1, -1):
            if t < T - 1:  # M_{t+1}ᵀ p_{t+1}
                pv, pa = vv[t] * pv + av[t] * pa, va[t] * pv + aa[t] * pa
            pv = pv + s[t]
            pa = pa - bs[t]
            out[t] = pv
        return out
    vv = _per_step(lif_jacobian(psi, alpha, th, reset), psi, T)
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            pv = vv[t] * pv
        pv = pv + s[t]
        out[t] = pv
    return out


def _per_step(m: Tensor | float, psi: Tensor, T: int) -> list[Any]:
    """A Jacobian entry indexed by step: its ``T`` slices, or ``T`` times a constant entry."""
    if isinstance(m, Tensor) and m.shape == psi.shape:
        return list(m.unbind(0))
    return [m] * T
