"""Train an LSNN on evidence accumulation, and see what truncation costs the gradient.

Run: ``python examples/quickstart.py`` (about 30 s on 2 CPU cores).
"""

import torch

import chronograd as cg
from chronograd.cells import ALIF, LeakyReadout, Stack, lsnn_beta
from chronograd.models import lsnn_adaptation
from chronograd.training import Event, Trainer


def main() -> None:
    torch.manual_seed(0)
    task = cg.tasks.get("evidence", batch_size=64)  # time-scaled: T = 225 steps, 40 inputs
    beta = lsnn_adaptation(tau_mem=2.0, tau_adapt=200.0, threshold=0.6)  # e-prop's heuristic
    model = Stack(
        ALIF(
            task.input_size,
            100,
            tau_mem=2.0,
            tau_adapt=200.0,
            threshold=0.6,
            beta=lsnn_beta(50, 50, beta),
        ),
        LeakyReadout(100, task.output_size, kappa=0.6),
    )

    # A rule's gradient without applying it, compared with BPTT's: the loss only counts during
    # the recall window at the end, so truncation cuts the path back to the cues.
    xs, ys = task.batch(32)
    for k in (15, 75, 225):
        align = cg.testing.gradient_alignment(cg.TBPTT(chunk_size=k), model, xs, ys, task.objective)
        a = align["layers.0.input.weight"]
        print(
            f"TBPTT({k}) vs BPTT, input weights: cosine {a.cosine:.3f}, relative error {a.rel_error:.3f}"
        )

    trainer = Trainer(
        model, cg.BPTT(), task.objective, lr=5e-3, metrics={"recall_error": task.metric}
    )

    @trainer.on(Event.EPOCH_COMPLETED)
    def report(t: Trainer) -> None:
        print(
            f"epoch {t.state.epoch}: val recall error {t.history.last('val_recall_error'):.3f} (chance 0.5)"
        )

    trainer.fit(task.train, epochs=6, val=task.val)


if __name__ == "__main__":
    main()
