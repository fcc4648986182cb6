"""e-prop: eligibility propagation (Bellec et al., Nat. Commun. 11, 3625, 2020).

For a recurrent spiking layer (LIF or ALIF, :mod:`chronograd.cells.lif`) read out by a leaky
readout ``y_t = κ y_{t-1} + W_out z_t + b`` and a loss ``E = Σ_t ℓ_t(y_t)``, e-prop keeps the
gradient's path through each neuron's own state and drops the paths through other neurons'
spikes (the recurrent weights and the reset)::

    ∂E/∂W_ji = Σ_t Σ_b L^b_{j,t} F_κ(e^b_ji)_t                 (hidden weights, per sample b)
    L_{j,t}   = Σ_k B_jk ∂ℓ_t/∂y_{k,t}                          learning signal
    F_κ(e)_t  = κ F_κ(e)_{t-1} + e_t                            readout-filtered trace
    e_t = ψ_t z̄_t  (LIF)        e_t = ψ_t (z̄_t − β ε^a_t)  (ALIF)     z̄_t = α z̄_{t-1} + u_t
    ε^a_{t+1} = ψ_t z̄_t + (ρ − β ψ_t) ε^a_t

(``u_t``: ``x_t`` for the input weights, ``z_{t-1}`` for the recurrent ones; see
:mod:`chronograd.traces.eprop_network` for the indexing against the paper and the reset-gradient
variant). ``∂ℓ_t/∂y_t`` is that of the objective with its window weights (MSE:
``∝ y_t − y*_t``; softmax cross-entropy: ``π_t − π*_t``). The readout's weight and bias get
their exact gradient (online ``κ``-traces of ``z`` and of 1).

Feedback ``B`` (H, O): ``symmetric`` (``W_outᵀ``, the current one), ``random`` (fixed, seeded,
seven generators with NeuroTorch's norm clips) or ``adaptive`` (random at first, then it
receives ``W_outᵀ``'s updates, with a decay): :mod:`chronograd.traces.feedback`.

Learning signal (:mod:`chronograd.traces.learning_signal`): ``learning_signal="error"``
(default) is ``L_t = B ∂ℓ_t/∂y_t`` above; ``"neuromodulator"`` takes ``L_t = M_t``, a third
factor given with the data (targets ``{"target": y*, "modulator": M}``, ``M`` (T, B) or
(T, B, H)), so ``∂E/∂W_ji = Σ_t Σ_b M^b_{j,t} F_κ(e^b_ji)_t`` (three-factor learning; the
readout still learns from ``"target"`` through the objective). With ``M_t = W_outᵀ ∂ℓ_t/∂y_t``
it is symmetric e-prop. Reward-based e-prop (the paper's actor-critic version) uses
``M_t = δ (B_π (π_t − 1_{a_t}) − c_V B_V)``
(:func:`~chronograd.traces.learning_signal.actor_critic_modulator`).

Firing-rate regularizer (the paper's, Methods): ``E_reg = c_reg Σ_j (f̄_j − f*)²`` with ``f̄_j``
the mean spike count per step of neuron ``j`` over the batch and the update window (the whole
sequence with one update per sequence, the chunk otherwise). Its gradient flows through the
same, *unfiltered*, eligibility traces: ``∂E_reg/∂W_ji = Σ_{t,b} (2 c_reg (f̄_j − f*)/(B T_w))
e^b_{ji,t}``.

Symmetric e-prop on a network without recurrent weights is the exact gradient (BPTT), and on
any LIF/ALIF network it equals the generic trace engine ``DRTRL(readout="filter")``.

NeuroTorch's ``Eprop`` (seed 000) is the reference for the options; its gradient is not the
paper's (batch-summed traces, no eligibility-vector recursion, one feedback matrix per
parameter). Its options map as: ``params_lr``/``output_params_lr`` ->
:meth:`EProp.param_groups`/:meth:`EProp.optimizer`; ``eligibility_traces_norm_clip_value`` ->
``trace_norm_clip``; ``grad_norm_clip_value`` -> the trainer's
``transform=clip_by_global_norm(c)``; ``feedbacks_gen_strategy`` -> ``feedback_init``;
``nan``/``posinf``/``neginf``/``raise_non_finite_errors`` -> ``nonfinite=NonFinite(policy, nan,
posinf, neginf)``; ``save_state``/``load_state`` -> the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, final

import torch
from torch import Tensor, nn

from chronograd.cells.base import State
from chronograd.objectives import Objective
from chronograd.rules.base import (
    AfterUpdate,
    Carry,
    Chunk,
    LearningRule,
    PersistentCarry,
    Reduce,
    RuleStep,
    check_chunk_size,
)
from chronograd.traces.chunk import check_trace_dtype, trace_dtype_of
from chronograd.traces.eprop_evaluation import Options, online_chunk, reverse_chunk
from chronograd.traces.eprop_network import HIDDEN_ROLES, network
from chronograd.traces.feedback import (
    FEEDBACKS,
    adaptive_step,
    check_generator,
    random_feedback,
)
from chronograd.traces.learning_signal import check_learning_signal, split_targets


class EPropCarry(NamedTuple):
    """e-prop's carry.

    Attributes:
        feedback: ``B`` (H, O) for random and adaptive feedback (None: symmetric). Persists.
        w_out: ``W_out`` (O, H) when ``B`` last followed it (adaptive feedback). Persists.
        traces: the current sequence's traces (reset at each sequence start): per hidden
            relation ``z̄`` (B, I) and ``X`` (S, B, I, H); the readout's ``κ``-traces.
    """

    feedback: Tensor | None
    w_out: Tensor | None
    traces: dict[str, Tensor]


@final
@dataclass(frozen=True)
class EProp(LearningRule, PersistentCarry, AfterUpdate):
    """e-prop for ``Stack(LIF or ALIF, LeakyReadout)`` (see the module docstring).

    Args:
        feedback: ``"symmetric"`` (``B = W_outᵀ``), ``"random"`` or ``"adaptive"``.
        feedback_init: generator of a random/adaptive ``B``: ``xavier_normal`` (default),
            ``kaiming_normal``, ``orthogonal``, ``unitary``, ``randn``, ``rand``, ``ones``.
        feedback_norm_clip: Frobenius-norm bound of the drawn ``B`` (``None``: the generator's
            default, NeuroTorch's: ∞, or 1 for ``randn``, ``rand``, ``ones``).
        feedback_seed: seed of the draw (same seed, same ``B``, on every rank and device).
        feedback_decay: adaptive feedback's decay per update, ``B ← B + ΔW_outᵀ − decay · B``.
        chunk_size: steps per update (``1``: online, every step; ``k``: every ``k`` steps;
            ``None``: one update per sequence); traces carry across the chunks of a sequence.
        method: ``"traces"`` (forward traces, memory flat in ``T``, any ``chunk_size``),
            ``"reverse"`` (the same gradient by a reverse-time adjoint, about one BPTT, ``O(T)``
            memory; needs ``chunk_size=None`` and no ``trace_norm_clip``) or ``"auto"``
            (``reverse`` where it applies, else ``traces``).
        trace_norm_clip: clip, after every step, each sample's filtered eligibility trace
            ``F_κ(e)`` of each hidden parameter to this Frobenius norm (steps then advance
            one at a time).
        rate_target: target firing rate ``f*`` in spikes per step (e.g. ``0.01`` = 10 Hz at
            1 ms steps) of the firing-rate regularizer; ``None``: off.
        rate_reg: its coefficient ``c_reg``.
        trace_dtype: dtype of the eligibility traces (default: the state's).
        save_state, load_state: whether trainer checkpoints save / restore the optimizer state
            (NeuroTorch's switches).
        save_feedback, load_feedback: whether trainer checkpoints save / restore ``B``
            (without it, ``B`` is drawn again from its seed).
        learning_signal: ``"error"`` (default: ``B ∂ℓ_t/∂y_t``) or ``"neuromodulator"``
            (``M_t`` from the targets ``{"target": y*, "modulator": M}``; see the module
            docstring).
        (plus the options shared by every rule, see :class:`LearningRule`: ``params``,
            ``nonfinite``)
    """

    feedback: Literal["symmetric", "random", "adaptive"] = "symmetric"
    feedback_init: str = "xavier_normal"
    feedback_norm_clip: float | None = None
    feedback_seed: int = 0
    feedback_decay: float = 0.0
    chunk_size: int | None = None
    method: Literal["auto", "traces", "reverse"] = "auto"
    trace_norm_clip: float | None = None
    rate_target: float | None = None
    rate_reg: float = 1.0
    trace_dtype: torch.dtype | str | None = None
    save_state: bool = True
    load_state: bool = True
    save_feedback: bool = True
    load_feedback: bool = True
    learning_signal: Literal["error", "neuromodulator"] = "error"

    def _check(self) -> None:
        if self.feedback not in FEEDBACKS:
            raise ValueError(
                f"feedback must be one of {', '.join(FEEDBACKS)}, got {self.feedback!r}"
            )
        check_generator(self.feedback_init)
        for name in ("feedback_norm_clip", "trace_norm_clip"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0 (or None), got {v!r}")
        if not 0.0 <= self.feedback_decay < 1.0:
            raise ValueError(f"feedback_decay must lie in [0, 1), got {self.feedback_decay!r}")
        if not isinstance(self.feedback_seed, int) or isinstance(self.feedback_seed, bool):
            raise TypeError(f"feedback_seed must be an int, got {self.feedback_seed!r}")
        check_chunk_size(self.chunk_size)
        if self.method not in ("auto", "traces", "reverse"):
            raise ValueError(f"method must be 'auto', 'traces' or 'reverse', got {self.method!r}")
        if self.method == "reverse" and (
            self.chunk_size is not None or self.trace_norm_clip is not None
        ):
            raise ValueError(
                "method='reverse' evaluates one update per sequence without materialising the "
                "traces: it needs chunk_size=None and trace_norm_clip=None; use "
                "method='traces' (or 'auto') for online updates or trace clipping"
            )
        if self.rate_target is not None and not self.rate_target >= 0:
            raise ValueError(f"rate_target must be >= 0 spikes per step, got {self.rate_target}")
        if not self.rate_reg >= 0:
            raise ValueError(f"rate_reg must be >= 0, got {self.rate_reg}")
        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))
        check_learning_signal(self.learning_signal)

    @property
    def evaluation(self) -> Literal["traces", "reverse"]:
        """The evaluation ``method="auto"`` resolves to."""
        if self.method != "auto":
            return self.method
        reverse = self.chunk_size is None and self.trace_norm_clip is None
        return "reverse" if reverse else "traces"

    # -- protocol ---------------------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        network(model)

    def init(self, model: nn.Module, state: State) -> Carry:
        net = network(model)
        if self.feedback == "symmetric":
            return EPropCarry(None, None, {})
        w = net.readout.input.weight
        b = random_feedback(
            net.hidden.hidden_size, net.readout.output_size, self.feedback_init,
            seed=self.feedback_seed, norm_clip=self.feedback_norm_clip, device=w.device,
            dtype=w.dtype,
        )  # fmt: skip
        return EPropCarry(b, self._snapshot(model), {})

    def start_sequence(self, model: nn.Module, state: State, carry: Carry) -> Carry:
        if not isinstance(carry, EPropCarry):
            return self.init(model, state)
        return EPropCarry(carry.feedback, self._snapshot(model), {})

    def _snapshot(self, model: nn.Module) -> Tensor | None:
        if self.feedback != "adaptive":
            return None
        return network(model).readout.input.weight.detach().clone()

    def feedback_matrix(self, model: nn.Module, carry: EPropCarry) -> Tensor:
        """``B`` (H, O) in use: ``W_outᵀ`` (symmetric) or the carried matrix."""
        if self.feedback == "symmetric":
            return network(model).readout.input.weight.detach().t()
        assert carry.feedback is not None
        return carry.feedback

    def update(
        self, model: nn.Module, chunk: Chunk, state: State, carry: Carry, objective: Objective
    ) -> RuleStep:
        xs, targets, span = chunk
        targets, modulator = split_targets(self.learning_signal, targets)
        net = network(model)
        params = self.trained(model)
        fb = self.feedback_matrix(model, carry)
        run = reverse_chunk if self.evaluation == "reverse" else online_chunk
        opts = Options(self.trace_norm_clip, self.rate_target, self.rate_reg, trace_dtype_of(self))
        w = run(opts, net, params, xs, targets, state, carry.traces, objective, span, fb, modulator)
        return RuleStep(w.grads, w.state, carry._replace(traces=w.traces), w.loss, w.outputs)

    def after_update(self, model: nn.Module, carry: Carry, reduce: Reduce) -> Carry:
        if self.feedback != "adaptive" or not isinstance(carry, EPropCarry):
            return carry
        assert carry.feedback is not None and carry.w_out is not None
        w = network(model).readout.input.weight.detach()
        b = adaptive_step(carry.feedback, carry.w_out, w, self.feedback_decay)
        return carry._replace(feedback=b, w_out=w.clone())

    # -- persistence ----------------------------------------------------------------------------
    def carry_state_dict(self, carry: Carry) -> dict[str, Any] | None:
        if self.feedback == "symmetric" or not isinstance(carry, EPropCarry):
            return None
        out: dict[str, Any] = {"feedback": carry.feedback}
        if carry.w_out is not None:
            out["w_out"] = carry.w_out
        return out

    def load_carry_state_dict(self, model: nn.Module, state: dict[str, Any]) -> Carry:
        net = network(model)
        if self.feedback == "symmetric":
            raise ValueError(
                "this checkpoint holds an e-prop feedback matrix but the rule uses symmetric "
                "feedback (B = W_out^T, nothing to load); resume with the rule's original "
                "feedback= option, or set load_feedback=False"
            )
        b = state.get("feedback")
        want = (net.hidden.hidden_size, net.readout.output_size)
        if not isinstance(b, Tensor) or tuple(b.shape) != want:
            raise ValueError(
                f"the checkpoint's e-prop feedback must be a tensor of shape {want} (hidden, "
                f"outputs), got {getattr(b, 'shape', type(b).__name__)}"
            )
        w = net.readout.input.weight
        snap = self._snapshot(model)
        return EPropCarry(b.to(device=w.device, dtype=w.dtype), snap, {})

    def checkpointed(
        self, part: Literal["carry", "optimizer"], action: Literal["save", "load"]
    ) -> bool:
        if part == "optimizer":
            return self.save_state if action == "save" else self.load_state
        return self.save_feedback if action == "save" else self.load_feedback

    # -- learning rates ---------------------------------------------------------------------------
    def param_groups(
        self, model: nn.Module, lr: float, output_lr: float | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups: hidden parameters at ``lr``, then the readout's at
        ``output_lr`` (default ``lr``); a group without trained parameters is left out.

        ``torch.optim.Adam(rule.param_groups(model, lr=1e-4, output_lr=2e-4))`` is NeuroTorch's
        ``params_lr`` / ``output_params_lr``.
        """
        net = network(model)
        trained = self.trained(model)
        hidden = {net.names[r] for r in HIDDEN_ROLES if r in net.names}
        groups = [
            {"params": [p for n, p in trained.items() if n in hidden], "lr": lr},
            {
                "params": [p for n, p in trained.items() if n not in hidden],
                "lr": lr if output_lr is None else output_lr,
            },
        ]
        return [g for g in groups if g["params"]]

    def optimizer(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        output_lr: float | None = None,
        cls: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        **kwargs: Any,
    ) -> torch.optim.Optimizer:
        """``cls`` over :meth:`param_groups`: ``Trainer(model, rule, objective,
        optimizer=rule.optimizer(model, lr=1e-4, output_lr=2e-4))``."""
        return cls(self.param_groups(model, lr, output_lr), lr=lr, **kwargs)
