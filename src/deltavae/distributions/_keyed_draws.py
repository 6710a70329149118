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
draws from a counter this way, hence written here.
"""

from __future__ import annotations

import torch

_SLOTS = 64  # uniforms an element may read; the gamma's rounds use 2 each
_MAX_ROUNDS = (_SLOTS - 1) // 2  # the last slot is the small gamma shapes' scaling
_FEW = 512  # elements left below which the Poisson's sums take many terms at once
_PTRS_RATE = 10.0  # the Poisson's rejection from this rate, as torch's and NumPy's
_TINY = torch.finfo(torch.float64).tiny


def _signed(word: int) -> int:
    """A 64-bit word as the int64 torch holds it."""
    return word - (1 << 64) if word >= 1 << 63 else word


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    """A logical right shift of int64 words (torch's ``>>`` keeps the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def keyed_uniform(key: int, index: torch.Tensor, slot: int) -> torch.Tensor:
    """Uniforms in (0, 1), float64, one per element of ``index`` (int64, the elements' places),
    from SplitMix64's output number ``index * 64 + slot`` of the stream seeded by ``key``.

    Examples
    --------
    >>> u = keyed_uniform(7, torch.arange(5), 0)
    >>> bool(torch.equal(u[2:], keyed_uniform(7, torch.arange(2, 5), 0)))
    True
    >>> bool(((u > 0) & (u < 1)).all())
    True
    """
    offset = _signed((key + (slot + 1) * 0x9E3779B97F4A7C15) % (1 << 64))
    z = index.mul(_signed((_SLOTS * 0x9E3779B97F4A7C15) % (1 << 64))).add_(offset)
    z.bitwise_xor_(_shift(z, 30)).mul_(_MIX1)
    z.bitwise_xor_(_shift(z, 27)).mul_(_MIX2)
    z.bitwise_xor_(_shift(z, 31))
    return _shift(z, 11).double().add_(0.5).mul_(2.0**-53)


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


def _first_slots(key: int, index: torch.Tensor, n: int, generator: torch.Generator | None):
    """Slots ``0 .. n - 1`` of every element (float64, elements x n): from ``generator``, ``n``
    uniforms per element read in row order (a fixed count, so the draws of later elements
    stay where they were; torch's ``rand`` is cheaper than the hash), else keyed."""
    if generator is None:
        return torch.stack([keyed_uniform(key, index, slot) for slot in range(n)], 1)
    u = torch.rand((index.numel(), n), generator=generator, dtype=torch.float64)
    return u.clamp_(min=_TINY)


def _accepted(d, c, x, u):
    """Marsaglia and Tsang's test of the candidates ``x`` (normal) at uniforms ``u``, and the
    candidates' values ``d * v``: the squeeze first, the logarithms only where it fails."""
    v = (c * x).add_(1.0)
    positive = v > 0
    v = v.clamp_(min=_TINY).pow_(3)
    x2 = x * x
    accept = u < 1.0 - 0.0331 * x2 * x2
    slow = torch.nonzero(positive & ~accept).squeeze(1)
    vs, dd = v[slow], d[slow]
    exact = torch.log(u[slow]) < 0.5 * x2[slow] + dd * (1.0 - vs + torch.log(vs))
    accept &= positive
    accept[slow] = exact
    return accept, v.mul_(d)


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
    index = torch.arange(start, start + alpha.numel(), dtype=torch.int64)
    small = alpha < 1
    d = torch.where(small, alpha + 1, alpha).sub_(1.0 / 3.0)
    c = torch.rsqrt(9.0 * d)
    first = _first_slots(key, index, 2, generator)
    x = torch.special.ndtri(first[:, 0])
    accept, value = _accepted(d, c, x, first[:, 1].contiguous())
    todo = torch.nonzero(~accept).squeeze(1)
    for r in range(1, _MAX_ROUNDS):
        if todo.numel() == 0:
            break
        place, dd = index[todo], d[todo]
        x = torch.special.ndtri(keyed_uniform(key, place, 2 * r))
        accept, candidate = _accepted(dd, c[todo], x, keyed_uniform(key, place, 2 * r + 1))
        value[todo[accept]] = candidate[accept]
        todo = todo[~accept]
    if todo.numel():  # pragma: no cover - each round accepts with probability above 0.95
        raise RuntimeError(f"{todo.numel()} gamma draws rejected {_MAX_ROUNDS} rounds running.")
    if small.any():
        raised = torch.nonzero(small).squeeze(1)
        boost = keyed_uniform(key, index[raised], _SLOTS - 1)
        # exp(log(u) / alpha), not u ** (1 / alpha): torch's tensor power rounds the last
        # elements of a tensor otherwise than the rest, so chunks would change the draws
        value[raised] *= torch.exp(torch.log(boost) / alpha[raised])
    return value.clamp_(min=_TINY).reshape(shape)


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
    index = torch.arange(start, start + rate.numel(), dtype=torch.int64)
    first = _first_slots(key, index, 1, generator)[:, 0]
    high = rate >= _PTRS_RATE
    n_high = int(high.sum())
    if n_high == rate.numel():  # no gathers where every rate is high
        return _transformed_rejection(rate, key, index, first).reshape(shape)
    count = torch.zeros_like(rate)
    low = torch.nonzero(~high & (rate > 0)).squeeze(1)
    if low.numel():
        count[low] = _summed_inverse(rate[low], first[low])
    if n_high:
        high = torch.nonzero(high).squeeze(1)
        count[high] = _transformed_rejection(rate[high], key, index[high], first[high])
    return count.reshape(shape)


def _summed_inverse(rate: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The least k with P(N <= k) >= u, the mass function summed from k = 0 (rates < 10):
    term by term over the elements still short of u, and once few are left (each term a
    round of torch calls) many terms at once (``_terms_at_once``, the same sums)."""
    mass = torch.exp(-rate)
    count = torch.zeros_like(rate)
    todo = torch.nonzero(mass < u).squeeze(1)
    state = torch.stack([rate[todo], u[todo], mass[todo], mass[todo]])  # rate, u, P(k), P(<= k)
    k = 0
    while todo.numel() > _FEW:
        k += 1
        state[2] *= state[0] / k
        state[3] += state[2]
        # a sum that rounding stops short of u (u within 1e-16 of 1) ends where terms vanish
        more = (state[3] < state[1]) & (state[2] > 1e-300)
        count[todo] = float(k)
        todo, state = todo[more], state[:, more]
    if todo.numel():
        count[todo] = _terms_at_once(*state, k)
    return count


def _terms_at_once(rate, u, mass, below, k: int) -> torch.Tensor:
    """``_summed_inverse``'s loop from term ``k`` on (``mass`` = P(N = k), ``below`` =
    P(N <= k)), 16, 32, 64 ... terms at a time: each term's factor ``rate / j`` multiplied on
    and each term added in the loop's order (a cumulative product and sum), so the counts
    are the loop's to the bit."""
    count = torch.empty_like(rate)
    left = torch.arange(rate.numel())
    width = 16
    while left.numel():
        steps = torch.arange(k + 1, k + width + 1, dtype=rate.dtype)
        masses = torch.cumprod(torch.cat([mass[:, None], rate[:, None] / steps], 1), 1)[:, 1:]
        belows = torch.cumsum(torch.cat([below[:, None], masses], 1), 1)[:, 1:]
        stop = (belows >= u[:, None]) | (masses <= 1e-300)
        done = stop.any(1)
        count[left[done]] = (k + 1 + stop[done].int().argmax(1)).to(rate.dtype)
        more = ~done
        left, rate, u = left[more], rate[more], u[more]
        mass, below = masses[more, -1], belows[more, -1]
        k, width = k + width, 2 * width
    return count


def _transformed_rejection(rate, key: int, index, first: torch.Tensor) -> torch.Tensor:
    """Hormann's PTRS (1993) for rates >= 10, each round's two uniforms keyed by the element
    (but the first round's first, ``first``): most candidates pass the quick test; the rest
    are checked against the mass function."""
    b = 0.931 + 2.53 * rate.sqrt()
    a = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2.0)
    count = torch.empty_like(rate)
    todo = torch.arange(rate.numel())
    for r in range(_MAX_ROUNDS):
        if todo.numel() == 0:
            break
        whole = r == 0
        aa, bb, lam = (t if whole else t[todo] for t in (a, b, rate))
        place = index if whole else index[todo]
        u = (first if whole else keyed_uniform(key, place, 2 * r)) - 0.5
        v = keyed_uniform(key, place, 2 * r + 1)
        us = 0.5 - u.abs()
        k = torch.floor((2.0 * aa / us + bb) * u + lam + 0.43)
        quick = (us >= 0.07) & (v <= (vr if whole else vr[todo]))
        if whole:
            count = torch.where(quick, k, count)
        else:
            count[todo[quick]] = k[quick]
        slow = torch.nonzero(~quick & (k >= 0) & ((us >= 0.013) | (v <= us))).squeeze(1)
        aa, bb, lam, us, v, k = (t[slow] for t in (aa, bb, lam, us, v, k))
        log_alpha = torch.log(1.1239 + 1.1328 / (bb - 3.4))
        left = torch.log(v) + log_alpha - torch.log(aa / (us * us) + bb)
        exact = left <= -lam + k * torch.log(lam) - torch.lgamma(k + 1.0)
        count[todo[slow[exact]]] = k[exact]
        accepted = quick
        accepted[slow[exact]] = True
        todo = torch.nonzero(~accepted).squeeze(1) if whole else todo[~accepted]
    if todo.numel():  # pragma: no cover - each round accepts with probability above 0.9
        raise RuntimeError(f"{todo.numel()} Poisson draws rejected {_MAX_ROUNDS} rounds running.")
    return count
