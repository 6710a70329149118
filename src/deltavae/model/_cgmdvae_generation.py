"""CGMDVAE's generated and translated cells as AnnData; the module draws them
(:meth:`deltavae.module.CGMDVAEModule.generate`, :meth:`~deltavae.module.CGMDVAEModule.translate`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._checks import layer_matrix, short_repr
from .._renamed import foreign_keywords
from ..distributions._draws import CellDraws
from ..train._divergence import TrainingDivergedError
from ._condition_counts import (
    cells_counted,
    not_test_positions,
    record_condition_counts,
    warn_already_target,
    warn_untrained_combinations,
)
from ._condition_types import model_column, typed_codes
from ._fit_records import digest_once, keep
from ._fit_records import library as pooled_library
from ._label_colours import sampled_colours
from ._label_conditions import record_label_conditions, warn_unseen_label_conditions
from ._label_order import kept_categories
from ._labels import labels_of
from ._latent_shift import data_floor
from ._library_quantiles import record_pooled_quantiles
from ._library_stats import cell_library_stats, log_libraries, record_library_stats
from ._matrices import has_negatives
from ._modes import evaluating
from ._prediction_frame import checked_response_weight, predicted_cells, target_record
from ._reference_record import divergence_in_error
from ._sample_draws import cluster_asked, draw_cells, record_cluster_conditions
from ._sample_record import checked_batch_size, sample_names, sample_record, sampled_labels
from ._scvi_glue import seeded
from ._typicality import record_typicality
from ._unmeasured import warn_unmeasured
from ._validation import refuse_numeric_names

_CAT = REGISTRY_KEYS.CAT_COVS_KEY


class GenerationMixin:
    """``sample`` and ``translate`` of :class:`deltavae.model.CGMDVAE`."""

    @foreign_keywords(random_state="seed", n_samples="n_cells: new cells drawn from the prior")
    @torch.inference_mode()
    def sample(
        self,
        n_cells: int = 100,
        cluster: int | str | None = None,
        condition=None,
        seed: int | None = None,
        batch_size: int | None = None,
        *,
        label=None,
    ) -> AnnData:
        """Generate cells from the model: w, z and x ancestrally, for clusters and conditions
        named or drawn together from the training cells'.

        Parameters
        ----------
        n_cells
            Number of cells.
        cluster
            Cluster index or name for every cell (where the labels are integers, an integer
            is a label); ``None`` draws it. A label sampled under conditions none of its
            labelled training cells carried is warned about (extrapolated cells).
        condition
            Value of the condition (or a dict over several condition keys), as
            :meth:`translate`'s ``target_condition``. A key left out of the dict (or
            ``None``) is drawn. What is not named (cluster, conditions) is drawn together
            from the training cells (``cluster_conditions_``: each training cell's label,
            or for an unlabelled cell its most probable cluster, with its conditions) that
            carry what was named, at their frequencies: every cell has a cluster and
            conditions that trained together (no cell type drawn under a condition it was
            held out of), and a cluster and conditions named that no training cell carried
            together, with conditions to draw, are refused naming those that did. Name
            every part to draw cells where none trained (the model extrapolates, with a
            warning). A model saved before ``cluster_conditions_`` was kept draws the
            cluster from p(y | d) p(d) and the conditions from their own frequencies. For
            count likelihoods each cell's library size is drawn from the observed library
            sizes (their percentiles, interpolated) of the cells (outside the test split) of
            its cluster and conditions (cell types differ in depth, and in the skew of their
            depths; scvi-tools' library prior is per batch), else of its conditions; from a
            log-normal of the group's moments where it had fewer than 10 cells, from the
            observed library sizes of all those cells where it had none.
        seed
            Random seed for reproducible samples: the same seed gives the same cells on a GPU
            as on the CPU (the draws are made on the CPU), and its first cells are the same
            whatever ``n_cells`` (``sample(100, seed=0)`` is the first 100 cells of
            ``sample(200, seed=0)``, names included); ``None`` seeds them from torch's
            global generator.
        batch_size
            Cells decoded at a time (``None``: scvi-tools' ``settings.batch_size``), to bound
            the memory of many cells; the same seed gives the same cells whatever it is.
        label
            A label of the labels column (a cell type) for every cell, as scvi-tools and
            scGen name cell types: ``sample(label="B cells")`` is ``sample(cluster="B
            cells")``, refusing a novel cluster or a model without labels. Not with
            ``cluster``.

        Returns
        -------
        AnnData with samples in ``X`` (whole counts for count likelihoods, also in
        ``layers["counts"]``: a copy, not the same array, since scanpy's ``normalize_total``,
        ``log1p`` and ``scale`` rewrite a dense ``X`` in place and would have rewritten the
        counts), their expectation in ``layers["expected"]``. For ``likelihood="zinb"`` the
        cells' totals come under their drawn library sizes by the share of counts the dropout
        zeroes, as scvi-tools' SCVI's draws do (``posterior_predictive_sample``'s notes: 6-11%
        under the real cells' after 30 epochs of 500 Kang cells x 200 genes, 2-4% after 100);
        ``likelihood="nb"`` draws the real totals. :meth:`translate` and
        :meth:`predict_perturbation` put the expectation in ``X`` and, for count likelihoods, whole
        counts in ``layers["counts"]``: sampled and translated cells alike are set up with
        ``setup_anndata(cells, layer="counts")`` (or normalized from that layer) as the training
        cells were. Also ``obs["cluster"]`` (``obs["cgmdvae_cluster"]`` where a condition or the
        labels column is named ``"cluster"``) plus one column per condition, typed like the training
        AnnData's, and for a model with labels its labels column: each cell's cluster's label, the
        unlabelled mark (``"Unknown"``) for a novel cluster's cells. Each categorical column holds
        the categories drawn alone, in the model's order (and ordered if the training column is),
        so that scanpy groups the cells by any of them (``rank_genes_groups`` refuses a category
        without cells, and legends list it); ``anndata.concat`` with the real cells joins their
        categories. A labels or condition column whose training column is ordered (stages,
        doses) keeps that column's categories whole instead (the labels column the training
        AnnData's dtype where it holds every label drawn; else the labels in the model's order,
        the mark last; the cluster column, ordered where the clusters are those labels, every
        label, as :meth:`write_to_adata` and :meth:`predict_labels` keep them), since
        ``anndata.concat`` makes an ordered column whose categories differ ``object``, where
        ``<`` and sorting follow the names, not the order; ``.cat.remove_unused_categories()``
        drops the empty ones (:meth:`translate` and
        :meth:`predict_perturbation` keep the model's categories, as the cells they move came
        with them). The cells are named
        ``sample_<token>_<i>``, where ``<token>`` is a hash of ``uns["sample"]`` (but ``n_cells``),
        of the seed and of the model's parameters: the same cells (the same seed, of the same
        model, on any device) have the same names, and the cells of separate calls names of
        their own in ``anndata.concat``. For a normal likelihood on
        data without negative values (log-normalized), ``X`` and ``layers["expected"]`` are clipped
        at 0, as :meth:`translate` does. ``uns["sample"]`` records what was asked: ``n_cells``,
        ``cluster`` and each condition (the name given, or ``"drawn"``), ``seed`` (where given) and
        what ``X`` holds. This draws new cells from the generative model; scvi-tools'
        ``posterior_predictive_sample`` redraws the given cells' data instead.

        Examples
        --------
        >>> cells = g.sample(100, cluster=3, condition="stim")  # doctest: +SKIP

        A model set up with ``labels_key="cell_type"`` draws the cells of a type by its label:

        >>> b_cells = labelled.sample(500, label="B cells", seed=0)  # doctest: +SKIP
        """
        if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells < 1:
            whole = isinstance(n_cells, float) and n_cells.is_integer() and n_cells >= 1
            hint = f"; pass n_cells={int(n_cells)}" if whole else ""  # 1e4 for 10000
            raise ValueError(
                f"n_cells must be a positive integer, got {short_repr(n_cells)}{hint}."
            )
        batch_size = checked_batch_size(batch_size)
        module = self.module
        with seeded(module, seed), evaluating(module):
            row = self._condition_codes(condition, 1, mark_drawn=True)  # -2: to draw
            y_given = cluster_asked(self, cluster, label)
            self._check_if_trained(warn=False)
            cells = CellDraws(seed)  # one uniform a cell: the first cells whatever n_cells
            row = None if row is None else row.cpu().numpy()
            y, codes = draw_cells(self, n_cells, y_given, row, cells)
            # Read on the host from the codes drawn there: each .cpu() of cats was a wait.
            host_cats = None if codes is None else torch.as_tensor(codes)
            cats = None if codes is None else host_cats.to(module.device)
            stats = self._library_log_stats()
            if stats is not None:  # the observed ones of each cell's cluster and conditions
                stats = cell_library_stats(self, host_cats, stats, y)
            draws = module.generate(n_cells, cats, y, stats, cells, batch_size)
        if cats is not None:  # a dict naming every key: a combination that may not have trained
            warn_untrained_combinations(self, host_cats.numpy(), "sample")
        if row is None or not (row == -2).any():  # drawn: of the training cells' combinations
            warn_unseen_label_conditions(self, y_given, host_cats)  # a cell type held out of them
        y, x, expected = draws["y"], draws["x"], draws["expected"]
        clipped = False
        if not module.observation.is_count:  # as translate: not below the data's floor of 0
            layer = self.registry_["setup_args"].get("layer")
            if not has_negatives(layer_matrix(self.adata, layer)):
                x, expected = x.clamp(min=0.0), expected.clamp(min=0.0)
                clipped = module.likelihood == "normal"
        record = sample_record(self, n_cells, y_given, condition, seed, clipped)
        # Not copied (the draws are float32): many cells' X and expectation held twice.
        x = x.cpu().numpy().astype(np.float32, copy=False)
        obs = pd.DataFrame(index=sample_names(record, cells.seed, module, len(x)))
        # Only the clusters, labels and conditions drawn, as write_to_adata keeps its
        # clusters: scanpy's rank_genes_groups refuses a category without cells; an
        # ordered column's whole scale (_label_order.kept_categories).
        clusters = labels_of(self, y.cpu().numpy())  # integer labels as integers
        labels_key = self.registry_["setup_args"].get("labels_key")
        taken = [*self.condition_keys, labels_key]
        name = "cgmdvae_cluster" if "cluster" in taken else "cluster"
        obs[name] = kept_categories(clusters)  # not overwritten by a condition below
        labels = sampled_labels(self, y.cpu().numpy())
        if labels is not None:  # to concatenate with real cells: their labels column
            obs[labels_key] = labels
        if cats is not None:
            for j, key in enumerate(self.condition_keys):
                column, known = model_column(self, key)
                values = typed_codes(column, known, host_cats[:, j].numpy())
                drawn = isinstance(values, pd.Categorical)  # the model's order (and flag) kept
                # An ordered column keeps its scale whole: anndata.concat with the real
                # cells gave object where the categories differed.
                obs[key] = kept_categories(values) if drawn else values
        # The genes with their metadata, as translate keeps them.
        out = AnnData(X=x, obs=obs, var=self.adata.var.copy())
        out.layers["expected"] = expected.cpu().numpy().astype(np.float32, copy=False)
        if module.observation.is_count:  # where translate keeps them: set up alike
            out.layers["counts"] = x.copy()
        out.uns.update(sampled_colours(self, out, name))  # the training data's, by name
        out.uns["sample"] = record
        return out

    def _library_log_stats(self, recorded: bool = True) -> tuple[float, float] | None:
        """Mean and sd of the log library sizes of the AnnData the model trained on, its
        training and validation cells (a library size is observed, not fitted; not a test
        split's, held out on purpose, nor weighed as other cells), counts only:
        as ``train`` recorded them in ``library_log_stats_`` (saved with the model, so that a
        model loaded onto other cells draws the libraries it trained on; joined over the
        AnnData it trained on, as ``condition_counts_`` are: a query model's over its
        reference's cells and its query's), else (a model saved before they were kept, or
        ``recorded=False``) those of the model's AnnData."""
        if not self.module.observation.is_count:
            return None
        if recorded and getattr(self, "library_log_stats_", None) is not None:
            mean, sd = self.library_log_stats_
            return float(mean), float(sd)
        log_lib = log_libraries(self)[not_test_positions(self)]
        return float(log_lib.mean()), float(log_lib.std())

    @contextlib.contextmanager
    def _recording_training_cells(self):
        """Around a fit: :meth:`_record_training_cells` once it ends, and also once it failed
        with parameters it changed (a diverged fit kept at its last finite step, an
        interrupted one with an epoch done): the counts and library sizes ``sample`` and
        ``translate`` read were missing, or an earlier fit's, while ``trained_categories_``
        (recorded at the start) were this one's."""
        split = getattr(self, "train_indices", None)
        try:
            yield
        except TrainingDivergedError as err:
            if err.restored_at is not None:  # None: the parameters it started with
                with divergence_in_error(self):  # the error says it, once
                    self._record_training_cells()
            raise
        except KeyboardInterrupt:
            if self.is_trained_ and getattr(self, "train_indices", None) is not split:
                self._record_training_cells()
            raise
        self._record_training_cells()  # a model loaded onto other cells still knows them

    def _record_training_cells(self) -> None:
        """After a fit: the conditions of its training cells (:func:`record_condition_counts`)
        and the library sizes sample draws from, kept with the model; nothing where nothing
        trained (no split: a query model with nothing to learn keeps its reference's)."""
        if getattr(self, "train_indices", None) is None:
            return
        with digest_once(self):  # the cells' names hashed once for every record
            self._record_fit()

    def _record_fit(self) -> None:
        """:meth:`_record_training_cells`' records."""
        last = getattr(self, "_counted_before", None)
        if last is None or last[0] != self.adata_manager.adata_uuid:  # cells new to the counts
            self._library_before = (getattr(self, "library_log_stats_", None), cells_counted(self))
        record_condition_counts(self)
        # predict_labels' typicality: its scores' ranks, and their map from the validation cells
        record_typicality(self, not_test_positions(self), getattr(self, "validation_indices", None))
        every_lib = None
        if self.module.observation.is_count:  # one read of the counts for every record
            every_lib = log_libraries(self)
            rows = not_test_positions(self)  # the cells counted (cells_read), not a test split
            log_lib = every_lib[rows]
            stats = float(log_lib.mean()), float(log_lib.std())
            earlier, n_earlier = getattr(self, "_library_before", (None, 0))
            earlier = (n_earlier, *earlier) if earlier is not None and n_earlier > 0 else None
            # joined to those of every other AnnData's last fit (and of a model's saved
            # before it kept them per AnnData: ``earlier``)
            records = keep(self, "library_log_stats_", (len(rows), *stats), earlier)
            self.library_log_stats_ = pooled_library(records)
            record_pooled_quantiles(self, log_lib, sum(r[0] for r in records.values()))
            record_library_stats(self, log_lib, rows)
        record_label_conditions(self)
        # The clusters and conditions sample draws together, and the depth of each.
        record_cluster_conditions(self, every_lib)

    @foreign_keywords(random_state="seed")
    @torch.inference_mode()
    def translate(
        self,
        adata: AnnData | None,
        target_condition,
        batch_size: int | None = None,
        residual: bool | None = None,
        response_weight: float | None = None,
        seed: int | None = None,
    ) -> AnnData:
        """Counterfactual expression of the given cells under another condition.

        Each cell is encoded with its own condition (posterior mean of z) and decoded with the
        target condition, at its own library size for count data. For count models the
        default averages this with the responses observed in the training cells of the most
        similar groups (``response_weight``).

        Parameters
        ----------
        adata
            Cells to translate, set up like the training data (``None``: the model's
            AnnData). Cells all zeros in the model's genes, each translated from no data,
            are counted in a warning.
        target_condition
            Value of the condition to translate to; with several condition keys a dict over
            them, where a key left out (or ``None``) keeps each cell's own value, e.g.
            ``{"condition": "stim"}`` keeps every cell's donor. With several condition keys,
            cells moved to a combination of their values that no training cell carried (a
            donor, or a cell type given as a condition key, never seen under the target) are
            predicted with a warning naming it: the model extrapolates there. A label
            (``labels_key``) never seen under the target, such as a cell type held out of it
            (scGen's protocol), is not warned about: that is the prediction translate is for,
            and it reads no label of the cells it moves (z is decoded under the target; the
            observed responses averaged in are those of the groups most similar to each cell,
            ``response_weight``).
            A query model warns too where it moves cells into or out of a category its query
            added: :meth:`load_query_data` learned it mostly in z, and little of its change is
            predicted (not where the prediction is the query's observed responses alone).
        batch_size
            Cells per minibatch.
        residual
            Add the model's change, decoded under the target minus under the cell's own
            condition, to the cell's observed data instead of returning the decoded target:
            what the model does not reconstruct of a cell is kept as observed. For counts
            ``layers["counts"]`` is the cell's counts plus the change, rounded stochastically
            to whole counts (:func:`deltavae.distributions.round_counts`). For
            ``likelihood="normal"`` the prediction (residual or decoded) is clipped at 0 (the
            floor of log-normalized data) unless the training data or the cells hold negative
            values (arcsinh, CLR, scaled data: nothing clipped). ``None`` (default):
            ``True`` for count likelihoods, whose decoded profiles of single cells are
            noisier than the cells themselves (benchmarks/README.md, Numbers behind the
            defaults, D8), ``False`` otherwise. Not for ``likelihood="bernoulli"``. Genes a
            query lacks (mapped as zeros) get the change added to zero: a warning names them.
        response_weight
            Weight, in [0, 1], of the observed responses in the prediction: the model's
            residual translation and ``predict_perturbation(method="nearest_response")`` (the
            change between the conditions observed in the training groups, labels or
            clusters, most similar to each cell) are averaged with this weight on the latter,
            on log-normalized counts for count models and on the data for
            ``likelihood="normal"``. The two err differently: averaged half and half, the
            change predicted on the top-100 response genes of Kang IFN-beta cell types held
            out of training matched the true change better than the model alone on all
            seven types and than the observed responses alone on six (one seed, and three
            seeds with the counts rounded; benchmarks/README.md, Numbers behind the
            defaults, D10 and D13). ``None``
            (default): 0.5 for count likelihoods with one condition covariate when ``residual`` is
            on, 0 otherwise; 1 (the observed responses alone) for a query model's cells all moved
            between a category its query added and one more, its query holding cells of one label
            under both: there the model's change was a small part of the real one and halved the
            responses' (benchmarks/README.md, "Translating into a condition that only a query
            brought"). Needs ``residual=True`` for counts and a group of training cells seen under
            both conditions (a query model's training cells are its query's: a response needs query
            cells of both); ``uns["response_weight"]`` of the result records the weight used (the
            default falls to 0, with a warning, where no group is: with labels, a label's
            response is read from the cells given it, so labels of one condition only see none;
            predicted labels go in as ``predict_perturbation``'s ``balance_key``). The
            responses are read from the model's AnnData: one subset in place since training
            (``sc.pp.filter_cells``) gives those of the cells left, with a warning; a group
            seen in 5 training cells or fewer under either condition gives a noisy one, and
            the cells taking most of their change from it are counted in a warning.
        seed
            Seed of the random rounding (or draw) of ``layers["counts"]``: the same seed gives
            the same counts, whatever the ``batch_size`` and on a GPU as on the CPU (the
            draws are made on the CPU, cell after cell); ``None`` seeds them from torch's
            global generator.

        Returns
        -------
        AnnData with the predicted expression under the target condition in ``X`` (the expectation;
        for count likelihoods ``layers["counts"]`` holds whole counts, to be normalized exactly like
        real cells: the expectation rounded stochastically with ``residual``, one draw of the
        posterior predictive without, whose totals, for ``likelihood="zinb"``, fall under the cells'
        own by the dropout's share, as :meth:`sample`'s; also in the layer a model set up on one
        reads its counts from, with a warning where the cells' ``X`` is not counts, as
        :meth:`predict_perturbation` says), named as the given cells (``ctrl[pred.obs_names]``
        pairs each prediction with its cell; ``anndata.concat`` with them needs
        ``index_unique``, as :meth:`predict_perturbation` says), and the cells' obs with each
        condition column moved set to the target and the cells' own values beside it,
        ``obs["<key>_source"]``
        (e.g. ``"condition_source"``: for cells of several conditions, where each came from; a
        column of that name the cells hold with other values is replaced, with a warning), both
        over the model's categories where the column is categorical (empty ones kept, as the
        training data's order and default colours; ``.cat.remove_unused_categories()`` drops them);
        the cells' obsm (``X_umap``: the coordinates of the given cells, not of the predicted state,
        to plot the prediction where each cell was); ``uns["prediction"]`` records the method, the
        target (a dict of strings where given as one) and, in words, what ``X`` holds: with
        ``residual``, each cell's observed data plus the decoded change (averaged with the observed
        responses where ``response_weight`` > 0: for counts on log-normalized counts, taken back to
        each cell's library: an average of logs, so totals fall below it); without, the decoded mean
        (for ``likelihood="zinb"`` the zero-inflated mean, dropout included). :meth:`sample`'s cells
        hold the whole counts in ``X`` (and in ``layers["counts"]``) and the expectation in
        ``layers["expected"]``: both are set up with ``setup_anndata(cells, layer="counts")``.

        Examples
        --------
        >>> stim_pred = g.translate(adata[adata.obs.condition == "ctrl"], "stim")  # doctest: +SKIP
        """
        if not self.condition_keys:
            raise ValueError("The model has no condition covariate to translate.")
        if residual is None:
            residual = self.module.observation.is_count
        elif not isinstance(residual, bool | np.bool_):  # "False" read as a truth value: True
            raise ValueError(f"residual must be True, False or None, got {residual!r}.")
        if residual and self.module.likelihood == "bernoulli":
            raise ValueError(
                "residual=True adds a change to the observed data and needs counts or real "
                "values; this model's likelihood is 'bernoulli'."
            )
        strict = response_weight is not None
        response_weight = checked_response_weight(self, response_weight, residual)
        target = self._condition_codes(target_condition, 1, keep_own=True)[0]
        adata = self._resolve_adata(adata)  # None: the model's AnnData, as other read-outs
        refuse_numeric_names(adata, "adata")  # its subsets: anndata's obscure TypeError
        caller_obs = adata.obs  # the labels and columns as given, before validation
        given, adata = adata, self._validate_anndata(adata)
        self._check_if_trained(warn=False)
        if residual:  # genes a query lacks: its zeros plus the change
            what = "residual=True adds the change to each cell's observed data"
            warn_unmeasured(self, given, what, "residual=False")
        module = self.module  # in eval mode while its loader is read (see _OnDevice)
        # Predictions stay at or above 0 for data that are never negative (counts,
        # log-normalized), not for real values such as arcsinh cytometry or CLR protein.
        floor = 0.0 if module.observation.is_count else data_floor(self, adata)
        from ..module._cgmdvae_generation import translated_counts
        from ._empty_cells import warn_empty_cells
        from ._gathered import Gathered
        from ._latent_shift import describe_prediction
        from ._observed_responses import with_observed_responses
        from ._prediction_layers import match_counts_layer
        from ._query_conditions import query_moves, query_response_weight, warn_query_condition_move

        targets = dict(zip(self.condition_keys, target.tolist(), strict=True))
        with seeded(module, seed):
            draws = CellDraws(seed)  # on the CPU, cell after cell: any device and batch_size

            def drawn(part: dict) -> dict:  # on the host: the counts, their sources dropped
                counts = translated_counts(part, module.observation, draws)
                kept = {key: part[key] for key in ("moved", "own", "expected", "empty")}
                return kept if counts is None else {**kept, "counts": counts}

            gathered = Gathered(drawn)  # brought to the host together, not minibatch by one
            for tensors in self._make_data_loader(adata, batch_size=batch_size):
                cats = tensors[_CAT].to(target.device)
                moved = self._moved_codes(target, cats)
                x = tensors[REGISTRY_KEYS.X_KEY]
                parts = module.translation(x, cats, moved, residual, floor=floor)
                gathered.add(moved=moved, own=cats, empty=~x.ne(0).any(-1), **parts)
            got = gathered.result()
            warn_empty_cells(self, got["empty"].numpy(), adata.obs_names, "translate", given)
            own, moved = got["own"].numpy(), got["moved"].numpy()
            warn_untrained_combinations(self, moved, "translate")
            if torch.equal(got["moved"], got["own"]):  # returned as a prediction
                warn_already_target(self, target_condition)
            counts = got.get("counts")
            cells = {
                "expected": got["expected"].numpy(),
                "counts": None if counts is None else counts.numpy(),
            }
            moves = query_moves(self, own, moved)  # a query's: into or out of its new category
            if not strict:  # a query's own responses, where its new category's model is weak
                response_weight = query_response_weight(moves, response_weight)
            if response_weight > 0:  # one condition covariate
                key = self.condition_keys[0]
                value = self._cat_state().mappings[key][targets[key]]
                cells, response_weight = with_observed_responses(
                    self, adata, cells, value, response_weight, batch_size, strict, draws
                )
            # Said once the prediction is made (a strict response_weight is refused first).
            warn_query_condition_move(moves, response_weight=response_weight)
        mappings = self._cat_state().mappings
        moved = {key: mappings[key][code] for key, code in targets.items() if code >= 0}
        out = predicted_cells(
            self, caller_obs, given.obsm, cells["expected"], adata.var, moved, given.uns
        )
        if cells["counts"] is not None:
            out.layers["counts"] = cells["counts"].astype(np.float32)
            match_counts_layer(self, given, out)  # the layer the model reads counts from
        out.uns["response_weight"] = float(response_weight)
        record = target_record(target_condition, moved)
        describe_prediction(out, self, "translate", record, residual, blended=response_weight > 0)
        return out
