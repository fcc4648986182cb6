"""Recursive least squares: the recursion and the regressors behind :class:`~chronograd.rules.RLS`.

* :mod:`~chronograd.least_squares.core`: the RLS recursion on a linear map ``W`` (``P_s``,
  sequential rank-1 or Woodbury rank-``N`` steps), pure tensor functions.
* :mod:`~chronograd.least_squares.signals`: what each RLS strategy regresses, the rows
  ``(φ, e)`` of one chunk read off the model.
"""
