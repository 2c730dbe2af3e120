"""Argument checks shared by the kernel wrappers.

The compiled kernels assume clean inputs (C-contiguous, right dtype, finite); these helpers establish that
at the Python boundary and raise ``ValueError`` naming the offending argument. They cost O(size of the
argument they check), so the hot path checks the query, never the bank (the bank is validated when it is
written).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def float_matrix(name: str, a: object, dtype: type = np.float32) -> np.ndarray:
    """Return ``a`` as a C-contiguous 2-D array of ``dtype`` (no copy when it already is one)."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def float_vector(name: str, a: object, dtype: type = np.float64, length: int | None = None) -> np.ndarray:
    """Return ``a`` as a C-contiguous 1-D array of ``dtype``, optionally of an exact length."""
    if type(a) is np.ndarray and a.dtype == dtype and a.ndim == 1 and a.flags.c_contiguous:
        if length is not None and a.shape[0] != length:  # the hot path's vectors skip numpy's generic checks
            raise ValueError(f"{name} must have length {length}, got {a.shape[0]}")
        return a
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return np.ascontiguousarray(arr, dtype=dtype)


def finite(name: str, arr: np.ndarray) -> np.ndarray:
    """Raise if ``arr`` holds NaN or infinity; return it unchanged."""
    ok = _finite_vector(arr) if arr.ndim == 1 else bool(np.all(np.isfinite(arr)))
    if not ok:
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


@njit(cache=True, nogil=True)
def _finite_vector(a: np.ndarray) -> bool:
    """Whether every entry of the vector ``a`` is finite (a compiled loop: numpy's isfinite + all costs
    more in call overhead than a query's check is worth)."""
    for x in a:
        if not np.isfinite(x):
            return False
    return True


def capability_matrix(name: str, m: object, n_questions: int) -> np.ndarray:
    """Return ``m`` as a C-contiguous int8 R x N matrix, N = ``n_questions``.

    Shape and dtype are checked here in O(1); the values (-1, 0, 1) are the bank's to validate on write
    (see ``capability_values``), so the hot path never rescans the matrix.
    """
    arr = np.asarray(m)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (models x questions), got shape {arr.shape}")
    if arr.shape[1] != n_questions:
        raise ValueError(f"{name} has {arr.shape[1]} columns but there are {n_questions} questions")
    if arr.dtype == np.int8 and arr.flags.c_contiguous:  # a bank's own matrix skips the dtype checks below
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array of -1/0/1, got dtype {arr.dtype}")
    if arr.dtype != np.int8:
        capability_values(name, arr)  # a cast would wrap out-of-range values silently
    return np.ascontiguousarray(arr, dtype=np.int8)


def capability_values(name: str, m: np.ndarray) -> np.ndarray:
    """Raise unless every entry of ``m`` is -1 (not evaluated), 0 (wrong) or 1 (correct)."""
    if m.size and (m.min() < -1 or m.max() > 1):
        raise ValueError(f"{name} entries must be -1 (not evaluated), 0 (wrong) or 1 (correct)")
    return m


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def non_negative_int(name: str, value: object) -> int:
    """Return ``value`` as an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def unit_interval(name: str, value: object) -> float:
    """Return ``value`` as a float in [0, 1]."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return x


def support_parameters(n_base: object, gamma: object) -> tuple[int, float]:
    """(N_base, γ) of Eq (3), checked: an int >= 1 and a float in [0, 1]."""
    return positive_int("n_base", n_base), unit_interval("gamma", gamma)


def top_k_count(k: object, n_models: int, name: str = "k") -> int:
    """Return ``k`` after checking 1 <= k <= n_models (K > R is an error, never a silent clamp)."""
    k = positive_int(name, k)
    if k > n_models:
        raise ValueError(f"{name}={k} exceeds the number of models ({n_models})")
    return k


def row_indices(name: str, rows: object, n_rows: int) -> np.ndarray:
    """Return ``rows`` as a C-ordered int64 vector of indices into ``n_rows`` bank rows."""
    r = np.asarray(rows)
    if r.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of row indices, got shape {r.shape}")
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"{name} must hold integer row indices, got dtype {r.dtype}")
    r = np.ascontiguousarray(r, dtype=np.int64)
    if r.size and (r.min() < 0 or r.max() >= n_rows):
        raise ValueError(f"{name} must index the {n_rows} bank questions")
    return r
