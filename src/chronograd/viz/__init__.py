"""Headless (Agg) plots written to PNG files.

* :func:`learning_curve` - one run's losses and metric per epoch.
* :func:`learning_curves` - several runs overlaid (``chronograd compare``).
* :func:`alignment_bars` - gradient alignment with BPTT per rule, at init and at the end.
* :func:`scaling` - log-log cost curves (``chronograd bench``).
* :func:`raster` - spike raster with membrane and readout traces for one sequence (data from
  :func:`chronograd.activity.record`).
"""

from chronograd.plotting import learning_curve
from chronograd.viz.comparison import alignment_bars, learning_curves, scaling
from chronograd.viz.raster import raster

__all__ = ["alignment_bars", "learning_curve", "learning_curves", "raster", "scaling"]
