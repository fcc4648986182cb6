"""Store-recall, the working-memory task of LSNNs (Bellec et al. 2018; e-prop reference code).

A trial is a sequence of ``S = 12`` symbol periods of 200 ms. Every period shows a random bit on
one of two *value* groups of input channels, unless it is a *recall* period. *Store* and
*recall* commands arrive on their own groups, alternating and starting with a store: while
waiting for a store, each period is a store with probability ``p``; while holding a bit, each
period is a recall with probability ``p``, where ``p = 1 / (1 + d)`` for an expected delay of
``d = 6`` periods. At a recall period the network must output the bit shown during the most
recent store period. A trial has at least one store-recall pair and ends with nothing stored
(trials that do not are redrawn), as in IGITUGraz/eligibility_propagation
(``tutorial_store_recall.py`` and ``storerecall_utils.py``).

Inputs: ``I = 4 · channels`` Poisson channels (``channels = 25``: 100 inputs) in the groups
(value 0, value 1, store, recall), each firing at 50 Hz while active and silent otherwise;
``T = 12 · 200 = 2400`` steps of 1 ms. Targets ``(T, B)``: the bit to recall during recall
periods, ``-1`` elsewhere.

Loss: softmax cross-entropy summed over the recall steps, divided by ``T·B``
(:func:`~chronograd.tasks.metrics.masked_cross_entropy`). Metric: recall error, the fraction of
recall periods whose arg-max of the period-averaged logits is wrong; chance 0.5 (the stored
bits are balanced). Published outcome: networks with adapting neurons (LSNNs) learn it to a
recall error near 0, whereas networks of plain LIF neurons without adaptation do much worse on
delays of seconds (Bellec et al. 2018; Salaj et al. 2021); the reference code trains 100
neurons (40% adapting, ``τ_a = 1200`` ms, ``τ_m = τ_out = 20`` ms) with Adam.

``time_scale = s`` shortens the period to ``round(200 s)`` steps and raises the rate to
``50 Hz / s`` per step (capped at 1): ``s = 0.1`` (the default) is the fast variant, 20 steps
per period, ``T = 240``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from chronograd.objectives import Objective
from chronograd.tasks.base import (
    Task,
    check_encoding,
    check_time_scale,
    encode,
    positive_int,
    rate_per_step,
    register,
    steps,
)
from chronograd.tasks.metrics import IGNORE, masked_cross_entropy, period_error

NONE, STORE, RECALL = 0, 1, 2


def commands(B: int, S: int, p: float, g: torch.Generator) -> Tensor:
    """Valid command sequences ``(B, S)`` of NONE / STORE / RECALL (invalid rows redrawn)."""
    out = torch.zeros(B, S, dtype=torch.long)
    todo = torch.arange(B)
    while len(todo):
        n = len(todo)
        c = torch.zeros(n, S, dtype=torch.long)
        waiting = torch.ones(n, dtype=torch.bool)  # waiting for a store (nothing held)
        for s in range(S):
            hit = torch.rand(n, generator=g) < p
            store, recall = waiting & hit, ~waiting & hit
            c[:, s] = STORE * store.long() + RECALL * recall.long()
            waiting = (waiting & ~store) | recall
        ok = waiting & (c == RECALL).any(1)  # >= 1 store-recall pair, nothing left stored
        out[todo[ok]] = c[ok]
        todo = todo[~ok]
    return out


@register("store_recall")
def store_recall(
    *,
    time_scale: float = 0.1,
    n_symbols: int = 12,
    symbol_ms: float = 200.0,
    delay: float = 6.0,
    channels: int = 25,
    rate_hz: float = 50.0,
    encoding: str = "spikes",
    batch_size: int = 64,
    batches_per_epoch: int = 10,
    val_batches: int = 4,
    seed: int = 0,
) -> Task:
    """The store-recall task; ``time_scale=1`` is the reference code's 2400-step version.

    Args:
        delay: expected number of periods from a store to its recall (``p = 1/(1+delay)``).

    Returns inputs ``(T, B, 4·channels)`` and targets ``(T, B)`` (bit or ``-1``).
    """
    s = check_time_scale(time_scale)
    for name, v in (("n_symbols", n_symbols), ("channels", channels), ("batch_size", batch_size)):
        positive_int(name, v)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2 (a store, then a recall), got {n_symbols}")
    if not delay > 0:
        raise ValueError(f"delay (expected periods from store to recall) must be > 0, got {delay}")
    encoding = check_encoding(encoding)
    period = steps(symbol_ms, s, "symbol_ms")
    T = n_symbols * period
    rate = rate_per_step(rate_hz, s)
    p = 1.0 / (1.0 + delay)

    def sample(B: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        cmd = commands(B, n_symbols, p, g)  # (B, S)
        bits = torch.randint(0, 2, (B, n_symbols), generator=g)  # (B, S)
        target = torch.full((B, n_symbols), IGNORE, dtype=torch.long)
        held = torch.zeros(B, dtype=torch.long)
        for k in range(n_symbols):
            held = torch.where(cmd[:, k] == STORE, bits[:, k], held)
            target[:, k] = torch.where(cmd[:, k] == RECALL, held, target[:, k])
        shown = cmd != RECALL
        groups = torch.stack(
            [shown & (bits == 0), shown & (bits == 1), cmd == STORE, cmd == RECALL], -1
        ).to(torch.get_default_dtype())  # (B, S, 4)
        rates = groups.transpose(0, 1)[..., None].expand(n_symbols, B, 4, channels)
        rates = rates.reshape(n_symbols, B, 4 * channels).repeat_interleave(period, 0)  # (T,B,I)
        x = encode(rates * rate, g, encoding)
        return x, target.t().repeat_interleave(period, 0).contiguous()  # (T, B)

    return Task(
        name="store_recall",
        description="Store-recall working memory (Bellec et al. 2018, LSNN; e-prop reference code)",
        input_size=4 * channels,
        output_size=2,
        seq_len=T,
        objective=Objective(masked_cross_entropy),
        metric=period_error(period),
        sample=sample,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        val_batches=val_batches,
        seed=seed,
        spiking=encoding == "spikes",
        suggested={
            "cell": "lsnn",
            "hidden": 100,
            "lr": 5e-3,
            "tau_mem": 20.0 * s,
            "tau_adapt": 1200.0 * s,
            "tau_out": 20.0 * s,
            "threshold": 0.6,
        },
    )
