"""The task suite: ``get(name, **options)``, ``available()``, ``from_npz(path)``.

Registered tasks: ``adding``, ``copy``, ``digits``, ``dms``, ``evidence``, ``pattern``,
``store_recall``; your own data: :func:`from_npz` / :func:`from_arrays`.
"""

from chronograd.tasks import adding as _adding  # noqa: F401  (each module registers its task)
from chronograd.tasks import copy as _copy  # noqa: F401
from chronograd.tasks import digits as _digits  # noqa: F401
from chronograd.tasks import dms as _dms  # noqa: F401
from chronograd.tasks import evidence as _evidence  # noqa: F401
from chronograd.tasks import pattern as _pattern  # noqa: F401
from chronograd.tasks import store_recall as _store_recall  # noqa: F401
from chronograd.tasks.arrays import ArrayData
from chronograd.tasks.base import TASKS, Metric, Task, available, get, poisson, register
from chronograd.tasks.curriculum import Curriculum
from chronograd.tasks.npz import from_arrays, from_npz

__all__ = [
    "TASKS",
    "ArrayData",
    "Curriculum",
    "Metric",
    "Task",
    "available",
    "from_arrays",
    "from_npz",
    "get",
    "poisson",
    "register",
]
