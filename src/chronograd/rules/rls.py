"""Recursive least squares and FORCE learning, with five strategies that all converge.

For a trained linear map ``y = W φ (+ b)`` with inverse correlation matrix ``P``, forgetting
factor ``λ ∈ (0, 1]`` and ``P_0 = I/δ`` (Sussillo & Abbott 2009, "Generating coherent patterns
of activity from chaotic neural networks", Neuron 63)::

    k = P φ      c = 1 / (λ + φᵀ k)      W ← W − c e kᵀ      P ← (P − c k kᵀ) / λ

With ``λ = 1``, after rows ``Φ``, ``Y`` (weights ``m``) RLS holds exactly the ridge solution
``W = argmin Σ m ‖W φ − y‖² + δ ‖W − W_0‖²`` and ``P = (δ I + Φᵀ M Φ)⁻¹`` (a trained bias is one
more input fixed at 1, penalised alike). The strategies differ in what ``φ`` and ``e`` are
(:mod:`chronograd.least_squares.signals`):

* ``inputs``: FORCE. ``φ`` = the layer's input, ``e = o − y*``; the layer is the readout.
* ``outputs``: CURBD (Perich et al. 2021, "Inferring brain-wide interactions using data-
  constrained recurrent neural network models"). ``φ = o_{t−1}``, the model's output one step
  earlier, ``e = o_t − y*_t``: a recurrent ``(O, O)`` weight regressed on last step's rates.
* ``grad``: P-preconditioned gradient (Zhang et al. 2021, "Revisiting recursive least squares
  for training deep neural networks"): ``e = ∂L̃/∂y`` back-propagated through the chunk, so
  hidden layers train too; on a readout with MSE it is ``inputs``.
* ``jacobian``: extended Kalman filter / recursive Gauss–Newton over the vector ``θ`` of every
  trained parameter (Al-Batah et al. 2010, "Modified recursive least squares algorithm to train
  the hybrid multilayered perceptron"; Singhal & Wu 1989): a row ``ψ = ∂o_j/∂θ`` per output
  unit, ``K = P Ψᵀ (λ I + Ψ P Ψᵀ)⁻¹``, ``θ ← θ − K e``, ``P ← (P − K Ψ P)/λ``.
* ``scaled_jacobian``: the same with ``Ψ`` scaled by the square root of the criterion's Hessian
  ``L Lᵀ = ∇²_o ℓ`` and ``e = L⁺ ∇_o ℓ`` (generalised Gauss–Newton): any criterion.

``inputs``, ``jacobian`` and ``scaled_jacobian`` are linear-Gaussian (exact RLS / Kalman) on a
model linear in the trained parameters, and so is ``grad`` on a readout; ``outputs`` regresses on
the model's own past outputs, so it converges like output-error identification rather than in
one pass.

NeuroTorch's ``RLS`` (seed 000) documents that its ``grad``, ``jacobian`` and
``scaled_jacobian`` strategies do not work; it also averages the batch into one sample and
multiplies ``P`` by ``λ``. Here every strategy converges, a batch is ``B`` rank-1 updates or
one Woodbury rank-``B`` update (same result), and ``P`` divides by ``λ``.

RLS writes its changes into ``RuleStep.updates`` (no gradient, no optimizer): train with
``Trainer(model, RLS(...), objective, optimizer=False)`` or ``chronograd.training.run_sequence(...,
apply=apply_to_model(model, None))``. ``gradient()`` has nothing to report for RLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd._tree import detach
from chronograd.cells.base import State, check_cell, param_like
from chronograd.least_squares.core import BatchUpdate, format_bytes, initial_p, p_bytes, rls_steps_
from chronograd.least_squares.signals import (
    grad_loss,
    group_of,
    is_least_squares,
    jacobian,
    jacobian_rows,
    linear_rows,
    run_steps,
)
from chronograd.objectives import Objective
from chronograd.rules.base import (
    Carry,
    Chunk,
    LearningRule,
    PersistentCarry,
    RuleStep,
    check_chunk_size,
)
from chronograd.traces.intercept import find_relations

STRATEGIES = ("inputs", "outputs", "grad", "jacobian", "scaled_jacobian")
_LINEAR = ("inputs", "outputs", "grad")
_THETA = "theta"  # key of the joint P of the jacobian strategies
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class RLSCarry(NamedTuple):
    """What RLS carries.

    Attributes:
        P: ``{key: P}``: one ``(I, I)`` matrix per trained linear map (keyed by its weight's
            name), or one ``(n, n)`` matrix under ``"theta"`` for the jacobian strategies.
            Persists across sequences and is saved in checkpoints. Updated in place by each
            update (a fresh ``I × I`` matrix per step would dominate FORCE's cost);
            :meth:`RLS.carry_state_dict` returns copies.
        prev: the model's output at the previous step ``(B, O)`` (``outputs`` strategy; reset at
            each sequence).
        steps: number of RLS updates made so far.
    """

    P: dict[str, Tensor]
    prev: Tensor | None
    steps: int


@final
@dataclass(frozen=True)
class RLS(LearningRule, PersistentCarry):
    """Recursive least squares / FORCE (see the module docstring for the equations).

    Args:
        strategy: ``"inputs"`` (FORCE), ``"outputs"`` (CURBD), ``"grad"``, ``"jacobian"`` or
            ``"scaled_jacobian"``.
        delta: ``δ > 0``; ``P_0 = I/δ`` (the ridge penalty of the first update).
        forgetting: ``λ ∈ (0, 1]``; ``P`` is divided by ``λ`` at each step (1: no forgetting).
        chunk_size: steps per update (None: one update per sequence). An update uses every
            step of its chunk, in order.
        batch_update: ``"sequential"`` (``B`` rank-1 updates per step) or ``"woodbury"`` (one
            rank-``B`` update); equal up to rounding.
        max_p_bytes: refuse (``ValueError``) to build a ``P`` larger than this.
        p_dtype: ``"float32"`` / ``"float64"`` for ``P`` (default: the parameter's dtype).
        (plus ``params`` and ``nonfinite``, see :class:`LearningRule`; gradient transforms
            and ``accumulate`` do not apply and raise)
    """

    needs_optimizer: ClassVar[bool] = False
    accumulate_refused: ClassVar[str | None] = (
        "RLS updates the weights itself after every chunk and produces no gradient to "
        "accumulate; set chunk_size=None for one update per sequence"
    )

    strategy: str = "inputs"
    delta: float = 1.0
    forgetting: float = 1.0
    chunk_size: int | None = 1
    batch_update: BatchUpdate = "sequential"
    max_p_bytes: int = 2**30
    p_dtype: str | None = None

    def _check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown RLS strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)):
            raise TypeError(f"delta must be a number > 0, got {self.delta!r}")
        if not self.delta > 0:
            raise ValueError(f"delta must be > 0 (P_0 = I/delta), got {self.delta}")
        if isinstance(self.forgetting, bool) or not isinstance(self.forgetting, (int, float)):
            raise TypeError(f"forgetting must be a number in (0, 1], got {self.forgetting!r}")
        if not 0.0 < self.forgetting <= 1.0:
            raise ValueError(
                f"forgetting must lie in (0, 1] (1: no forgetting), got {self.forgetting}"
            )
        check_chunk_size(self.chunk_size)
        if self.batch_update not in ("sequential", "woodbury"):
            raise ValueError(
                f"batch_update must be 'sequential' or 'woodbury', got {self.batch_update!r}"
            )
        if not isinstance(self.max_p_bytes, int) or self.max_p_bytes < 1:
            raise ValueError(f"max_p_bytes must be a positive int, got {self.max_p_bytes!r}")
        if self.p_dtype is not None and self.p_dtype not in _DTYPES:
            raise ValueError(f"p_dtype must be None, 'float32' or 'float64', got {self.p_dtype!r}")

    # -- model checks ---------------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        check_cell(model, "model")
        trained = self.trained(model)
        if not trained:
            raise TypeError(
                "RLS found no trainable parameter in the model; pass params=(...) naming the "
                "weights to train, and make sure they have requires_grad=True"
            )
        if self.strategy not in _LINEAR:
            return
        calls = _probe(model)
        if calls is None:  # no input_size to probe with: checked at the first update instead
            return
        params = dict(model.named_parameters())
        covered = {c.weight for c in calls} | {c.bias for c in calls if c.bias is not None}
        missing = [n for n in trained if n not in covered]
        if missing:
            raise TypeError(
                f"RLS strategy {self.strategy!r} trains the weights and biases of linear maps "
                f"(nn.Linear, F.linear, x @ W) and {missing} is not one; exclude it with "
                "params=(...), or use strategy='jacobian', which trains any parameter"
            )
        out = getattr(model, "output_size", None)
        for c in calls:
            if c.weight not in trained and (c.bias is None or c.bias not in trained):
                continue
            g = group_of(c, params, trained)
            if self.strategy == "inputs" and out is not None and g.out_features != out:
                raise TypeError(
                    f"RLS strategy 'inputs' (FORCE) trains the readout: {c.weight!r} maps "
                    f"onto {g.out_features} units but the model outputs {out}; use "
                    "strategy='grad' for hidden layers"
                )
            if (
                self.strategy == "outputs"
                and out is not None
                and (g.in_features != out or g.out_features != out)
            ):
                raise TypeError(
                    f"RLS strategy 'outputs' (CURBD) trains a recurrent weight mapping the "
                    f"model's O = {out} outputs onto themselves; {c.weight!r} maps "
                    f"{g.in_features} -> {g.out_features}. Use 'inputs' for a readout or "
                    "'grad' for any layer"
                )

    def _p_dtype(self, like: Tensor) -> torch.dtype:
        return _DTYPES[self.p_dtype] if self.p_dtype is not None else like.dtype

    def _theta_size(self, model: nn.Module) -> int:
        trained = self.trained(model)
        n = sum(p.numel() for p in trained.values())
        like = next(iter(trained.values()))
        need = p_bytes(n, self._p_dtype(like))
        if need > self.max_p_bytes:
            sizes = ", ".join(f"{k} ({p.numel()})" for k, p in trained.items())
            raise ValueError(
                f"RLS strategy {self.strategy!r} keeps one P over all trained parameters: "
                f"{sizes}, n = {n}, so P is {n} x {n} and needs {format_bytes(need)}, above "
                f"max_p_bytes = {format_bytes(self.max_p_bytes)}. Train fewer parameters "
                "(params=...), raise max_p_bytes, or use strategy='inputs' or 'grad' (P over "
                "a layer's inputs only)"
            )
        return n

    # -- carry ----------------------------------------------------------------------------------
    def init(self, model: nn.Module, state: State) -> Carry:
        self.check_model(model)
        P: dict[str, Tensor] = {}
        if self.strategy not in _LINEAR:
            n = self._theta_size(model)
            like = next(iter(self.trained(model).values()))
            P[_THETA] = initial_p(n, self.delta, device=like.device, dtype=self._p_dtype(like))
        return RLSCarry(P, None, 0)

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        """Keep ``P`` (it persists across sequences); forget the previous output."""
        if not isinstance(carry, RLSCarry):
            return self.init(model, state)
        return carry._replace(prev=None)

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        if not isinstance(carry, RLSCarry):
            return None
        # copies: P is updated in place by later steps
        P = {k: p.detach().clone() for k, p in carry.P.items()}
        return {"P": P, "steps": carry.steps, "strategy": self.strategy}

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        if not isinstance(state, dict) or "P" not in state:
            raise ValueError("not an RLS carry: expected a dict with key 'P'")
        if state.get("strategy", self.strategy) != self.strategy:
            raise ValueError(
                f"this checkpoint's P belongs to RLS strategy {state['strategy']!r}, not "
                f"{self.strategy!r}; resume with the same strategy"
            )
        params = dict(model.named_parameters())
        device = param_like(model)[0]
        P = {}
        for key, p in state["P"].items():
            where = params[key].device if key in params else device
            P[key] = p.to(where, copy=True)  # owned: RLS updates P in place
        return RLSCarry(P, None, int(state.get("steps", 0)))

    def _p(self, P: dict[str, Tensor], key: str, size: int, like: Tensor) -> Tensor:
        """The ``P`` of ``key``, created as ``I/δ`` on ``like``'s device the first time."""
        if key in P:
            if P[key].shape != (size, size):
                raise ValueError(
                    f"the stored P of {key!r} is {tuple(P[key].shape)} but the model needs "
                    f"({size}, {size}); the checkpoint belongs to another model"
                )
            return P[key]
        dtype = self._p_dtype(like)
        if p_bytes(size, dtype) > self.max_p_bytes:
            raise ValueError(
                f"RLS would keep a {size} x {size} P for {key!r} "
                f"({format_bytes(p_bytes(size, dtype))}), above max_p_bytes = "
                f"{format_bytes(self.max_p_bytes)}; raise max_p_bytes or train fewer weights"
            )
        return initial_p(size, self.delta, device=like.device, dtype=dtype)

    # -- the update -----------------------------------------------------------------------------
    def _check_objective(self, objective: Objective) -> None:
        if objective.maximize:
            raise ValueError("RLS minimises a squared error; an objective with maximize=True "
                             "cannot be trained with it")  # fmt: skip
        if objective.regularizers:
            raise ValueError(
                "RLS solves its least-squares problem in closed form and cannot add the "
                "objective's regularizers (its only penalty is the ridge term delta); remove "
                "them or train with a gradient rule"
            )
        if isinstance(objective.criterion, Mapping):
            raise TypeError(
                "RLS needs one criterion for one output tensor, not a dict of named outputs"
            )
        if self.strategy in ("inputs", "outputs", "jacobian") and not is_least_squares(objective):
            raise ValueError(
                f"RLS strategy {self.strategy!r} is a least-squares (Gaussian) form and needs "
                "Objective('mse'); use 'grad' or 'scaled_jacobian' for other criteria"
            )

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        self._check_objective(objective)
        if not isinstance(targets, Tensor):
            raise TypeError("RLS needs tensor targets (T, B, O), not a dict")
        c: RLSCarry = carry
        params = dict(model.named_parameters())
        trained = self.trained(model)
        B = xs.shape[1]
        if self.strategy in _LINEAR:
            graph = self.strategy == "grad"
            with torch.set_grad_enabled(graph):
                trace = run_steps(model, xs, state, params)
            weights = objective.full_mask(
                span.total, B, device=xs.device, dtype=trace.outputs.dtype
            )[span.start : span.stop]
            loss_g = grad_loss(objective, trace.outputs, targets, weights) if graph else None
            groups, rows, prev = linear_rows(
                self.strategy, trace, targets, weights, params, trained, c.prev, loss_g
            )
            P = dict(c.P)
            updates: dict[str, Tensor] = {}
            for key, g in groups.items():
                if key not in rows:
                    continue
                like = params[g.weight if g.train_weight or g.bias is None else g.bias]
                P[key] = self._p(P, key, g.size, like)
                delta = rls_steps_(P[key], rows[key], self.forgetting, self.batch_update)
                updates.update(g.updates(delta, params))
            new = RLSCarry(P, prev, c.steps + 1)
        else:
            with torch.enable_grad():
                trace = run_steps(model, xs, state, {})
                psi = jacobian(trace.outputs, trained)  # (T, B, O, n)
            weights = objective.full_mask(
                span.total, B, device=xs.device, dtype=trace.outputs.dtype
            )[span.start : span.stop]
            rows_t = jacobian_rows(self.strategy, objective, trace.outputs, targets, weights, psi)
            like = next(iter(trained.values()))
            p = self._p(c.P, _THETA, psi.shape[-1], like)
            delta = rls_steps_(p, rows_t, self.forgetting, self.batch_update)
            updates = _split(delta[0], trained)
            new = RLSCarry({**c.P, _THETA: p}, None, c.steps + 1)
        outputs = trace.outputs.detach()
        loss = objective.loss(outputs, targets, start=span.start, total=span.total).detach()
        return RuleStep({}, detach(trace.state), new, loss, outputs, updates)


def _split(theta: Tensor, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """Cut the flat ``Δθ`` ``(n,)`` into updates shaped like ``params``."""
    out, i = {}, 0
    for name, p in params.items():
        out[name] = theta[i : i + p.numel()].reshape(p.shape).to(p.dtype)
        i += p.numel()
    return out


def _probe(model: nn.Module) -> list[Any] | None:
    """The linear calls of one step on a zero input, or None when the input size is unknown."""
    size = getattr(model, "input_size", None)
    if not isinstance(size, int):
        return None
    device, dtype = param_like(model)
    x = torch.zeros(1, size, device=device, dtype=dtype)
    state = model.init_state(1, device=device, dtype=dtype)  # type: ignore[operator]
    params = dict(model.named_parameters())
    return find_relations(model, x, state, params)
