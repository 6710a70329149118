"""Drawing new cells from a trained c*GMΔVÆ module and translating cells between conditions:
the parts of :class:`deltavae.module.CGMDVAEModule` that only read its networks."""

from __future__ import annotations

import torch
from scvi.module.base import auto_move_data

from ..distributions._draws import CellDraws
from ..nn._blocks import CorrelatedNormal


class CGMDVAEGeneration:
    """Ancestral sampling and translation for :class:`~deltavae.module.CGMDVAEModule`, which
    provides ``alpha``, ``n_latent_w``, ``observation``, ``device``, ``encode``, ``decode``
    and ``prior_distribution``."""

    @torch.inference_mode()
    def generate(
        self,
        n_cells: int,
        cat_covs: torch.Tensor | None = None,
        cluster: int | torch.Tensor | None = None,
        library_log_stats: tuple | None = None,
        draws: CellDraws | None = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Ancestral draws of d, y, w, z and x for ``n_cells`` cells under ``cat_covs``.

        ``cluster`` fixes y, for every cell or (a tensor) each cell's (otherwise
        d ~ Dir(alpha), y ~ Cat(d)); for counts the log
        library size is drawn from N(mean, sd) given as ``library_log_stats`` (numbers, or
        ``(n_cells, 1)`` tensors on the module's device: each cell's), or is
        ``library_log_stats(z)`` of the cells' standard normal draws ``z`` (``(n_cells, 1)``,
        float64 on the CPU; a function returning them on the module's device). Returns the
        cluster ``y``, ``w``, ``z``, the draws ``x`` and their expectation ``expected``, on
        the CPU. The random numbers come from ``draws``
        (:class:`~deltavae.distributions._draws.CellDraws`; ``None``: one seeded from torch's
        generator), drawn on the CPU: a GPU draws the same cells as the CPU. The cells are
        decoded ``batch_size`` at a time (``None``: all at once), drawing the same cells
        whatever the ``batch_size``: the decoder's tensors of every cell at once (means,
        dispersions, dropouts, hidden layers) took several times the memory of the result;
        each part is written into the result as it is decoded.
        """
        draws = CellDraws() if draws is None else draws
        # In the networks' dtype, not torch's default (a user's float64 made them refuse w).
        device, dtype = self.device, self.alpha.dtype
        if cluster is None:
            alpha = self.alpha.detach().cpu().double().expand(n_cells, -1).contiguous()
            d = torch._sample_dirichlet(alpha, generator=draws.generator("d"))
            y = torch.multinomial(d, 1, generator=draws.generator("y")).squeeze(-1).to(device)
        elif isinstance(cluster, int):
            y = torch.full((n_cells,), cluster, device=device)
        else:  # each cell's own
            y = torch.as_tensor(cluster, dtype=torch.long, device=device).reshape(n_cells)
        # The normal draws of every cell at once (randn's draws depend on the shape filled).
        w = draws.normal((n_cells, self.n_latent_w), self.alpha, "w")
        eps = draws.normal((n_cells, self.n_latent), self.alpha, "z")
        library = None
        if self.observation.is_count:
            if library_log_stats is None:
                raise ValueError("Count likelihoods need library_log_stats=(mean, sd).")
            if callable(library_log_stats):  # of the cells' normal draws, float64 on the CPU
                library = library_log_stats(draws.normal((n_cells, 1), None, "library"))
            else:
                mean, sd = library_log_stats
                library = draws.normal((n_cells, 1), self.alpha, "library") * sd + mean
        noise = None
        if self.observation.name == "normal":
            shape = (n_cells, self.n_input)
            noise = draws.normal(shape, None, "normal", dtype)
        step = n_cells if batch_size is None else batch_size
        result = {}  # filled part by part: a list of parts concatenated held every cell twice
        for start in range(0, n_cells, max(step, 1)):
            cells = slice(start, start + step)
            covs = None if cat_covs is None else cat_covs[cells]
            prior = self.prior_distribution(w[cells], covs)
            z = _from_noise(prior, eps[cells].unsqueeze(-2))
            z = z[torch.arange(z.shape[0], device=device), y[cells]]
            params = self.decode(z, covs, None if library is None else library[cells])
            if noise is None:
                x = draws.sample(self.observation, params).to(dtype=dtype)
            else:  # the draw of CellDraws.sample, with this part of the noise
                out, scale = params["out"].cpu(), params["log_scale"].cpu().exp()
                x = out + scale * noise[cells]
            part = {"z": z.cpu(), "x": x, "expected": self.observation.expected(params).cpu()}
            for key, value in part.items():
                if key not in result:
                    result[key] = value.new_empty((n_cells, *value.shape[1:]))
                result[key][cells] = value
        return {"y": y.cpu(), "w": w.cpu(), **result}

    @torch.inference_mode()
    @auto_move_data
    def translate(
        self,
        x,
        cat_covs,
        target_covs,
        residual: bool = False,
        floor: float | None = 0.0,
        draws: CellDraws | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Decode each cell's posterior mean of z (data ``x``, conditions' codes ``cat_covs``)
        under ``target_covs`` (codes per cell, or one row for all), at its own library size for
        counts.

        Returns ``expected`` (E[x | z, target]) and, for counts, ``counts``: one draw of the
        posterior predictive (None otherwise). With ``residual``, the cell's own data plus the
        decoded change from its own to the target conditions, delta = E[x | z, target] -
        E[x | z, own]: ``expected`` is x + delta clipped at ``floor`` (0; ``None`` for real
        values that may be negative, where nothing is clipped; without ``residual`` too), and
        ``counts`` is that
        rounded stochastically to whole counts (:func:`deltavae.distributions.round_counts`),
        so every count the change does not move is kept as observed. What the model does not
        reconstruct of a cell is kept as observed. ``counts`` are drawn on the CPU from
        ``draws`` (:class:`~deltavae.distributions._draws.CellDraws`; ``None``: one seeded from
        torch's generator), cell after cell: minibatches of any size, on any device, draw the
        same counts.
        """
        draws = CellDraws() if draws is None else draws
        parts = self.translation(x, cat_covs, target_covs, residual, floor)
        counts = translated_counts(parts, self.observation, draws)
        return {"expected": parts["expected"], "counts": counts}

    @torch.inference_mode()
    @auto_move_data
    def translation(
        self, x, cat_covs, target_covs, residual: bool = False, floor: float | None = 0.0
    ) -> dict[str, torch.Tensor]:
        """:meth:`translate`'s values (of ``x`` under ``cat_covs`` moved to ``target_covs``,
        ``residual`` and ``floor`` as there) on the module's device, drawing nothing:
        ``expected`` and, for counts, what :func:`translated_counts` draws them from (with
        ``residual``, ``to_round``: x + delta; without, the decoder's ``mu``, ``theta`` as
        ``mu``'s shape and, for a ZINB, ``zi_logits``)."""
        qz, _ = self.encode(x, cat_covs)
        target_covs = target_covs.expand(cat_covs.shape).to(cat_covs.dtype)
        library = self.observation.log_library(x)
        params = self.decode(qz.loc, target_covs, library)
        expected = self.observation.expected(params)
        out = {}
        if residual:
            delta = expected - self.observation.expected(self.decode(qz.loc, cat_covs, library))
            expected = x + delta if floor is None else (x + delta).clamp(min=floor)
            if self.observation.is_count:
                out["to_round"] = x + delta
        elif self.observation.is_count:
            out = {key: params[key] for key in ("mu", "zi_logits") if params.get(key) is not None}
            out["theta"] = params["theta"].expand_as(params["mu"])
        elif floor is not None:  # a normal mean of data that are never negative
            expected = expected.clamp(min=floor)
        return {"expected": expected, **out}


def translated_counts(parts: dict, likelihood, draws: CellDraws) -> torch.Tensor | None:
    """The counts of :meth:`CGMDVAEGeneration.translation`'s ``parts`` (on any device),
    drawn on the CPU from ``draws`` cell after cell (the same for the cells of any part):
    ``to_round`` rounded stochastically, or a draw of the ``likelihood``
    (:class:`~deltavae.distributions.Likelihood`) from ``mu``, ``theta`` and ``zi_logits``;
    None where there are none (not counts)."""
    if "to_round" in parts:
        return draws.round_counts(parts["to_round"])
    if "mu" not in parts:
        return None
    params = {key: parts[key] for key in ("mu", "theta", "zi_logits") if key in parts}
    return draws.sample(likelihood, params)


def _from_noise(prior, eps: torch.Tensor) -> torch.Tensor:
    """Draws of a mixture prior (:class:`~deltavae.nn._blocks.CorrelatedNormal`, or an
    independent Normal) from standard normal noise ``eps``."""
    if isinstance(prior, CorrelatedNormal):
        return prior.from_noise(eps)
    return prior.mean + prior.stddev * eps
