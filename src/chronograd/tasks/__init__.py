"""The task suite: ``get(name, **options)``, ``available()``."""

from chronograd.tasks import evidence as _evidence  # noqa: F401  (registers the task)
from chronograd.tasks.base import TASKS, Metric, Task, available, get, poisson, register

__all__ = ["TASKS", "Metric", "Task", "available", "get", "poisson", "register"]
