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
        dispersions, dropouts, hidden layers) took several times the memory of the result.
        The decoded parts are kept on the device and brought to the host together
        (:class:`~deltavae.model._gathered.Gathered`: every ``FLUSH_BYTES`` and at the end),
        where their cells are drawn and written into the result: a ``.cpu()`` of each part
        made the host wait for a GPU once per part.
        """
        from ..model._gathered import Gathered

        draws = CellDraws() if draws is None else draws
        # In the networks' dtype, not torch's default (a user's float64 made them refuse w).
        device, dtype = self.device, self.alpha.dtype
        # y and w kept on the host as drawn there or given: read back, each was a wait.
        if cluster is None:
            alpha = self.alpha.detach().cpu().double().expand(n_cells, -1).contiguous()
            d = torch._sample_dirichlet(alpha, generator=draws.generator("d"))
            y_host = torch.multinomial(d, 1, generator=draws.generator("y")).squeeze(-1)
        elif isinstance(cluster, int):
            y_host = torch.full((n_cells,), cluster)
        else:  # each cell's own
            y_host = torch.as_tensor(cluster, dtype=torch.long, device="cpu").reshape(n_cells)
        y = y_host.to(device)
        # The normal draws of every cell at once (randn's draws depend on the shape filled).
        w_host = draws.normal((n_cells, self.n_latent_w), None, "w").to(dtype=dtype)
        w = w_host.to(device)
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
        noise = scale = None
        if self.observation.name == "normal":
            shape = (n_cells, self.n_input)
            noise = draws.normal(shape, None, "normal", dtype)
        result = {}  # filled part by part: a list of parts concatenated held every cell twice

        def on_host(part: dict) -> dict:  # a gathered part: its cells drawn, written in place
            cells = slice(on_host.done, on_host.done + len(part["z"]))
            on_host.done = cells.stop
            if noise is None:
                x = draws.sample(self.observation, part).to(dtype=dtype)
            else:  # the draw of CellDraws.sample, with this part of the noise
                x = part["out"] + scale * noise[cells]
            expected = part["expected"] if "expected" in part else part["mu"]  # an NB's: mu
            for key, value in {"z": part["z"], "x": x, "expected": expected}.items():
                if key not in result:
                    result[key] = value.new_empty((n_cells, *value.shape[1:]))
                result[key][cells] = value
            return {}

        on_host.done = 0
        # Kept on the device and brought to the host together: a .cpu() of each decoded
        # part's parameters made the host wait for a GPU once per part.
        gathered = Gathered(on_host)
        step = n_cells if batch_size is None else batch_size
        for start in range(0, n_cells, max(step, 1)):
            cells = slice(start, start + step)
            covs = None if cat_covs is None else cat_covs[cells]
            prior = self.prior_distribution(w[cells], covs)
            z = _from_noise(prior, eps[cells].unsqueeze(-2))
            z = z[torch.arange(z.shape[0], device=device), y[cells]]
            params = self.decode(z, covs, None if library is None else library[cells])
            if noise is not None and scale is None:  # one scale per gene, read once
                scale = params["log_scale"].cpu().exp()
            expected = self.observation.expected(params)
            drawn_from = _drawn_from(params, self.observation.name)
            if expected is drawn_from.get("mu"):  # an NB's mean: gathered once
                expected = None
            gathered.add(z=z, expected=expected, **drawn_from)
        gathered.result()
        return {"y": y_host, "w": w_host, **result}

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
        ``expected`` and, for counts, what this module's ``translated_counts`` draws them
        from (with ``residual``, ``to_round``: x + delta; without, the decoder's ``mu``,
        ``theta`` as ``mu``'s shape and, for a ZINB, ``zi_logits``)."""
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
            out = count_parameters(params, self.observation.name)
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


def count_parameters(params, likelihood: str) -> dict:
    """What :meth:`CellDraws.sample` draws a count ``likelihood``'s (a name) cells from, out
    of the decoder's ``params`` (a dict, or scvi-tools' count distribution, ``px``), cells
    first so that they can be gathered and split by cells: ``mu``, ``theta`` expanded to
    ``mu``'s shape (a dispersion per gene) and, for a ZINB only, ``zi_logits``."""
    read = params.get if isinstance(params, dict) else lambda key: getattr(params, key)
    mu = read("mu")
    out = {"mu": mu, "theta": read("theta").expand_as(mu)}
    if likelihood == "zinb":
        out["zi_logits"] = read("zi_logits")
    return out


def _drawn_from(params: dict, likelihood: str) -> dict:
    """The decoder's ``params`` that :meth:`CellDraws.sample` draws a part's cells from for
    ``likelihood`` (a name), cells first (a normal's scale per gene is read once, not
    gathered)."""
    return count_parameters(params, likelihood) if "mu" in params else {"out": params["out"]}


def _from_noise(prior, eps: torch.Tensor) -> torch.Tensor:
    """Draws of a mixture prior (:class:`~deltavae.nn._blocks.CorrelatedNormal`, or an
    independent Normal) from standard normal noise ``eps``."""
    if isinstance(prior, CorrelatedNormal):
        return prior.from_noise(eps)
    return prior.mean + prior.stddev * eps
