"""The random draws of the seeded read-outs (generated cells, translated and shifted counts),
made on the CPU whatever the model's device, in cell order.

A GPU's generator gives other numbers than the CPU's for one seed, so draws made on the
model's device differed between a GPU and the CPU; and draws of several kinds made minibatch
by minibatch (a NB draw is a gamma, then a Poisson draw) interleaved them in an order set by
``batch_size``. Here each kind of draw has a CPU :class:`torch.Generator` of its own, seeded
from the read-out's seed and the kind's name; torch's CPU kernels for uniform and Bernoulli
draws read their generator one element after another, so minibatches of any size, on any
device, draw the same numbers for each cell. The draws of a normal (``randn``, which CPU
kernels fill 16 values at a time) are made in one call per read-out only
(:meth:`CellDraws.normal`) or as quantiles of uniforms. Gamma and Poisson draws are not
torch's: its samplers take as many uniforms as each element's rejections need, so a parameter
off in its last bits (as a GPU's are) moved the draws after it; here each element reads a
fixed number of uniforms from the generator and keys any further ones by its place in the
read-out (``deltavae.distributions._keyed_draws``).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from ._counts import round_counts
from ._keyed_draws import poisson, standard_gamma
from ._likelihood import Likelihood

#: Elements a keyed sampler draws at a time (``CellDraws._in_chunks``).
CHUNK = 1 << 17


def prefix_randn(shape, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``torch.randn(shape)`` from ``generator`` whose first values are the same whatever the
    shape: torch's CPU kernel fills 16 values at a time and draws the last 16 again where
    the size is not a multiple of 16, so ``sample(n_cells=100)`` and ``sample(200)`` (one
    seed) differed in their first cells. Drawn to the next multiple of 16 and cut.

    Examples
    --------
    >>> a = prefix_randn((3, 5), torch.Generator().manual_seed(0))
    >>> b = prefix_randn((7, 5), torch.Generator().manual_seed(0))
    >>> bool((a == b[:3]).all())
    True
    """
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(shape, dtype=np.int64))
    padded = -(-size // 16) * 16
    return torch.randn(padded, generator=generator, dtype=dtype)[:size].reshape(shape)


class CellDraws:
    """Generators of one seeded read-out, one per kind of draw, all on the CPU.

    Parameters
    ----------
    seed
        The read-out's seed, an integer in [0, 2**64); ``None`` draws one from torch's global
        (CPU) generator, so ``torch.manual_seed`` repeats an unseeded read-out.

    Examples
    --------
    >>> draws = CellDraws(0)
    >>> whole = draws.round_counts(torch.full((4, 3), 2.5))
    >>> parts = CellDraws(0)
    >>> split = torch.cat([parts.round_counts(torch.full((n, 3), 2.5)) for n in (1, 3)])
    >>> bool((whole == split).all())
    True
    """

    def __init__(self, seed: int | None = None):
        if seed is None:
            seed = int(torch.randint(2**62, (1,)).item())
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}
        self._places: dict[str, int] = {}
        self._parts: dict[int, CellDraws] = {}

    def _key(self, kind: str) -> int:
        """A 64-bit key of the seed and the kind's name."""
        words = np.random.SeedSequence([self.seed, zlib.crc32(kind.encode())]).generate_state(2)
        return int(words[0]) | int(words[1]) << 32

    def generator(self, kind: str) -> torch.Generator:
        """The CPU generator of draws of ``kind``, seeded from the seed and the kind's name."""
        if kind not in self._generators:
            self._generators[kind] = torch.Generator().manual_seed(self._key(kind))
        return self._generators[kind]

    def _places_of(self, kind: str, n: int) -> tuple[int, int]:
        """The key of ``kind`` and the place of the first of its next ``n`` elements: the
        elements drawn so far, so the read-out's cells, in order, take places 0, 1, ..."""
        start = self._places.get(kind, 0)
        self._places[kind] = start + n
        return self._key(kind), start

    def gamma(self, alpha: torch.Tensor, kind: str) -> torch.Tensor:
        """Gamma(``alpha``, 1) draws on the CPU (float64): each element's first two uniforms
        from the kind's generator, any more keyed by its place
        (``_keyed_draws.standard_gamma``).

        Examples
        --------
        >>> draws = CellDraws(0)
        >>> whole = draws.gamma(torch.full((4, 3), 2.0), "g")
        >>> parts = CellDraws(0)
        >>> split = torch.cat([parts.gamma(torch.full((n, 3), 2.0), "g") for n in (1, 3)])
        >>> bool(torch.equal(whole, split))
        True
        """
        return self._in_chunks(standard_gamma, alpha, kind)

    def poisson(self, rate: torch.Tensor, kind: str) -> torch.Tensor:
        """Poisson(``rate``) draws on the CPU (float64), each element's first uniform from
        the kind's generator, any more keyed by its place (``_keyed_draws.poisson``)."""
        return self._in_chunks(poisson, rate, kind)

    def _in_chunks(self, draw, values: torch.Tensor, kind: str, dtype=torch.float64):
        """``draw`` (a keyed sampler) of ``values``, ``CHUNK`` elements at a time: the draws
        of each element are the same in chunks as at once, and the sampler's float64
        temporaries stay a few MiB (of a whole read-out's part they added a tenth to a
        posterior predictive read's peak memory)."""
        flat = values.detach().cpu().reshape(-1)
        key, start = self._places_of(kind, flat.numel())
        out = torch.empty(flat.numel(), dtype=dtype)
        for i in range(0, flat.numel(), CHUNK):
            out[i : i + CHUNK] = draw(flat[i : i + CHUNK], key, start + i, self.generator(kind))
        return out.reshape(values.shape)

    def branch(self, index: int) -> CellDraws:
        """Generators of their own for a part ``index`` of the read-out that draws its cells
        again (read through :meth:`part`, which keeps them): one stream shared by the parts
        took their draws in an order set by the minibatches.

        Examples
        --------
        >>> draws = CellDraws(0)
        >>> draws.branch(1).seed == CellDraws(0).branch(1).seed != draws.branch(2).seed
        True
        """
        words = np.random.SeedSequence([self.seed, int(index)]).generate_state(2)
        return CellDraws(int(words[0]) | int(words[1]) << 32)

    def part(self, index: int) -> CellDraws:
        """The generators of pass ``index`` of a read-out that draws its cells several times
        (each ``transform_batch``; ``get_marginal_ll``'s passes of importance draws): pass 0
        draws from these, pass ``index`` from :meth:`branch` ``(index)``, made once and kept,
        so every minibatch's pass ``index`` reads on from the last one's (a fresh branch each
        minibatch drew each minibatch's first cells alike).

        Examples
        --------
        >>> draws = CellDraws(0)
        >>> draws.part(0) is draws, draws.part(1) is draws.part(1)
        (True, True)
        >>> draws.part(1).seed == CellDraws(0).branch(1).seed
        True
        """
        if index == 0:
            return self
        if index not in self._parts:
            self._parts[index] = self.branch(index)
        return self._parts[index]

    def uniform(self, shape, kind: str) -> torch.Tensor:
        """Uniform draws in [0, 1) on the CPU, element after element in row order."""
        return torch.rand(tuple(shape), generator=self.generator(kind))

    def normal(self, shape, like: torch.Tensor, kind: str, dtype=torch.float64) -> torch.Tensor:
        """Standard normal draws made on the CPU (:func:`prefix_randn`), moved to ``like``'s
        device and ``like``'s dtype (``like=None``: on the CPU in ``dtype``). One call per
        read-out and kind; the first cells' draws are the same whatever the number of cells."""
        draws = prefix_randn(shape, self.generator(kind), dtype)
        return draws if like is None else draws.to(device=like.device, dtype=like.dtype)

    def standard_normal(self, like: torch.Tensor, n_samples: int, kind: str) -> torch.Tensor:
        """Standard normal draws of ``like``'s shape (cells first), with ``n_samples > 1`` a
        first axis of draws, on ``like``'s device and dtype. Made on the CPU cell after cell,
        through the normal's quantile function of uniforms (read from the generator one
        element after another, where ``randn``'s kernel fills 16 at a time): minibatches of
        any size draw the same numbers for each cell.

        Examples
        --------
        >>> loc = torch.zeros(5, 2)
        >>> whole = CellDraws(0).standard_normal(loc, 3, "z")
        >>> parts = CellDraws(0)
        >>> halves = (slice(2), slice(2, 5))
        >>> split = torch.cat([parts.standard_normal(loc[s], 3, "z") for s in halves], 1)
        >>> whole.shape, bool(torch.equal(whole, split))
        (torch.Size([3, 5, 2]), True)
        """
        shape = (like.shape[0], n_samples, *like.shape[1:])
        return _draws_first(self.elementwise_normal(shape, kind), n_samples, like)

    def elementwise_normal(self, shape, kind: str) -> torch.Tensor:
        """Standard normal draws of ``shape`` on the CPU (float64), the normal's quantiles of
        uniforms read element after element in row order: a shape's first rows are drawn
        alike whatever the rows after (``randn`` fills 16 values at a time).

        Examples
        --------
        >>> whole = CellDraws(0).elementwise_normal((5, 3), "x")
        >>> parts = CellDraws(0)
        >>> split = torch.cat([parts.elementwise_normal((n, 3), "x") for n in (2, 3)])
        >>> bool(torch.equal(whole, split))
        True
        """
        uniform = self.uniform(shape, kind).double().clamp_(min=torch.finfo(torch.float64).tiny)
        return torch.special.ndtri(uniform)

    def dirichlet(self, concentration: torch.Tensor, n_samples: int, kind: str) -> torch.Tensor:
        """Dirichlet draws of ``concentration`` (cells x components, on any device), as
        :meth:`standard_normal` lays them out: normalised gamma draws, made on the CPU cell
        after cell.

        Examples
        --------
        >>> p = CellDraws(0).dirichlet(torch.ones(4, 3), 1, "p")
        >>> p.shape, bool(torch.allclose(p.sum(-1), torch.ones(4)))
        (torch.Size([4, 3]), True)
        """
        alpha = concentration.detach().cpu().double()
        alpha = alpha.unsqueeze(1).expand(alpha.shape[0], n_samples, *alpha.shape[1:])
        gamma = self.gamma(alpha, kind)  # at least tiny: no 0 / 0 of tiny shapes
        return _draws_first(gamma / gamma.sum(-1, keepdim=True), n_samples, concentration)

    def round_counts(self, mean: torch.Tensor, kind: str = "round") -> torch.Tensor:
        """:func:`~deltavae.distributions.round_counts` of ``mean`` on the CPU."""
        return round_counts(mean.detach().cpu().contiguous(), generator=self.generator(kind))

    def sample(self, likelihood: Likelihood, params: dict) -> torch.Tensor:
        """One draw of p(x | params) (a decoder's parameters, on any device), on the CPU.

        Counts are scvi-tools' draw (a gamma of shape theta and mean mu, clamped at 1e8, then
        a Poisson; a zero where a uniform falls at or below the ZINB's dropout probability),
        the gamma and the Poisson drawn by the keyed samplers (:meth:`gamma`), so parameters
        a GPU rounds otherwise than the CPU move only the counts at an edge.
        """
        cpu = {
            k: v.detach().cpu().contiguous()
            for k, v in params.items()
            if isinstance(v, torch.Tensor)
        }
        if likelihood.is_count:
            mu = cpu["mu"]
            theta = cpu["theta"].expand_as(mu)
            gamma = self._in_chunks(standard_gamma, theta, "gamma", mu.dtype)
            rate = gamma.mul_(mu / theta).clamp_(min=torch.finfo(mu.dtype).tiny, max=1e8)
            counts = self._in_chunks(poisson, rate, "poisson", mu.dtype)
            if likelihood.name == "zinb":
                zero = self.uniform(mu.shape, "dropout") <= torch.sigmoid(cpu["zi_logits"])
                counts = torch.where(zero, torch.zeros_like(counts), counts)
            return counts
        if likelihood.name == "normal":
            out = cpu["out"]
            noise = self.elementwise_normal(out.shape, "normal").to(out.dtype)
            return out + torch.exp(cpu["log_scale"]) * noise
        logits = cpu["out"]
        return (self.uniform(logits.shape, "bernoulli") < torch.sigmoid(logits)).to(logits.dtype)


def _draws_first(draws: torch.Tensor, n_samples: int, like: torch.Tensor) -> torch.Tensor:
    """``draws`` made cells first (cells x draws x ...) as the modules take them: a first
    axis of draws when ``n_samples > 1`` (none for one), on ``like``'s device and dtype."""
    draws = draws.movedim(1, 0) if n_samples > 1 else draws[:, 0]
    return draws.to(device=like.device, dtype=like.dtype)
