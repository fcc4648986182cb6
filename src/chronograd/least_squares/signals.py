"""What each RLS strategy regresses: the rows ``(φ, e)`` of one chunk, read off the model.

A chunk is run one step at a time (``model(x_t, state)``, never hoisted, so every linear call
belongs to one step) under :class:`~chronograd.traces.intercept.intercept_linears`, which hands
each call of a trained weight's linear map ``y = W φ + b`` to a recorder: that is how a layer's
input ``φ`` and output ``y`` are found inside a step without splitting the model.

Per step ``t`` and sample ``b`` (mask weight ``m``, rows are scaled by ``√m``):

* ``inputs`` (FORCE): ``φ`` = the layer's input, ``e = o_t − y*_t``; the layer's output must be
  the model's output (a linear readout), which is checked at every step.
* ``outputs`` (CURBD): ``φ = o_{t−1}``, the model's output one step earlier (the presynaptic
  rates of a recurrent weight), ``e = o_t − y*_t``; the weight is ``(O, O)``.
* ``grad`` (Zhang et al.): ``φ`` = the layer's input, ``e = ∂L̃/∂y`` back-propagated through the
  chunk, ``L̃ = Σ m ½‖o − y*‖²`` for MSE (so a readout gets ``o − y*``), ``Σ m ℓ`` otherwise.
  The mask enters through ``L̃`` only (a step's error may come from later steps), so rows are
  not scaled: a masked step adds its ``φ`` to ``P`` with a zero error.
* ``jacobian`` (extended Kalman / Gauss–Newton): one row per output unit ``j``:
  ``ψ = ∂o_{t,b,j}/∂θ`` over the trained parameters, ``e = o_{t,b,j} − y*_{t,b,j}``; ``ψ``
  includes the recurrence within the chunk (the state entering the chunk is held fixed).
* ``scaled_jacobian`` (generalised Gauss–Newton): rows ``Lᵀ Ψ`` and errors ``L⁺ g`` with
  ``L Lᵀ = ∇²_o ℓ`` and ``g = ∇_o ℓ`` of the criterion, so any twice-differentiable loss
  (cross-entropy included) gets its curvature; for ``½‖o − y*‖²`` it is ``jacobian``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective, mse
from chronograd.traces.intercept import Form, LinearCall, intercept_linears

Rows = list[tuple[Tensor, Tensor]]  # per step: (Φ (N, I), E (N, O))


class Group(NamedTuple):
    """A trained linear map ``y = W φ + b``: what RLS keeps one ``P`` for.

    Attributes:
        weight: name of ``W`` (the key of the group's ``P``).
        bias: name of ``b`` when it is trained (a constant 1 is appended to ``φ``), else None.
        train_weight: whether ``W`` itself is trained (False: only the bias is).
        form: ``"linear"`` (``W`` is ``(O, I)``) or ``"right"`` (``W`` is ``(I, O)``).
        in_features, out_features: ``I`` and ``O``.
    """

    weight: str
    bias: str | None
    train_weight: bool
    form: Form
    in_features: int
    out_features: int

    @property
    def size(self) -> int:
        """Side of ``P``: ``I`` (if ``W`` is trained) plus 1 (if ``b`` is)."""
        return (self.in_features if self.train_weight else 0) + (self.bias is not None)

    def features(self, phi: Tensor) -> Tensor:
        """Regressors ``(N, size)`` from the layer's input ``(N, I)``."""
        parts = [phi] if self.train_weight else []
        if self.bias is not None:
            parts.append(torch.ones_like(phi[:, :1]))
        return torch.cat(parts, dim=1)

    def updates(self, delta: Tensor, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Split ``ΔW̃`` ``(O, size)`` into parameter updates shaped like the parameters."""
        out: dict[str, Tensor] = {}
        if self.train_weight:
            w = params[self.weight]
            dw = delta[:, : self.in_features]
            out[self.weight] = (dw if self.form == "linear" else dw.T).to(w.dtype)
        if self.bias is not None:
            b = params[self.bias]
            out[self.bias] = delta[:, -1].reshape(b.shape).to(b.dtype)
        return out


def group_of(call: LinearCall, params: Mapping[str, Tensor], trained: Mapping[str, Any]) -> Group:
    """The :class:`Group` of a linear call (``form="left"`` is refused)."""
    if call.form == "left":
        raise TypeError(
            f"RLS cannot train {call.weight!r}: it multiplies its input from the left (W @ z); "
            "write it as F.linear(z, W) or z @ W.T so the input's last dimension is the "
            "presynaptic one"
        )
    w = params[call.weight]
    i, o = (w.shape[1], w.shape[0]) if call.form == "linear" else (w.shape[0], w.shape[1])
    bias = call.bias if call.bias is not None and call.bias in trained else None
    return Group(call.weight, bias, call.weight in trained, call.form, int(i), int(o))


class _Recorder:
    """Intercept handler keeping ``(call, y)`` of every linear call of the current step."""

    def __init__(self) -> None:
        self.records: list[tuple[LinearCall, Tensor]] = []

    def __call__(self, call: LinearCall, default: Callable[[], Tensor]) -> Tensor:
        y = default()
        self.records.append((call, y))
        return y


class Trace(NamedTuple):
    """One chunk run step by step: outputs ``(T, B, O)``, final state, linear calls per step."""

    outputs: Tensor
    state: State
    records: list[list[tuple[LinearCall, Tensor]]]


def run_steps(model: nn.Module, xs: Tensor, state: State, params: Mapping[str, Tensor]) -> Trace:
    """Run ``xs`` (``(T, B, I)``) one step at a time, recording the linear calls of ``params``."""
    outs, records = [], []
    for t in range(xs.shape[0]):
        rec = _Recorder()
        with intercept_linears(params, rec):
            o, state = model(xs[t], state)
        if not isinstance(o, Tensor):
            raise TypeError(
                f"RLS needs a model whose output is one tensor (B, O), got {type(o).__name__}"
            )
        outs.append(o)
        records.append(rec.records)
    return Trace(torch.stack(outs), state, records)


def is_least_squares(objective: Objective) -> bool:
    """True when the objective's criterion is chronograd's MSE."""
    return objective.criterion == "mse" or objective.criterion is mse


def _rows_of(x: Tensor, width: int) -> Tensor:
    return x.reshape(-1, width)


def linear_rows(
    strategy: str,
    trace: Trace,
    targets: Tensor,
    weights: Tensor,
    params: Mapping[str, Tensor],
    trained: Mapping[str, Any],
    prev: Tensor | None,
    loss_for_grad: Tensor | None = None,
) -> tuple[dict[str, Group], dict[str, Rows], Tensor | None]:
    """Rows of the ``inputs``, ``outputs`` and ``grad`` strategies for one chunk.

    Args:
        strategy: ``"inputs"``, ``"outputs"`` or ``"grad"``.
        trace: the chunk, from :func:`run_steps` (with a graph for ``grad``).
        targets: ``(T, B, O)``. weights: mask weights ``m`` ``(T, B)``.
        params: every named parameter of the model. trained: the trained ones.
        prev: the model output before the chunk ``(B, O)`` (``outputs``), or None.
        loss_for_grad: ``L̃`` of the chunk (``grad`` only).

    Returns:
        ``(groups, rows, prev)``: the groups seen, their rows per step, the last output.
    """
    groups: dict[str, Group] = {}
    rows: dict[str, Rows] = {}
    seen = [
        (t, call, y)
        for t, rec in enumerate(trace.records)
        for call, y in rec
        if call.weight in trained or (call.bias is not None and call.bias in trained)
    ]
    eps: list[Tensor | None] = [None] * len(seen)
    if strategy == "grad":
        assert loss_for_grad is not None
        need = [i for i, (_, _, y) in enumerate(seen) if y.requires_grad]
        if loss_for_grad.requires_grad and need:
            gs = torch.autograd.grad(loss_for_grad, [seen[i][2] for i in need], allow_unused=True)
            for i, g in zip(need, gs):
                eps[i] = g
    scale = weights.sqrt()  # (T, B)
    by_step: dict[tuple[str, int], list[tuple[Tensor, Tensor]]] = {}
    for i, (t, call, y) in enumerate(seen):
        grp = groups.setdefault(call.weight, group_of(call, params, trained))
        o = trace.outputs[t]
        if strategy == "inputs":
            if y.shape != o.shape or not torch.allclose(y, o, rtol=1e-6, atol=1e-9):
                raise ValueError(
                    f"RLS strategy 'inputs' regresses the output of {call.weight!r} onto the "
                    f"targets, so that linear map must produce the model's output, but its "
                    f"output {tuple(y.shape)} differs from the model's {tuple(o.shape)} (a "
                    "leaky readout, a nonlinearity after it, or a hidden layer); use "
                    "strategy='grad', which back-propagates the error to any layer"
                )
            phi = grp.features(_rows_of(call.input, grp.in_features).detach())
            err = o - targets[t]
            s = scale[t][:, None]
            phi, err = phi * s, err * s
        elif strategy == "outputs":
            if grp.in_features != o.shape[-1] or grp.out_features != o.shape[-1]:
                raise TypeError(
                    f"RLS strategy 'outputs' regresses the model's output on its previous "
                    f"output, so {call.weight!r} must map O = {o.shape[-1]} units onto themselves "
                    f"(a recurrent weight); it maps {grp.in_features} -> {grp.out_features}. Use "
                    "strategy='inputs' for a readout or 'grad' for any layer"
                )
            if (call.weight, t) in by_step:
                continue  # one row per sample and step, however often W is used
            before = prev if t == 0 else trace.outputs[t - 1]
            if before is None:
                continue  # the first step of a sequence has no previous output
            phi = grp.features(before.detach())
            s = scale[t][:, None]
            phi, err = phi * s, (o - targets[t]) * s
        else:
            e = eps[i]
            phi = grp.features(_rows_of(call.input, grp.in_features).detach())
            err = torch.zeros(phi.shape[0], grp.out_features, device=phi.device, dtype=phi.dtype)
            if e is not None:
                err = _rows_of(e, grp.out_features)
        by_step.setdefault((call.weight, t), []).append((phi.detach(), err.detach()))
    for (key, _), parts in sorted(by_step.items(), key=lambda kv: kv[0][1]):
        rows.setdefault(key, []).append(
            (torch.cat([p for p, _ in parts]), torch.cat([e for _, e in parts]))
        )
    last = trace.outputs[-1].detach() if strategy == "outputs" else prev
    return groups, rows, last


def grad_loss(objective: Objective, outputs: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """``L̃`` of the ``grad`` strategy: ``Σ m ½‖o − y*‖²`` for MSE, else ``Σ m ℓ``."""
    if is_least_squares(objective):
        per = 0.5 * (outputs - targets).pow(2).flatten(2).sum(-1)  # (T, B)
    else:
        per = objective.per_sample(outputs, targets)
    return (weights * per).sum()


def jacobian(outputs: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """``Ψ = ∂o/∂θ``: ``(T, B, O, n)`` over the concatenated parameters (autograd rows)."""
    flat = outputs.reshape(-1)
    m = flat.shape[0]
    tensors = list(params.values())
    eye = torch.eye(m, device=flat.device, dtype=flat.dtype)
    try:
        gs = torch.autograd.grad(
            flat, tensors, grad_outputs=eye, is_grads_batched=True, allow_unused=True,
            retain_graph=True,
        )  # fmt: skip
        cols = [
            torch.zeros(m, p.numel(), device=flat.device, dtype=flat.dtype)
            if g is None
            else g.reshape(m, -1)
            for g, p in zip(gs, tensors)
        ]
    except RuntimeError:  # an op without a batching rule: one backward pass per row
        rows = []
        for r in range(m):
            g1 = torch.autograd.grad(flat[r], tensors, allow_unused=True, retain_graph=True)
            rows.append(
                torch.cat(
                    [
                        torch.zeros(p.numel(), device=flat.device, dtype=flat.dtype)
                        if g is None
                        else g.reshape(-1)
                        for g, p in zip(g1, tensors)
                    ]
                )
            )
        return torch.stack(rows).reshape(*outputs.shape, -1)
    return torch.cat(cols, dim=1).reshape(*outputs.shape, -1)


def jacobian_rows(
    strategy: str,
    objective: Objective,
    outputs: Tensor,
    targets: Tensor,
    weights: Tensor,
    psi: Tensor,
) -> Rows:
    """Rows of the ``jacobian`` / ``scaled_jacobian`` strategies, one entry per step.

    Args:
        outputs, targets: ``(T, B, O)`` (targets may be class indices ``(T, B)`` for
            ``scaled_jacobian``). weights: ``(T, B)``. psi: ``(T, B, O, n)``.

    Returns:
        per step ``(Ψ̃ (B·O, n), ẽ (B·O, 1))``.
    """
    T, B, O, n = psi.shape
    outputs = outputs.detach()
    if strategy == "jacobian":
        err = outputs - targets  # (T, B, O)
        rows_psi, rows_err = psi, err
    else:
        g, h = _criterion_derivatives(objective, outputs, targets)  # (T, B, O), (T, B, O, O)
        evals, vecs = torch.linalg.eigh(h)  # h = V diag(λ) Vᵀ
        evals = evals.clamp(min=0.0)
        tol = evals.amax(-1, keepdim=True) * O * torch.finfo(evals.dtype).eps
        s = evals.sqrt()  # L = V diag(s), L Lᵀ = h
        rows_psi = torch.einsum("tbij,tbin->tbjn", vecs * s[..., None, :], psi)  # Lᵀ Ψ
        proj = torch.einsum("tbij,tbi->tbj", vecs, g)  # Vᵀ g
        rows_err = torch.where(evals > tol, proj / s.clamp(min=1e-300), torch.zeros_like(proj))
    scale = weights.sqrt()[..., None]  # (T, B, 1)
    rows_psi = rows_psi * scale[..., None]
    rows_err = rows_err * scale
    return [
        (rows_psi[t].reshape(B * O, n).detach(), rows_err[t].reshape(B * O, 1).detach())
        for t in range(T)
    ]


def _criterion_derivatives(
    objective: Objective, outputs: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor]:
    """``∇_o ℓ`` ``(T, B, O)`` and ``∇²_o ℓ`` ``(T, B, O, O)`` of the per-sample criterion."""
    T, B, O = outputs.shape
    o = outputs.reshape(T * B, O)
    y = targets.reshape(T * B, *targets.shape[2:])

    def criterion(oi: Tensor, yi: Tensor) -> Tensor:
        return objective.per_sample(oi[None, None], yi[None, None])[0, 0]

    # MSE is taken as ½‖o − y*‖², the Gaussian case: exactly the `jacobian` strategy
    ell = _half_squared_error if is_least_squares(objective) else criterion
    try:
        g = torch.func.vmap(torch.func.grad(ell))(o, y)
        h = torch.func.vmap(torch.func.hessian(ell))(o, y)
    except RuntimeError:  # a criterion without batching rules: one sample at a time
        g = torch.stack([torch.func.grad(ell)(o[i], y[i]) for i in range(T * B)])
        h = torch.stack([torch.func.hessian(ell)(o[i], y[i]) for i in range(T * B)])
    return g.reshape(T, B, O), h.reshape(T, B, O, O)


def _half_squared_error(o: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (o - y).pow(2).sum()
