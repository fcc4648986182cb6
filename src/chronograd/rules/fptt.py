"""Forward propagation through time, FPTT (Kag & Saligrama, ICML 2021; Yin et al. 2023).

The sequence is processed in chunks of ``K`` steps (``K = 1``: per step), with BPTT inside a
chunk and the state detached between chunks. At chunk ``t`` with loss ``ℓ_t`` the update
minimises a dynamically regularised risk, a **sum** over the elements of every trained tensor::

    ℓ^R_t(W) = ℓ_t(W) + (α/2) ‖W − W̄_t − λ_t/α‖²          W_{t+1} = one optimizer step on ℓ^R_t

(its gradient is ``∇ℓ_t + α(W − W̄_t) − λ_t``). After the step (:meth:`FPTT.after_update`,
called by the driver once the optimizer has moved the weights) the running average and the
correction ``λ`` move on::

    λ_{t+1} = c ∇ℓ_t(W_{t+1})                         (form="two_pass")
    λ_{t+1} = c (λ_t − α (W_{t+1} − W̄_t))             (form="dual")
    W̄_{t+1} = ½ (W̄_t + W_{t+1}) − λ_{t+1} / (2 α c)

with ``c`` = ``correction``, ``λ_1 = 0`` and ``W̄_1 = W_1``. In the two-pass form the
regulariser is ``(α/2)‖W − W̄_t − c ∇ℓ_{t-1}(W_t)/α‖²`` and ``W̄_{t+1} = ½(W̄_t + W_{t+1}) −
∇ℓ_t(W_{t+1})/(2α)``: with ``c = ½`` this is Algorithm 1 of the paper, ``∇ℓ_{t-1}/(2α)``.
The second pass re-runs the chunk with the new weights **from the state before the chunk**
(``h_{t-1}``; SpikingJelly re-runs it from the state after the chunk, which is another
function). The dual form needs no second pass: if ``W_{t+1}`` minimises ``ℓ^R_t`` exactly,
``∇ℓ_t(W_{t+1}) = λ_t − α(W_{t+1} − W̄_t)``, so ``c(λ_t − α(W_{t+1} − W̄_t))`` *is*
``c ∇ℓ_t(W_{t+1})`` and the two forms coincide (a test checks this with exact proximal steps).
With ``c = 1`` the dual form is the update of the authors' released code (FedDyn's,
``λ ← λ − α(W − W̄)``, ``W̄ ← ½(W̄ + W) − λ/(2α)``), whose regulariser corrects by
``∇ℓ_{t-1}/α``, twice the paper's. Default: ``c = ½`` (the paper) and the dual form (one
forward and one backward pass per chunk).

Notes: the state carried to the next chunk is the one computed with ``W_t`` in the first pass
(both forms). ``W̄`` and ``λ`` persist across sequences (and in checkpoints);
:meth:`FPTT.load_average` (or the trainer handler :func:`fptt_load_average`) sets
``W ← W̄``, e.g. at the end of each epoch. Without an applied update (:func:`gradient`) the
carry does not move, so the gradient is TBPTT(K)'s plus the regulariser's.

Kag, Saligrama: "Training Recurrent Neural Networks via Forward Propagation Through Time",
ICML 2021. Yin, Corradi, Bohté: "Accurate online training of dynamical spiking neural networks
through Forward Propagation Through Time", Nature Machine Intelligence 2023.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd._tree import detach
from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import (
    AfterUpdate,
    Carry,
    Chunk,
    Grads,
    LearningRule,
    PersistentCarry,
    Reduce,
    RuleStep,
    check_chunk_size,
    grads_of,
)
from chronograd.sequence import Span, unroll


class _Chunk(NamedTuple):
    """What the two-pass form's second pass needs: the chunk and the state before it."""

    xs: Tensor
    targets: Any
    state: State
    objective: Objective
    span: Span


class FPTTCarry(NamedTuple):
    """FPTT's carry.

    Attributes:
        w_bar: ``{name: W̄}`` running averages (persist across sequences).
        lam: ``{name: λ}`` corrections (persist across sequences).
        pending: the last chunk, for the two-pass form's second pass (else None).
    """

    w_bar: dict[str, Tensor]
    lam: dict[str, Tensor]
    pending: _Chunk | None = None


