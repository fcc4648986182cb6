"""Regularizers: differentiable penalties of parameters, added to the objective's loss.

Every regularizer is a callable ``reg() -> Λ · R(θ)`` (a scalar tensor), so it plugs into
``Objective(regularizers=[...])``: BPTT and TBPTT add it to each window's loss, online rules add
its gradient once per update. ``Λ`` is ``Lambda``. Sums run over every element of every given
parameter (element-wise penalties, not matrix norms)::

    L1               R = Σ |w|
    L2               R = Σ w²
    Lp               R = Σ |w|^p                                    (p ≥ 1)
    WeightsDistance  R = Σ |W − W_ref|^p                            (p ≥ 1)
    DaleLawL2        R = α Σ W² − (1 − α) Σ W ⊙ sign(W_ref)
                       (= tr(Wᵀ(αW − (1 − α)W_ref)) when W_ref holds signs in {-1, 0, 1})
    DaleLaw          R = −Σ W ⊙ sign(W_ref)                         (α = 0: linear, unbounded)
    DaleHinge        R = Σ relu(−sign(W_ref) ⊙ W)                   (bounded below by 0)
    ExcRatioTarget   R = Σ_W |mean(sign W) + 1 − 2·target|          (= 2 |r − target|)
    InhRatioTarget   ExcRatioTarget with target = 1 − inh_target
    RegularizerList  R = Σ_k reg_k()

``sign`` has no gradient, so the ratio targets back-propagate through a surrogate: the value
uses ``sign(W)`` exactly, the gradient that of ``tanh(W / τ)`` with ``τ = temperature · mean|W|``
(straight-through). ``r = (mean(sign W) + 1)/2`` is the excitatory fraction (zeros count half).

Parameters come as an iterable, a ``{name: parameter}`` dict or ``model.named_parameters()``.
They are *referenced*, not registered, so a regularizer never duplicates them in a state dict.
Reference weights are buffers: ``reg.to(device)`` moves them and ``reg.state_dict()`` saves
them. The Dale regularizers generate references with :func:`chronograd.dale.dale_reference`
when none are given (``pre_dim`` is then required: 1 for ``nn.Linear`` weights).

A regularizer can also be minimised on its own with its own optimizer, explicitly:
``reg.minimize(optimizer)`` (one step), or the trainer handler
:class:`chronograd.training.RegularizerStep` (one step after every update).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast, final

import torch
from torch import Tensor, nn

from chronograd.dale import dale_reference, excitatory_fraction, resolve_generator

Params = Iterable[Tensor] | Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


def named_params(params: Any, owner: str = "regularizer") -> dict[str, Tensor]:
    """``{name: tensor}`` from an iterable, a dict or ``named_parameters()`` (names "0", "1"...)."""
    if isinstance(params, nn.Module):
        raise TypeError(
            f"{owner}: pass the parameters, not the module: [module.weight] or "
            "dict(module.named_parameters())"
        )
    if isinstance(params, Tensor):
        items: list[tuple[str, Any]] = [("0", params)]
    elif isinstance(params, Mapping):
        items = [(str(k), v) for k, v in params.items()]
    elif isinstance(params, Iterable) and not isinstance(params, (str, bytes)):
        items = []
        for i, p in enumerate(params):
            if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
                items.append(p)  # from named_parameters()
            else:
                items.append((str(i), p))
    else:
        raise TypeError(f"{owner}: params must be tensors or a dict of them, got {params!r}")
    if not items:
        raise ValueError(f"{owner}: no parameters given")
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, p in items:
        if not isinstance(p, Tensor):
            raise TypeError(f"{owner}: parameter {name!r} is a {type(p).__name__}, not a tensor")
        if not p.is_floating_point():
            raise ValueError(f"{owner}: parameter {name!r} is not floating point ({p.dtype})")
        if not (p.is_leaf and p.requires_grad):
            raise ValueError(
                f"{owner}: {name!r} is not a trainable leaf tensor, so a penalty on it would have "
                "no effect; pass an nn.Parameter (for a parametrized weight, its "
                "`parametrizations.<name>.original`)"
            )
        if id(p) in seen or name in out:
            raise ValueError(f"{owner}: parameter {name!r} is given twice")
        seen.add(id(p))
        out[name] = p
    return out


def _check_lambda(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"Lambda must be a number >= 0, got {value!r}")
    return float(value)


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"p must be >= 1 (|w|^p has an infinite gradient at 0 below), got {p!r}")
    return float(p)


class Regularizer(nn.Module, abc.ABC):
    """Abstract base: ``reg() = Lambda · penalty()``.

    Attributes:
        params: ``{name: parameter}``, referenced (not registered on this module).
        Lambda: the scale ``Λ``.
        name: the key of this regularizer in metrics and history (default: the class name).
    """

    def __init__(self, params: Params, Lambda: float = 1.0, name: str | None = None) -> None:
        super().__init__()
        self.params = named_params(params, type(self).__name__)
        self.Lambda = _check_lambda(Lambda)
        self.name = name if name is not None else type(self).__name__

    @abc.abstractmethod
    def penalty(self) -> Tensor:
        """The unscaled penalty ``R(θ)``, a scalar tensor."""

    def forward(self) -> Tensor:
        return self.Lambda * self.penalty()

    def metrics(self) -> dict[str, float]:
        """Values to report: ``{name: Λ·R}`` (subclasses add e.g. ratios or violations)."""
        with torch.no_grad():
            return {self.name: float(self())}

    def minimize(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """One explicit step of ``optimizer`` on this penalty alone; returns the value before it.

        Every regularized parameter must be in ``optimizer`` (else ``ValueError``: the step would
        silently skip it). Other parameters of the optimizer get no gradient and do not move.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch optimizer, got {type(optimizer).__name__}")
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in self.params.items() if id(p) not in owned]
        if missing:
            raise ValueError(
                f"{self.name}: parameters {missing} are not in the optimizer, so its step would "
                "not regularize them; build the optimizer over them"
            )
        value = self()
        tensors = list(self.params.values())
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(tensors, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return value.detach()


def _sum(terms: Iterable[Tensor]) -> Tensor:
    return torch.stack([t.reshape(()) for t in terms]).sum()


@final
class L1(Regularizer):
    """``Λ Σ |w|`` over every element of every parameter."""

    def penalty(self) -> Tensor:
        return _sum(p.abs().sum() for p in self.params.values())


@final
class L2(Regularizer):
    """``Λ Σ w²`` over every element of every parameter (the squared Frobenius norm)."""

    def penalty(self) -> Tensor:
        return _sum(p.pow(2).sum() for p in self.params.values())


@final
class Lp(Regularizer):
    """``Λ Σ |w|^p`` over every element of every parameter (``p ≥ 1``)."""

    def __init__(
        self, params: Params, p: float = 1.0, Lambda: float = 1.0, name: str | None = None
    ) -> None:
        super().__init__(params, Lambda, name)
        self.p = _check_p(p)

    def penalty(self) -> Tensor:
        return _sum(w.abs().pow(self.p).sum() for w in self.params.values())


def _register_references(
    reg: Regularizer, references: Sequence[Tensor] | Mapping[str, Tensor]
) -> None:
    """Store one reference per parameter as buffers ``reference_0, reference_1, ...``."""
    names = list(reg.params)
    if isinstance(references, Mapping):
        if set(references) != set(names):
            raise ValueError(
                f"{reg.name}: reference_weights has keys {sorted(references)}, the parameters "
                f"are {sorted(names)}"
            )
        refs = [references[n] for n in names]
    else:
        refs = list(references)
        if len(refs) != len(names):
            raise ValueError(
                f"{reg.name}: {len(refs)} reference weights for {len(names)} parameters"
            )
    for i, (n, r) in enumerate(zip(names, refs)):
        p = reg.params[n]
        if not isinstance(r, Tensor):
            raise TypeError(f"{reg.name}: reference for {n!r} is a {type(r).__name__}")
        if r.shape != p.shape:
            raise ValueError(
                f"{reg.name}: reference for {n!r} has shape {tuple(r.shape)}, the parameter "
                f"{tuple(p.shape)}"
            )
        reg.register_buffer(f"reference_{i}", r.detach().to(device=p.device, dtype=p.dtype).clone())


def _references(reg: Regularizer) -> list[tuple[Tensor, Tensor]]:
    """``[(parameter, its reference buffer)]`` in parameter order."""
    return [
        (p, getattr(reg, f"reference_{i}").to(p.dtype)) for i, p in enumerate(reg.params.values())
    ]


def _dale_references(
    reg: Regularizer,
    reference_weights: Sequence[Tensor] | Mapping[str, Tensor] | None,
    pre_dim: int | None,
    inh_ratio: float,
    rho: float,
    inh_first: bool,
    generator: torch.Generator | None,
    seed: int | None,
) -> None:
    if reference_weights is None:
        if pre_dim is None:
            raise ValueError(
                f"{reg.name}: to generate reference weights, say which axis is presynaptic: "
                "pre_dim=0 for W[pre, post] (x @ W), pre_dim=1 for nn.Linear weights (post, pre)"
            )
        g = resolve_generator(generator, seed)
        reference_weights = [
            dale_reference(
                tuple(p.shape),
                pre_dim=pre_dim,
                inh_ratio=inh_ratio,
                rho=rho,
                inh_first=inh_first,
                generator=g,
            )
            for p in reg.params.values()
        ]
    _register_references(reg, reference_weights)


def violations(reg: Regularizer) -> int:
    """Entries whose sign contradicts their reference: ``#{sign(W_ref) ⊙ W < 0}``."""
    return sum(int((torch.sign(r) * p.detach() < 0).sum()) for p, r in _references(reg))


@final
class WeightsDistance(Regularizer):
    """``Λ Σ |W − W_ref|^p`` (``p ≥ 1``) with one reference (a buffer) per parameter."""

    def __init__(
        self,
        params: Params,
        reference_weights: Sequence[Tensor] | Mapping[str, Tensor],
        p: float = 1.0,
        Lambda: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(params, Lambda, name)
        self.p = _check_p(p)
        _register_references(self, reference_weights)

    def penalty(self) -> Tensor:
        return _sum((w - r).abs().pow(self.p).sum() for w, r in _references(self))


class _Dale(Regularizer):
    """Shared constructor of the three Dale penalties (abstract)."""

    def __init__(
        self,
        params: Params,
        reference_weights: Sequence[Tensor] | Mapping[str, Tensor] | None = None,
        *,
        Lambda: float = 1.0,
        pre_dim: int | None = None,
        inh_ratio: float = 0.2,
        rho: float = 1.0,
        inh_first: bool = True,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(params, Lambda, name)
        _dale_references(
            self, reference_weights, pre_dim, inh_ratio, rho, inh_first, generator, seed
        )

    def metrics(self) -> dict[str, float]:
        with torch.no_grad():
            return {self.name: float(self()), f"{self.name}_violations": float(violations(self))}


@final
class DaleLawL2(_Dale):
    """``Λ [α Σ W² − (1 − α) Σ W ⊙ sign(W_ref)]``: Dale's law (soft) plus L2, mixed by ``α``.

    Args:
        params: weights to regularize (matrices when references are generated).
        alpha: ``α ∈ [0, 1]``; 0 is :class:`DaleLaw`, 1 is :class:`L2`.
        reference_weights: one per parameter, same shape; only their signs matter. Default:
            generated by :func:`~chronograd.dale.dale_reference` with ``pre_dim``, ``inh_ratio``,
            ``rho``, ``inh_first``, ``generator``/``seed``.
    """

    def __init__(
        self,
        params: Params,
        alpha: float = 0.8,
        reference_weights: Sequence[Tensor] | Mapping[str, Tensor] | None = None,
        *,
        Lambda: float = 1.0,
        pre_dim: int | None = None,
        inh_ratio: float = 0.2,
        rho: float = 1.0,
        inh_first: bool = True,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
        super().__init__(
            params, reference_weights, Lambda=Lambda, pre_dim=pre_dim, inh_ratio=inh_ratio,
            rho=rho, inh_first=inh_first, generator=generator, seed=seed, name=name,
        )  # fmt: skip
        self.alpha = float(alpha)

    def penalty(self) -> Tensor:
        a = self.alpha
        return _sum(
            a * w.pow(2).sum() - (1.0 - a) * (w * torch.sign(r)).sum() for w, r in _references(self)
        )


@final
class DaleLaw(_Dale):
    """``−Λ Σ W ⊙ sign(W_ref)``: linear and unbounded below (weights grow along their sign).

    Pair it with a weight penalty, or use :class:`DaleHinge` (bounded) or :class:`DaleLawL2`.
    """

    def penalty(self) -> Tensor:
        return _sum(-(w * torch.sign(r)).sum() for w, r in _references(self))


@final
class DaleHinge(_Dale):
    """``Λ Σ relu(−sign(W_ref) ⊙ W)``: zero exactly when every weight has its reference sign."""

    def penalty(self) -> Tensor:
        return _sum(torch.relu(-torch.sign(r) * w).sum() for w, r in _references(self))


def _ratio_penalty(w: Tensor, exc_target: float, temperature: float) -> Tensor:
    """``|mean(sign W) + 1 − 2·target|`` with the gradient of ``tanh(W/τ)`` for ``sign W``."""
    scale = w.detach().abs().mean()  # no host sync: stays a tensor on w's device
    tau = temperature * torch.where(scale > 0, scale, torch.ones_like(scale))
    soft = torch.tanh(w / tau)
    s = torch.sign(w).detach() + soft - soft.detach()  # value sign(W), gradient of tanh(W/τ)
    return (s.mean() + 1.0 - 2.0 * exc_target).abs()


class _Ratio(Regularizer):
    """Shared constructor, penalty and metrics of the ratio targets (abstract); ``kind``
    (``"exc"`` or ``"inh"``) names the fraction a subclass targets and reports."""

    kind: ClassVar[str]

    def __init__(
        self,
        params: Params,
        target: float,
        Lambda: float = 1.0,
        temperature: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(params, Lambda, name)
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target must lie in [0, 1], got {target!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.target, self.temperature = float(target), float(temperature)

    @property
    @abc.abstractmethod
    def exc_target(self) -> float:
        """The excitatory fraction this penalty aims at."""

    def penalty(self) -> Tensor:
        return _sum(
            _ratio_penalty(w, self.exc_target, self.temperature) for w in self.params.values()
        )

    def exc_ratios(self) -> dict[str, float]:
        """The true excitatory fraction ``(mean(sign W) + 1)/2`` of each parameter."""
        return {n: float(excitatory_fraction(p)) for n, p in self.params.items()}

    def inh_ratios(self) -> dict[str, float]:
        """The true inhibitory fraction ``1 − r`` of each parameter."""
        return {n: 1.0 - r for n, r in self.exc_ratios().items()}

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        ratios = self.exc_ratios() if self.kind == "exc" else self.inh_ratios()
        for n, r in ratios.items():
            out[f"{self.name}_{self.kind}_ratio" + (f"_{n}" if len(self.params) > 1 else "")] = r
        return out


@final
class ExcRatioTarget(_Ratio):
    """``Λ Σ_W |mean(sign W) + 1 − 2·target|``: push the excitatory fraction to ``target``.

    Args:
        target: wanted excitatory fraction ``r = (mean(sign W) + 1)/2`` in ``[0, 1]``.
        temperature: surrogate width ``τ = temperature · mean|W|`` of the gradient.
    """

    kind = "exc"

    def __init__(
        self,
        params: Params,
        target: float = 0.8,
        Lambda: float = 1.0,
        temperature: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(params, target, Lambda, temperature, name)

    @property
    def exc_target(self) -> float:
        return self.target


@final
class InhRatioTarget(_Ratio):
    """``Λ Σ_W |mean(sign W) + 1 − 2(1 − target)|``: push the inhibitory fraction to ``target``."""

    kind = "inh"

    def __init__(
        self,
        params: Params,
        target: float = 0.2,
        Lambda: float = 1.0,
        temperature: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(params, target, Lambda, temperature, name)

    @property
    def exc_target(self) -> float:
        return 1.0 - self.target


@final
class RegularizerList(Regularizer):
    """``Λ Σ_k reg_k()``: several regularizers as one (each keeps its own ``Lambda``).

    The members are submodules, so ``to()`` and ``state_dict()`` cover their references.
    """

    def __init__(
        self, regularizers: Iterable[Regularizer], Lambda: float = 1.0, name: str | None = None
    ) -> None:
        regs = list(regularizers)
        if not regs:
            raise ValueError("RegularizerList needs at least one regularizer")
        for r in regs:
            if not isinstance(r, Regularizer):
                raise TypeError(f"RegularizerList holds Regularizers, got {type(r).__name__}")
        union: dict[str, Tensor] = {}
        seen: set[int] = set()
        for k, r in enumerate(regs):
            for n, p in r.params.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    union[n if n not in union else f"{k}.{n}"] = p
        super().__init__(union, Lambda, name)
        self.regularizers = nn.ModuleList(regs)

    @property
    def members(self) -> list[Regularizer]:
        """The regularizers summed, in order."""
        return [cast(Regularizer, r) for r in self.regularizers]

    def penalty(self) -> Tensor:
        return _sum(r() for r in self.members)

    def metrics(self) -> dict[str, float]:
        """The total ``{name: Λ Σ reg_k()}`` and each member's metrics (a repeated key gets the
        suffix ``_1``, ``_2``...)."""
        with torch.no_grad():
            out: dict[str, float] = {self.name: float(self())}
        for r in self.members:
            for k, v in r.metrics().items():
                key, i = k, 1
                while key in out:
                    key, i = f"{k}_{i}", i + 1
                out[key] = v
        return out
