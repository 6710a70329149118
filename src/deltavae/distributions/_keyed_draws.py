"""Gamma and Poisson draws whose every element reads uniforms of its own, set by a key and
the element's place in the read-out, so a parameter that differs in its last bits changes
that element's draw at most.

torch's CPU samplers for the gamma (Marsaglia and Tsang's rejection) and the Poisson (a
multiplication method below a rate of 10, transformed rejection above) read one generator
element after element and take as many uniforms as each element's rejections need. A
decoder's output on a GPU differs from the CPU's in its last bits, so where one element took
a uniform more or less, the elements after it drew other numbers: ZINB parameters of 2,000
cells x 300 genes one part in 10,000 apart gave 4,766 to 7,572 other counts (three seeds),
against 142 to 185 here (``tests/test_keyed_draws.py``). Here an element's first uniforms
(a fixed count) are read from the caller's generator in row order, and the uniforms of any
further rejection rounds are SplitMix64 outputs of (key, element, slot), a counter-based
generator (Steele, Lea and Flood 2014), so no element reads another's: the gamma takes
rounds of Marsaglia and Tsang's method, round ``r`` from slots of its own, until each
element accepts, the Poisson alike Hormann's transformed rejection (rates from 10), and it
inverts its distribution function at one uniform below 10. Nothing in torch, NumPy or Pyro
draws from a counter this way, hence written here. Both run element by element in compiled
loops (numba, as scanpy's neighbours and UMAP compile theirs): in torch calls, a round of
calls per term of the mass function and per rejection round took 2.0-2.3 s for 10^7 Poisson
counts (now 0.65-0.8 s, the same counts) and 1.6-1.7 s for 10^7 gammas (now 0.6-0.7 s, torch's
own sampler's time); benchmarks/README.md, "The draws in compiled loops".
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._jit import compiled
from ._ndtri import ndtri

_SLOTS = 64  # uniforms an element may read; the gamma's rounds use 2 each
_MAX_ROUNDS = (_SLOTS - 1) // 2  # the last slot is the small gamma shapes' scaling
_PTRS_RATE = 10.0  # the Poisson's rejection from this rate, as torch's and NumPy's
_TINY = torch.finfo(torch.float64).tiny


# SplitMix64's constants as the unsigned words the compiled loops compute in (mod 2**64)
_U_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_U_STRIDE = np.uint64((_SLOTS * 0x9E3779B97F4A7C15) % (1 << 64))
_U_MIX1, _U_MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_U_BITS = tuple(np.uint64(bits) for bits in (1, 30, 27, 31, 11))


def _word(key: int) -> np.uint64:
    """A key as the unsigned 64-bit word the compiled loops read."""
    return np.uint64(key % (1 << 64))


@compiled
def _uniform_at(key, place, slot):  # pragma: no cover - compiled (numba), tested by value
    """SplitMix64's output number ``place * 64 + slot`` of the stream seeded by ``key`` (an
    unsigned word), as a uniform in (0, 1)."""
    one, s30, s27, s31, s11 = _U_BITS
    z = np.uint64(place) * _U_STRIDE + key + (np.uint64(slot) + one) * _U_GOLDEN
    z = (z ^ (z >> s30)) * _U_MIX1
    z = (z ^ (z >> s27)) * _U_MIX2
    z = z ^ (z >> s31)
    return (float(z >> s11) + 0.5) * 2.0**-53


@compiled
def _uniforms_at(key, places, slot, out):  # pragma: no cover - compiled (numba)
    for i in range(places.size):
        out[i] = _uniform_at(key, places[i], slot)


def keyed_uniform(key: int, index: torch.Tensor, slot: int) -> torch.Tensor:
    """Uniforms in (0, 1), float64, one per element of ``index`` (int64, the elements' places),
    from SplitMix64's output number ``index * 64 + slot`` of the stream seeded by ``key``: the
    compiled loops' :func:`_uniform_at` of each.

    Examples
    --------
    >>> u = keyed_uniform(7, torch.arange(5), 0)
    >>> bool(torch.equal(u[2:], keyed_uniform(7, torch.arange(2, 5), 0)))
    True
    >>> bool(((u > 0) & (u < 1)).all())
    True
    """
    places = index.detach().cpu().to(torch.int64).contiguous().reshape(-1).numpy()
    out = np.empty(places.size)
    _uniforms_at(_word(key), places, slot, out)
    return torch.from_numpy(out).reshape(index.shape)


def _check_finite(values: torch.Tensor, what: str, low: float | None = None) -> None:
    """Refuse NaN (and values below ``low``): a rejection loop never accepts them, and an
    inversion reads them as 0; parameters of a diverged model come as NaN."""
    bad = torch.isnan(values) if low is None else torch.isnan(values) | (values < low)
    if bool(bad.any()):
        first = values[bad][0].item()
        raise ValueError(
            f"{int(bad.sum())} of {values.numel()} {what} are not usable (the first: {first}); "
            "a model whose parameters went NaN (a diverged training) gives such values: "
            "retrain it (a lower learning rate) before drawing from it."
        )


def _first_slots(key: int, start: int, size: int, n: int, generator: torch.Generator | None):
    """Slots ``0 .. n - 1`` of the ``size`` elements from place ``start`` (float64, elements
    x n): from ``generator``, ``n`` uniforms per element read in row order (a fixed count, so
    the draws of later elements stay where they were; torch's ``rand`` is cheaper than the
    hash), else keyed."""
    if generator is None:
        index = torch.arange(start, start + size, dtype=torch.int64)
        return torch.stack([keyed_uniform(key, index, slot) for slot in range(n)], 1)
    u = torch.rand((size, n), generator=generator, dtype=torch.float64)
    return u.clamp_(min=_TINY)


def standard_gamma(
    alpha: torch.Tensor, key: int, start: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gamma(``alpha``, 1) draws (float64, on the CPU), element ``i`` (row order) reading the
    uniforms of place ``start + i`` only: Marsaglia and Tsang's rejection, round ``r`` from
    slots ``2r`` and ``2r + 1``, shapes below 1 raised by one and scaled by a uniform to the
    power ``1 / alpha`` (the last slot). Slots 0 and 1 come from ``generator`` where given
    (``_first_slots``).

    Examples
    --------
    >>> g = standard_gamma(torch.full((200000,), 2.5), key=1)
    >>> round(float(g.mean()), 1), round(float(g.var()), 1)
    (2.5, 2.5)
    """
    shape = alpha.shape
    alpha = alpha.detach().cpu().double().reshape(-1)
    _check_finite(alpha, "gamma shapes", low=0.0)
    draws = _looped(_gamma_loop, alpha, key, start, 2, generator, "gamma draw (shape")
    return torch.from_numpy(draws).reshape(shape)


@compiled(error_model="numpy")
def _gamma_loop(alpha, first, key, start, value):  # pragma: no cover - compiled (numba)
    """:func:`standard_gamma`'s draws into ``value``, element by element: the normal
    candidate x = ndtri(u) and its test at a second uniform (the squeeze first, the
    logarithms only where it fails), round 0's uniforms ``first[i]``, later rounds' keyed by
    the element's place. -1, or the first element rejected every round."""
    third = 1.0 / 3.0
    for i in range(alpha.size):
        a = alpha[i]
        small = a < 1.0
        d = (a + 1.0 if small else a) - third
        c = 1.0 / math.sqrt(9.0 * d)
        place, accepted = start + i, False
        for r in range(_MAX_ROUNDS):
            if r == 0:
                u, w = first[i, 0], first[i, 1]
            else:
                u, w = _uniform_at(key, place, 2 * r), _uniform_at(key, place, 2 * r + 1)
            x = ndtri(u)
            v = c * x + 1.0
            if v <= 0.0:
                continue
            v = v * v * v
            x2 = x * x
            if w < 1.0 - 0.0331 * x2 * x2 or math.log(w) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
                accepted = True
                break
        if not accepted:
            return i
        draw = d * v
        if small:  # Gamma(a + 1) times u ** (1 / a)
            draw *= math.exp(math.log(_uniform_at(key, place, _SLOTS - 1)) / a)
        value[i] = max(draw, _TINY)
    return -1


def poisson(
    rate: torch.Tensor, key: int, start: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Poisson(``rate``) draws (float64, on the CPU), element ``i`` (row order) reading the
    uniforms of place ``start + i`` only: rates below 10 by inversion at one uniform (slot 0;
    the mass function summed from P(N = 0)), rates from 10 by Hormann's transformed rejection
    (PTRS, as torch and NumPy draw them), round ``r`` from slots ``2r`` and ``2r + 1``. A
    rate one part in a million off moves only draws whose uniforms fall that close to an
    edge, each by itself. Rates of 0 (or below) give 0, NaN and infinite ones are refused.
    Slot 0 comes from ``generator`` where given (``_first_slots``).

    Examples
    --------
    >>> n = poisson(torch.tensor([0.0, 3.0, 400.0]).repeat(20000), key=2).reshape(-1, 3)
    >>> n[:, 0].max().item(), [round(float(m)) for m in n[:, 1:].mean(0)]
    (0.0, [3, 400])
    """
    shape = rate.shape
    rate = rate.detach().cpu().double().reshape(-1)
    _check_finite(rate, "Poisson rates")
    rate = rate.clamp(min=0.0)
    if bool(torch.isinf(rate).any()):
        raise ValueError("Poisson rates must be finite; got inf (a model's rates are clamped).")
    draws = _looped(_poisson_loop, rate, key, start, 1, generator, "Poisson draw (rate")
    return torch.from_numpy(draws).reshape(shape)


def _looped(loop, params, key: int, start: int, slots: int, generator, what: str) -> np.ndarray:
    """The draws of a compiled ``loop`` for ``params`` (float64 on the CPU, one per element),
    its first ``slots`` uniforms per element read by ``_first_slots``; ``what`` names the draw
    and its parameter where a round never accepted (probability below 0.1 ** 31)."""
    first = _first_slots(key, start, params.numel(), slots, generator)
    first = (first[:, 0] if slots == 1 else first).contiguous().numpy()
    draws = np.empty(params.numel())
    stuck = loop(params.contiguous().numpy(), first, _word(key), start, draws)
    if stuck >= 0:  # pragma: no cover - each round accepts with probability above 0.9
        raise RuntimeError(
            f"A {what} {params[stuck].item()}) rejected {_MAX_ROUNDS} rounds running."
        )
    return draws


@compiled(error_model="numpy")
def _poisson_loop(rate, first, key, start, count):  # pragma: no cover - compiled (numba)
    """:func:`poisson`'s draws into ``count``, element by element: below a rate of 10 the
    least k with P(N <= k) >= u at ``u = first[i]`` (the mass function summed from k = 0; a
    sum that rounding stops short of u, u within 1e-16 of 1, ends where the terms vanish),
    from 10 Hormann's PTRS (1993), round ``r``'s uniforms keyed by the element's place (but
    the first round's first, ``first[i]``): most candidates pass the quick test, the rest are
    checked against the mass function. -1, or the first element rejected every round."""
    for i in range(rate.size):
        lam = rate[i]
        if lam <= 0.0:
            count[i] = 0.0
        elif lam < _PTRS_RATE:
            u, mass, k = first[i], math.exp(-lam), 0
            below = mass
            while below < u and mass > 1e-300:
                k += 1
                mass *= lam / k
                below += mass
            count[i] = k
        elif not _transformed_rejection(lam, first[i], key, start + i, count, i):
            return i
    return -1


@compiled(error_model="numpy")
def _transformed_rejection(lam, first, key, place, count, i):  # pragma: no cover - numba
    """PTRS for one rate ``lam`` >= 10 into ``count[i]``; whether a round accepted."""
    b = 0.931 + 2.53 * math.sqrt(lam)
    a = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2.0)
    log_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    for r in range(_MAX_ROUNDS):
        u = (first if r == 0 else _uniform_at(key, place, 2 * r)) - 0.5
        v = _uniform_at(key, place, 2 * r + 1)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            count[i] = k
            return True
        if k < 0 or (us < 0.013 and v > us):
            continue
        left = math.log(v) + log_alpha - math.log(a / (us * us) + b)
        if left <= -lam + k * math.log(lam) - math.lgamma(k + 1.0):
            count[i] = k
            return True
    return False
