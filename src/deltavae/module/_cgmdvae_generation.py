"""Drawing new cells from a trained c*GMΔVÆ module and translating cells between conditions:
the parts of :class:`deltavae.module.CGMDVAEModule` that only read its networks."""

from __future__ import annotations

import torch
from scvi.module.base import auto_move_data
from torch.distributions import Categorical, Dirichlet

from ..distributions import round_counts


class CGMDVAEGeneration:
    """Ancestral sampling and translation for :class:`~deltavae.module.CGMDVAEModule`, which
    provides ``alpha``, ``n_latent_w``, ``observation``, ``device``, ``encode``, ``decode``
    and ``prior_distribution``."""

    @torch.inference_mode()
    def generate(
        self,
        n_cells: int,
        cat_covs: torch.Tensor | None = None,
        cluster: int | None = None,
        library_log_stats: tuple[float, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Ancestral draws of d, y, w, z and x for ``n_cells`` cells under ``cat_covs``.

        ``cluster`` fixes y (otherwise d ~ Dir(alpha), y ~ Cat(d)); for counts the log
        library size is drawn from N(mean, sd) given as ``library_log_stats``. Returns the
        cluster ``y``, ``w``, ``z``, the draws ``x`` and their expectation ``expected``.
        """
        # In the networks' dtype, not torch's default (a user's float64 made them refuse w).
        device, dtype = self.device, self.alpha.dtype
        if cluster is None:
            d = Dirichlet(self.alpha).sample((n_cells,))
            y = Categorical(probs=d).sample()
        else:
            y = torch.full((n_cells,), cluster, device=device)
        w = torch.randn(n_cells, self.n_latent_w, dtype=dtype, device=device)
        z = self.prior_distribution(w, cat_covs).sample()[torch.arange(n_cells, device=device), y]
        library = None
        if self.observation.is_count:
            if library_log_stats is None:
                raise ValueError("Count likelihoods need library_log_stats=(mean, sd).")
            mean, sd = library_log_stats
            library = torch.randn(n_cells, 1, dtype=dtype, device=device) * sd + mean
        params = self.decode(z, cat_covs, library)
        x = self.observation.torch(params).sample()
        return {"y": y, "w": w, "z": z, "x": x, "expected": self.observation.expected(params)}

    @torch.inference_mode()
    @auto_move_data
    def translate(
        self, x, cat_covs, target_covs, residual: bool = False, floor: float | None = 0.0
    ) -> dict[str, torch.Tensor | None]:
        """Decode each cell's posterior mean of z under ``target_covs`` (codes per cell, or one
        row for all), at its own library size for counts.

        Returns ``expected`` (E[x | z, target]) and, for counts, ``counts``: one draw of the
        posterior predictive (None otherwise). With ``residual``, the cell's own data plus the
        decoded change from its own to the target conditions, delta = E[x | z, target] -
        E[x | z, own]: ``expected`` is x + delta clipped at ``floor`` (0; ``None`` for real
        values that may be negative, where nothing is clipped; without ``residual`` too), and
        ``counts`` is that
        rounded stochastically to whole counts (:func:`deltavae.distributions.round_counts`),
        so every count the change does not move is kept as observed. What the model does not
        reconstruct of a cell is kept as observed.
        """
        qz, _ = self.encode(x, cat_covs)
        target_covs = target_covs.expand(cat_covs.shape).to(cat_covs.dtype)
        library = self.observation.log_library(x)
        params = self.decode(qz.loc, target_covs, library)
        expected = self.observation.expected(params)
        counts = None
        if residual:
            delta = expected - self.observation.expected(self.decode(qz.loc, cat_covs, library))
            expected = x + delta if floor is None else (x + delta).clamp(min=floor)
            if self.observation.is_count:
                counts = round_counts(x + delta)
        elif self.observation.is_count:
            counts = self.observation.torch(params).sample()
        elif floor is not None:  # a normal mean of data that are never negative
            expected = expected.clamp(min=floor)
        return {"expected": expected, "counts": counts}
