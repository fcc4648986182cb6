"""The README's quick start, as a script: an LSNN learns evidence accumulation, and what
truncation costs the gradient. ``tests/test_docs.py`` checks that this file holds the README's
quick-start block verbatim and runs that block.

Run: ``python examples/quickstart.py`` (about a minute on 2 CPU cores).
"""

# -- the README's quick start -------------------------------------------------------------------
import torch

import chronograd as cg
from chronograd.cells import ALIF, LeakyReadout, Stack, lsnn_beta
from chronograd.models import lsnn_adaptation

torch.manual_seed(0)
task = cg.tasks.get("evidence", batch_size=64)  # seeded, generated: T = 225 steps, 40 inputs
beta = lsnn_adaptation(tau_mem=2.0, tau_adapt=200.0, threshold=0.6)  # e-prop's heuristic
model = Stack(
    ALIF(task.input_size, 100, tau_mem=2.0, tau_adapt=200.0, threshold=0.6,
         beta=lsnn_beta(50, 50, beta)),  # 50 LIF + 50 adaptive neurons
    LeakyReadout(100, task.output_size, kappa=0.6),
)  # fmt: skip

# A rule's gradient without applying it, compared with BPTT's: the loss only counts in the
# recall window at the end, so truncation cuts the path back to the cues.
xs, ys = task.batch(32)  # time first: (T, B, 40), (T, B)
grads = cg.gradient(cg.BPTT(), model, xs, ys, task.objective)  # {name: tensor}
for k in (15, 75, 225):
    align = cg.testing.gradient_alignment(cg.TBPTT(chunk_size=k), model, xs, ys, task.objective)
    a = align["layers.0.input.weight"]
    print(f"TBPTT({k}) vs BPTT, input weights: cosine {a.cosine:.3f}, rel. error {a.rel_error:.3f}")

trainer = cg.training.Trainer(
    model, cg.BPTT(), task.objective, lr=5e-3, metrics={"recall_error": task.metric}, progress=True
)
history = trainer.fit(task.train, epochs=6, val=task.val)  # a progress line per epoch
print(f"validation recall error {history.last('val_recall_error'):.3f} (chance 0.5)")