@final
@dataclass(frozen=True)
class FPTT(LearningRule, PersistentCarry, AfterUpdate):
    """Forward propagation through time (see the module docstring for the equations).

    Args:
        alpha: ``α > 0``, the strength of the dynamic regulariser (a sum over elements).
        chunk_size: steps per update ``K`` (BPTT inside a chunk; 1: per step).
        form: ``"dual"`` (default; one forward and one backward pass per chunk) or
            ``"two_pass"`` (Algorithm 1: a second forward and backward pass per chunk).
        correction: ``c``, the weight of the previous gradient in the regulariser (``½``: the
            paper; ``1``: the authors' released code).
        (plus the options shared by every rule, see :class:`LearningRule`; a trainer's
            ``transform=clip_by_global_norm(c)`` clips the gradient of ``ℓ^R_t``)
    """

    accumulate_refused: ClassVar[str | None] = (
        "FPTT regularises every update towards the running average of the previous ones; one "
        "update per sequence removes that. Use chunk_size=K for fewer updates"
    )

    alpha: float = 0.1
    chunk_size: int = 1
    form: Literal["dual", "two_pass"] = "dual"
    correction: float = 0.5

    def _check(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise TypeError(f"alpha must be a number, got {self.alpha!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha}")
        if self.chunk_size is None:
            raise ValueError("FPTT updates after every chunk: chunk_size must be a positive int")
        check_chunk_size(self.chunk_size)
        if self.form not in ("dual", "two_pass"):
            raise ValueError(f"form must be 'dual' or 'two_pass', got {self.form!r}")
        if not (self.correction > 0 and math.isfinite(self.correction)):
            raise ValueError(f"correction must be a finite number > 0, got {self.correction}")

    def init(self, model: nn.Module, state: State) -> Carry:
        """``W̄_1 = W_1`` (the current values of the trained parameters), ``λ_1 = 0``."""
        live = self.trained(model)
        return FPTTCarry(
            {n: p.detach().clone() for n, p in live.items()},
            {n: torch.zeros_like(p, memory_format=torch.preserve_format) for n, p in live.items()},
        )

    def init_from(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> FPTTCarry:
        """The initial carry with ``W̄`` taken from ``optimizer``'s parameters.

        Every trained parameter must be in the optimizer (the optimizer moves ``W``; ``W̄``
        follows it). Equivalent to :meth:`init` when they are the same tensors.
        """
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, p in self.trained(model).items() if id(p) not in in_opt]
        if missing:
            raise ValueError(
                f"FPTT trains {missing}, which the optimizer does not update; build the "
                "optimizer over the same parameters (or set FPTT(params=...))"
            )
        carry: FPTTCarry = self.init(model, None)
        return carry

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        c: FPTTCarry = carry
        return FPTTCarry(c.w_bar, c.lam, None)

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        c: FPTTCarry = carry
        live = self.trained(model)
        outputs, new_state = unroll(model, xs, state)
        loss = objective.loss(outputs, targets, start=span.start, total=span.total)
        grads = grads_of(loss, dict(live), objective)
        with torch.no_grad():  # ∇ of (α/2)‖W − W̄ − λ/α‖² is α(W − W̄) − λ (one allocation)
            grads = {
                n: torch.add(g, live[n], alpha=self.alpha)
                .sub_(c.w_bar[n], alpha=self.alpha)
                .sub_(c.lam[n])
                for n, g in grads.items()
            }
        pending = (
            _Chunk(xs, targets, detach(state), objective, span) if self.form == "two_pass" else None
        )
        carry = FPTTCarry(c.w_bar, c.lam, pending)
        return RuleStep(grads, detach(new_state), carry, loss.detach(), detach(outputs))

    def regularizer(self, model: nn.Module, carry: Carry) -> Tensor:
        """``Σ (α/2) ‖W − W̄ − λ/α‖²`` over the trained parameters (a sum, not a mean)."""
        c: FPTTCarry = carry
        live = self.trained(model)
        terms = [((p - c.w_bar[n] - c.lam[n] / self.alpha) ** 2).sum() for n, p in live.items()]
        return 0.5 * self.alpha * torch.stack(terms).sum()

    def after_update(self, model: nn.Module, carry: Carry, reduce: Reduce) -> Carry:
        c: FPTTCarry = carry
        live = self.trained(model)
        cc = self.correction
        if self.form == "two_pass":
            if c.pending is None:
                raise RuntimeError("FPTT two-pass: after_update without a preceding update")
            p = c.pending
            outs, _ = unroll(model, p.xs, p.state)  # W_{t+1} from h_{t-1}
            loss = p.objective.loss(outs, p.targets, start=p.span.start, total=p.span.total)
            g: Grads = grads_of(loss, dict(live), p.objective)
            g = reduce(g, p.xs.shape[1])  # data-parallel: the full batch's gradient
            with torch.no_grad():
                lam = {n: cc * g[n] for n in live}
        else:
            with torch.no_grad():  # c (λ − α (W − W̄))
                lam = {
                    n: torch.sub(w, c.w_bar[n]).mul_(-self.alpha).add_(c.lam[n]).mul_(cc)
                    for n, w in live.items()
                }
        with torch.no_grad():  # ½ (W̄ + W) − λ / (2αc)
            w_bar = {
                n: torch.add(c.w_bar[n], w).mul_(0.5).sub_(lam[n], alpha=1 / (2 * self.alpha * cc))
                for n, w in live.items()
            }
        return FPTTCarry(w_bar, lam, None)

    def load_average(self, model: nn.Module, carry: Carry) -> None:
        """``W ← W̄`` for every trained parameter (e.g. at the end of an epoch)."""
        c: FPTTCarry = carry
        with torch.no_grad():
            for n, p in self.trained(model).items():
                p.copy_(c.w_bar[n])

    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        c: FPTTCarry = carry
        return {
            "w_bar": {n: t.clone() for n, t in c.w_bar.items()},
            "lam": {n: t.clone() for n, t in c.lam.items()},
        }

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        live = self.trained(model)
        if set(state["w_bar"]) != set(live) or set(state["lam"]) != set(live):
            raise ValueError(
                f"the FPTT carry holds {sorted(state['w_bar'])} but the rule trains "
                f"{sorted(live)}; load it into the same model with the same params"
            )
        return FPTTCarry(
            {n: state["w_bar"][n].to(p.device, p.dtype) for n, p in live.items()},
            {n: state["lam"][n].to(p.device, p.dtype) for n, p in live.items()},
        )


def fptt_load_average(trainer: Any) -> None:
    """Trainer handler: ``W ← W̄`` (FPTT's running average) for the trainer's model.

    Register it with ``trainer.add_handler(Event.EPOCH_COMPLETED, fptt_load_average)``. The
    validation of that epoch has already run with ``W``; the next epoch starts from ``W̄``.
    """
    rule = trainer.rule
    if not isinstance(rule, FPTT):
        raise TypeError(
            f"fptt_load_average needs a trainer whose rule is FPTT, got {type(rule).__name__}"
        )
    if trainer.carry is None:
        return  # nothing trained yet: W̄ = W
    rule.load_average(trainer.model, trainer.carry)
