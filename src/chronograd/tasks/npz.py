"""Your own data set: ``x (N, T, I)`` with labels ``y (N,)`` or target sequences ``y (N, T, O)``.

``from_npz(path)`` reads a NumPy ``.npz`` archive (``numpy.savez(path, x=x, y=y)``) with
``allow_pickle=False`` (nothing in the file is executed); ``from_arrays(x, y)`` takes the arrays
directly. Both validate the arrays and raise ``TypeError`` (wrong kind of data: non-numeric
``x``, non-integer labels, object arrays) or ``ValueError`` (wrong shape, mismatched lengths,
NaN or inf, empty arrays) saying what was expected, what came and how to fix it.

Magnitudes: inputs ``x`` and regression targets ``y`` with any ``|value| > max_abs`` (default
:data:`MAX_ABS` = 1e6) are refused, since such values overflow or saturate the cells and train
to nothing without an error (standardise them, ``(x - x.mean()) / x.std()``); pass
``max_abs=None`` (``--task-opt max_abs=None``) to accept any finite value, or a larger bound.

- ``y`` of shape ``(N,)``: integer class labels ``0 … C-1`` (``C <= MAX_CLASSES``), classification from the last
  ``last`` steps: cross-entropy loss, accuracy metric (chance: the share of the most frequent
  class in the validation split, what the best constant answer scores).
- ``y`` of shape ``(N, T, O)``: regression at every step: MSE loss, normalised MSE metric
  (``MSE / Var`` of the training targets per feature; chance: predicting the training mean).

The examples are split once into training and validation sets by a seeded permutation
(``split_seed``, ``val_fraction`` = 0.2); each epoch visits the training set in a permutation
seeded by ``(seed, epoch)``. From the command line: ``chronograd train --data file.npz``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chronograd.objectives import Objective
from chronograd.tasks.arrays import ArrayData, split_indices, time_major_sequences
from chronograd.tasks.base import Task, positive_int
from chronograd.tasks.digits import majority_chance
from chronograd.tasks.metrics import accuracy, normalised_mse

SAVE_HINT = "save your data with numpy.savez(path, x=x, y=y)"
#: The largest ``|x|`` (and ``|y|`` of regression targets) accepted unless ``max_abs`` says otherwise.
MAX_ABS = 1e6
#: The most classes a label array may imply (``max(y) + 1``): one network output per class.
MAX_CLASSES = 100_000
#: The options of :func:`from_arrays` (and :func:`from_npz`).
OPTIONS = ("name", "last", "val_fraction", "split_seed", "batch_size", "seed", "max_abs")


def _check_numeric(name: str, a: np.ndarray, what: str) -> None:
    if a.dtype == object:
        raise TypeError(
            f"{name} holds Python objects (dtype=object), expected {what}; convert it with "
            f"np.asarray({name}, dtype=np.float32) (ragged sequences must be padded to one T)"
        )
    if not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == bool
    ):
        raise TypeError(
            f"{name} must hold real numbers ({what}), got dtype {a.dtype}; convert it with "
            f"{name}.astype(np.float32)"
        )


def _check_finite(name: str, a: np.ndarray) -> None:
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or inf values (first at index {first}); "
                f"remove those sequences or impute the values (e.g. np.nan_to_num({name}))"
            )


def _check_magnitude(name: str, a: np.ndarray, max_abs: float | None) -> None:
    if max_abs is None or a.size == 0:
        return
    biggest = float(np.max(np.abs(a.astype(np.float64))))
    if biggest > max_abs:
        raise ValueError(
            f"{name} holds values up to |{name}| = {biggest:.3g}, above max_abs = {max_abs:.3g} "
            f"(such values saturate or overflow the network); standardise {name} "
            f"((x - x.mean()) / x.std()), or pass max_abs=None (--task-opt max_abs=None) "
            "if they are meant"
        )


def check_arrays(x: Any, y: Any, max_abs: float | None = MAX_ABS) -> str:
    """Validate ``x`` and ``y``; return ``"labels"`` or ``"sequences"`` (the kind of ``y``)."""
    if max_abs is not None and (
        isinstance(max_abs, bool) or not isinstance(max_abs, (int, float)) or not max_abs > 0
    ):
        raise ValueError(f"max_abs must be a number > 0 or None, got {max_abs!r}")
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray):
            raise TypeError(
                f"{name} must be a numpy array, got {type(a).__name__}; use np.asarray({name})"
            )
    _check_numeric("x", x, "float inputs of shape (N, T, I)")
    if x.ndim != 3:
        fix = " (one feature: x[..., None])" if x.ndim == 2 else ""
        raise ValueError(
            f"x must have shape (N, T, I) = (sequences, steps, features), got shape {x.shape}{fix}"
        )
    if 0 in x.shape:
        raise ValueError(f"x is empty: shape {x.shape}; every one of N, T and I must be >= 1")
    _check_finite("x", x)
    _check_magnitude("x", x, max_abs)
    N, T, _ = x.shape
    if y.ndim == 1:
        _check_numeric("y", y, "integer class labels of shape (N,)")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
            raise TypeError(
                f"labels y of shape (N,) must be integers 0..C-1, got dtype {y.dtype}; if they "
                "are class indices use y.astype(np.int64); for regression give y the shape (N, T, O)"
            )
    elif y.ndim == 3:
        _check_numeric("y", y, "float targets of shape (N, T, O)")
    else:
        raise ValueError(
            f"y must be class labels (N,) or target sequences (N, T, O), got shape {y.shape}"
            + ("; for one target feature use y[..., None]" if y.ndim == 2 else "")
        )
    if y.shape[0] != N:
        raise ValueError(
            f"x holds N={N} sequences but y holds {y.shape[0]}; they must describe the same examples"
        )
    if y.ndim == 1:
        if y.min() < 0:
            raise ValueError(
                f"class labels must be >= 0, got min(y) = {y.min()}; relabel them 0..C-1"
            )
        if int(y.max()) >= MAX_CLASSES:
            raise ValueError(
                f"class labels must be 0..C-1 with C <= {MAX_CLASSES} (one output per class), got "
                f"max(y) = {y.max()}; relabel them densely with np.unique(y, return_inverse=True)[1]"
            )
        if len(np.unique(y)) < 2:
            raise ValueError(f"y holds a single class ({y[0]}); classification needs at least two")
        return "labels"
    if y.shape[1] != T or y.shape[2] == 0:
        raise ValueError(
            f"target sequences y must have shape (N, T, O) = ({N}, {T}, O >= 1) to match x, got "
            f"{y.shape}"
        )
    _check_finite("y", y)
    _check_magnitude("y", y, max_abs)
    return "sequences"


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str = "arrays",
    last: int = 1,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    batch_size: int = 32,
    seed: int = 0,
    max_abs: float | None = MAX_ABS,
) -> Task:
    """A task from arrays ``x (N, T, I)`` and ``y (N,)`` or ``(N, T, O)`` (see the module doc)."""
    kind = check_arrays(x, y, max_abs)
    positive_int("batch_size", batch_size)
    positive_int("last", last)
    N, T, I = x.shape
    if last > T:
        raise ValueError(f"last={last} exceeds the sequence length T={T}")
    dtype = torch.get_default_dtype()
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    train_idx, val_idx = split_indices(N, val_fraction, split_seed)
    if kind == "labels":
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        classes = int(yt.max()) + 1
        data = ArrayData(xt, yt, train_idx, val_idx)
        objective = Objective("cross_entropy", last=last)
        metric = accuracy(last, majority_chance(yt, val_idx))
        out, what = classes, f"{classes} classes"
    else:
        yt = torch.as_tensor(np.asarray(y), dtype=dtype)
        train_y = yt[train_idx].reshape(-1, yt.shape[-1])  # (N_train·T, O)
        mean, var = train_y.mean(0), train_y.var(0, unbiased=False).clamp_min(1e-12)
        chance = float((((yt[val_idx] - mean) ** 2).reshape(-1, yt.shape[-1]).mean(0) / var).mean())
        data = ArrayData(xt, yt, train_idx, val_idx, target=time_major_sequences)
        objective, metric = Objective("mse"), normalised_mse(var, chance)
        out, what = yt.shape[-1], f"regression, {yt.shape[-1]} outputs"
    spiking = bool(((xt == 0) | (xt == 1)).all())
    return Task(
        name=name,
        description=f"User data {name}: N={N}, {what}",
        input_size=I,
        output_size=out,
        seq_len=T,
        objective=objective,
        metric=metric,
        sample=data.sample,
        batch_size=batch_size,
        batches_per_epoch=data.n_batches("train", batch_size),
        val_batches=data.n_batches("val", batch_size),
        seed=seed,
        spiking=spiking,
        suggested={"cell": "gru", "hidden": 64, "lr": 1e-2},
        data=data,
    )


def from_npz(path: str | Path, **options: Any) -> Task:
    """A task from an ``.npz`` archive holding ``x`` and ``y`` (options: as :func:`from_arrays`)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"option(s) {', '.join(unknown)} do not apply to a data file (they belong to the "
            f"built-in tasks); a data file takes {', '.join(OPTIONS)}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}; {SAVE_HINT}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz archive ({e}); {SAVE_HINT}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} holds a single array, expected an .npz archive with x and y; {SAVE_HINT}"
        )
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path} has arrays {sorted(archive.files)} but no {' or '.join(map(repr, missing))}; "
                f"expected x (N, T, I) and y (N,) or (N, T, O): {SAVE_HINT}"
            )
        arrays = {}
        for k in ("x", "y"):
            try:
                arrays[k] = archive[k]
            except ValueError as e:  # object arrays refuse to load without pickle
                raise TypeError(
                    f"{k} in {path} holds Python objects, which are not loaded (allow_pickle=False): "
                    f"{e}; save numeric arrays, e.g. np.asarray({k}, dtype=np.float32)"
                ) from None
    options.setdefault("name", f"npz:{path.stem}")
    return from_arrays(arrays["x"], arrays["y"], **options)
