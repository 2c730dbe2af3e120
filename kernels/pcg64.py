"""numpy's ``default_rng(seed).random`` stream, compiled: the uniforms of Eq (6)'s draws without building a
``Generator`` per route.

``np.random.default_rng(seed)`` hashes the seed with a ``SeedSequence`` (O'Neill's seed_seq mixing, 4 words
of 32 bits), seeds a PCG64 (XSL-RR output over a 128-bit LCG) with 4 words of 64 bits generated from it, and
``random`` turns each 64-bit output into a double as (x >> 11)·2^-53. Building that generator cost a route
14 µs of Python, a sixth of the router's own time around the kernel (measurements: docs/performance.md,
"Large support sets"); these functions compute the same bits in one compiled call (2 µs), and
``tests/test_kernels_sampling.py`` checks them against numpy on many seeds, including the continued stream.

A state is 4 uint64: the LCG's state and increment, high word first.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_U32 = np.uint64(0xFFFFFFFF)
_SHIFT_32 = np.uint64(32)
_XSHIFT = np.uint64(16)
_INIT_A = np.uint64(0x43B0D7E5)
_MULT_A = np.uint64(0x931E8875)
_INIT_B = np.uint64(0x8B51F9DD)
_MULT_B = np.uint64(0x58F38DED)
_MIX_MULT_L = np.uint64(0xCA01F9DD)
_MIX_MULT_R = np.uint64(0x4973F715)
_POOL_SIZE = 4
_MULT_HIGH = np.uint64(2549297995355413924)
_MULT_LOW = np.uint64(4865540595714422341)
_DOUBLE_UNIT = 1.0 / 9007199254740992.0  # 2^-53


@njit(cache=True, nogil=True, inline="always")
def _hashmix(value, hash_const, multiplier):
    """seed_seq's hashmix on 32-bit words (held in uint64, cut to 32 bits), the constant advanced by
    ``multiplier`` (``_MULT_A`` mixing the entropy in, ``_MULT_B`` generating the state): (mixed value,
    next constant)."""
    value = (value ^ hash_const) & _U32
    hash_const = (hash_const * multiplier) & _U32
    value = (value * hash_const) & _U32
    return value ^ (value >> _XSHIFT), hash_const


@njit(cache=True, nogil=True, inline="always")
def _mix(x, y):
    result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _U32
    return result ^ (result >> _XSHIFT)


@njit(cache=True, nogil=True, inline="always")
def _mul_64(a, b):
    """The 128-bit product of two uint64: (high, low)."""
    a0, a1 = a & _U32, a >> _SHIFT_32
    b0, b1 = b & _U32, b >> _SHIFT_32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    middle = (p00 >> _SHIFT_32) + (p01 & _U32) + (p10 & _U32)
    return p11 + (p01 >> _SHIFT_32) + (p10 >> _SHIFT_32) + (middle >> _SHIFT_32), (p00 & _U32) | (middle << _SHIFT_32)


@njit(cache=True, nogil=True, inline="always")
def _add_to(state, high, low):
    """state[0:2] ← state[0:2] + (high, low) (mod 2^128)."""
    total = state[1] + low
    state[0] = state[0] + high + np.uint64(total < low)
    state[1] = total


@njit(cache=True, nogil=True, inline="always")
def _step(state):
    """One LCG step: state ← state·multiplier + increment (mod 2^128)."""
    high, low = _mul_64(state[1], _MULT_LOW)
    state[0] = high + state[0] * _MULT_LOW + state[1] * _MULT_HIGH
    state[1] = low
    _add_to(state, state[2], state[3])


@njit(cache=True, nogil=True)
def seeded_state(seed_low, seed_high, n_words):
    """The PCG64 state ``default_rng(seed)`` starts from, for seed = ``seed_high``·2^32 + ``seed_low`` given as
    its ``n_words`` (1 or 2) 32-bit words (0 is one word)."""
    entropy = np.zeros(2, dtype=np.uint64)
    entropy[0], entropy[1] = np.uint64(seed_low), np.uint64(seed_high)
    pool = np.zeros(_POOL_SIZE, dtype=np.uint64)
    hash_const = _INIT_A
    for i in range(_POOL_SIZE):
        pool[i], hash_const = _hashmix(entropy[i] if i < n_words else np.uint64(0), hash_const, _MULT_A)
    for source in range(_POOL_SIZE):
        for target in range(_POOL_SIZE):
            if source != target:
                mixed, hash_const = _hashmix(pool[source], hash_const, _MULT_A)
                pool[target] = _mix(pool[target], mixed)
    words = np.zeros(8, dtype=np.uint64)  # generate_state(4, uint64): 8 words of 32 bits, pairs little-endian
    hash_const = _INIT_B
    for i in range(8):
        words[i], hash_const = _hashmix(pool[i % _POOL_SIZE], hash_const, _MULT_B)
    seed_high_64 = words[0] | (words[1] << _SHIFT_32)
    seed_low_64 = words[2] | (words[3] << _SHIFT_32)
    inc_high_64 = words[4] | (words[5] << _SHIFT_32)
    inc_low_64 = words[6] | (words[7] << _SHIFT_32)
    state = np.zeros(4, dtype=np.uint64)
    state[2] = (inc_high_64 << np.uint64(1)) | (inc_low_64 >> np.uint64(63))
    state[3] = (inc_low_64 << np.uint64(1)) | np.uint64(1)
    _step(state)
    _add_to(state, seed_high_64, seed_low_64)
    _step(state)
    return state


@njit(cache=True, nogil=True)
def fill_uniforms(state, out):
    """Fill ``out`` (C order) with the next doubles in [0, 1) of the stream at ``state``, advancing it."""
    flat = out.reshape(out.size)
    for i in range(flat.shape[0]):
        _step(state)
        high, low = state[0], state[1]
        rotation = high >> np.uint64(58)
        x = high ^ low
        x = (x >> rotation) | (x << ((np.uint64(64) - rotation) & np.uint64(63)))
        flat[i] = np.float64(x >> np.uint64(11)) * _DOUBLE_UNIT


def state_of(seed: int) -> np.ndarray:
    """The PCG64 state of ``np.random.default_rng(seed)`` for an int seed in [0, 2^64)."""
    return seeded_state(*seed_words(seed))


def seed_words(seed: int) -> tuple[int, int, int]:
    """``seeded_state``'s arguments for an int seed in [0, 2^64): its low and high 32-bit words and how many
    words numpy's SeedSequence reads (one below 2^32)."""
    return seed & 0xFFFFFFFF, seed >> 32, 1 if seed < 2**32 else 2
