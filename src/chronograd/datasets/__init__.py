"""Standard data sets read from files you already have (nothing is downloaded).

``load(path, format=...)`` returns a :class:`~chronograd.tasks.Task` (training and validation
batches, the objective and the metric), the same object ``chronograd.tasks.get`` gives, so a
data set trains from Python or as ``chronograd train --data PATH --format FORMAT``:

=====================  ===================================================================
format                 what ``path`` is
=====================  ===================================================================
``npz``                ``numpy.savez(path, x=x, y=y)`` (:func:`chronograd.tasks.from_npz`)
``shd``, ``ssc``       an SHD/SSC HDF5 file (``shd_train.h5``), via ``h5py``
``nmnist``             an N-MNIST folder of class folders of ``.bin`` event files
``sequential-digits``  scikit-learn's digits pixel by pixel (``path`` unused)
``permuted-digits``    the same in a fixed random pixel order (``path`` unused)
=====================  ===================================================================

Event data are binned into ``(T, B, features)`` frames of counts or spikes by
:func:`bin_events` / :func:`bin_batch` (:mod:`chronograd.datasets.events`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chronograd.datasets import nmnist, shd
from chronograd.datasets.digits import pixel_digits
from chronograd.datasets.events import bin_batch, bin_events, n_bins
from chronograd.datasets.streams import stream_task
from chronograd.tasks.base import Task

FORMATS = ("npz", "shd", "ssc", "nmnist", "sequential-digits", "permuted-digits")

__all__ = [
    "FORMATS",
    "bin_batch",
    "bin_events",
    "guess_format",
    "load",
    "n_bins",
    "nmnist",
    "pixel_digits",
    "shd",
    "stream_task",
]


def guess_format(path: str | Path) -> str:
    """The format a path's name suggests: ``.npz`` -> npz, ``.h5`` with ``ssc`` -> ssc, other
    ``.h5``/``.hdf5`` -> shd, a folder -> nmnist."""
    p = Path(path)
    if p.suffix == ".npz":
        return "npz"
    if p.suffix in (".h5", ".hdf5"):
        return "ssc" if "ssc" in p.name.lower() else "shd"
    if p.is_dir():
        return "nmnist"
    raise ValueError(
        f"cannot tell the format of {path}; pass format= (--format) as one of {', '.join(FORMATS)}"
    )


def load(path: str | Path | None, format: str | None = None, **options: Any) -> Task:
    """The task of the data set at ``path`` in ``format`` (guessed from the name when None).

    ``options`` go to the format's reader (e.g. ``dt``, ``duration``, ``spikes``, ``test``,
    ``batch_size``, ``seed``).
    """
    if format is None:
        if path is None:
            raise ValueError(f"give a path or a format (one of {', '.join(FORMATS)})")
        format = guess_format(path)
    if format not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; available: {', '.join(FORMATS)}")
    if format in ("sequential-digits", "permuted-digits"):
        return pixel_digits(permuted=format == "permuted-digits", **options)
    if path is None:
        raise ValueError(f"format {format!r} reads a file: give its path (--data PATH)")
    if format == "npz":
        from chronograd.tasks.npz import from_npz

        return from_npz(path, **options)
    if format == "nmnist":
        return nmnist.load(path, **options)
    return shd.load(path, kind=format, **options)
