"""Rules side by side: ``compare`` (train, align with BPTT, time, memory) and ``bench`` (cost
vs ``T`` and ``N``), behind ``chronograd compare`` and ``chronograd bench``.

New rules plug in through the registry (:data:`chronograd.rules.RULES`) and
:meth:`~chronograd.rules.LearningRule.check_model`; :data:`RULE_DEFAULTS` holds the default
options of a rule in a comparison (one line per rule).
"""

from chronograd.comparison.common import RULE_DEFAULTS
from chronograd.comparison.scaling import bench
from chronograd.comparison.side_by_side import compare

__all__ = ["RULE_DEFAULTS", "bench", "compare"]
