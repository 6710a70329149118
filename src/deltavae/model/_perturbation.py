"""Perturbation prediction: expression of given cells under another condition.

Three methods (:meth:`PerturbationMixin.predict_perturbation`): ``translate`` (a conditional
model decodes each cell under the target condition, :meth:`deltavae.model.CGMDVAE.translate`),
``latent_shift`` (scGen's latent arithmetic, :func:`latent_shift`) and ``nearest_response``
(observed responses of the most similar training groups, ``nearest_response``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scipy.special import softmax

from .._checks import short_repr
from .._close_names import did_you_mean
from .._renamed import foreign_keywords
from ..distributions._draws import CellDraws
from ._cgmdvae_mixins import ClustersMixin
from ._condition_counts import warn_source_is_target
from ._contrast import Contrast
from ._empty_cells import warn_empty_cells
from ._fit_cells import warn_if_subset_since_fit
from ._label_record import warn_predicted_groups
from ._label_responses import UnlabelledResponseError, labels_cause, predicted_labels_route
from ._labels import NoResponseError, groups_under_both, label_groups
from ._latent_shift import balance_groups, describe_prediction, latent_shift
from ._prediction_frame import predicted_cells, target_record
from ._prediction_layers import match_counts_layer
from ._registered import category_mappings
from ._response_data import (
    additive_data,
    additive_data_and_library,
    memoised,
    on_count_scale,
    similarity_coordinates,
    warn_far_above,
)
from ._scvi_glue import seeded
from ._thin_responses import warn_thin_responses
from ._unmeasured import warn_unmeasured
from ._validation import refuse_numeric_names


class PerturbationMixin:
    """``predict_perturbation`` for the models that support it (ZINBVAE, CGMDVAE)."""

    #: The ``method`` values of :meth:`predict_perturbation` this model supports; a conditional
    #: model that can decode a cell under another condition adds ``"translate"``.
    perturbation_methods: tuple[str, ...] = ("latent_shift", "nearest_response")

    @foreign_keywords(random_state="seed")
    def predict_perturbation(
        self,
        adata: AnnData | None,
        target_condition: str,
        method: Literal["translate", "latent_shift", "nearest_response"] | None = None,
        condition_key: str | None = None,
        balance_key: str | None = None,
        batch_size: int | None = None,
        residual: bool | None = None,
        similarity: Literal["expression", "latent"] = "expression",
        response_weight: float | None = None,
        seed: int | None = None,
    ) -> AnnData:
        """Expression of the given cells under another condition.

        Parameters
        ----------
        adata
            Cells of one source condition, set up like the training data (``None``: the
            model's AnnData). Cells all zeros in the model's genes, each predicted from no
            data (all alike), are counted in a warning.
        target_condition
            The condition to predict; for a model of several condition keys name its key,
            ``{"condition": "stim"}`` (or, not for ``translate``, pass ``condition_key``).
        method
            Default ``"translate"`` for a conditional model, ``"latent_shift"`` otherwise.
            ``"translate"``: encode each cell and decode it under the target condition (a
            conditional model, see :meth:`deltavae.model.CGMDVAE.translate`).
            For count models the default translation is averaged with the observed responses
            of the most similar training groups (``response_weight``).
            ``"latent_shift"``: scGen's latent arithmetic, z + mean(z | target) - mean(z |
            source) over the training cells, decoded with each cell's own library (a latent
            library at its posterior mean) and covariates, under the target condition where
            the model takes it as a covariate. A mean read from fewer than 3 training cells
            under either condition (of a ``balance_key`` group) is warned of: the shift is
            those cells'.
            ``"nearest_response"``: each cell's data plus the change observed between the
            conditions in the training groups (``balance_key``) most similar to it, weighted
            by each group's posterior under isotropic Gaussians on 50 principal components of
            the data (``similarity="expression"``) or on z (``"latent"``); on log-normalized
            data for count models. For a type never seen under the target, the most accurate
            over all genes on Kang IFN-beta (benchmarks/README.md, D7); the count models'
            ``translate``, averaged with it, predicts the response genes' change better (D10).
            A group seen in 5 training cells or fewer under either condition gives a response
            that is mostly noise: cells taking most of their change from one are counted in a
            warning (translate's average too).
            For count models the sum is taken back to counts at each cell's library size, as
            the other methods give theirs (the log-normalized values: ``layers["log_normalized"]``).
            A change added on log-normalized counts multiplies the cell's counts by its
            exponential, with no ceiling: a change measured mostly on cells without a gene
            (ISG15 in Kang's control cells) multiplies the counts of a cell that has it (3,232
            ISG15 counts predicted where no cell of the data has over 383). Cells predicted
            more than 20 times a gene's largest value (per 10,000 counts) are counted in a
            warning. Nor is the cell's total kept: the sum's values per 10,000 counts no
            longer add up to 10,000, so a cell's predicted total is its library times their
            sum / 10,000, above its library where the responses raise more than they lower
            (Kang IFN-beta, muscat's 750 control cells by cell type: median 1.005 times the
            cell's own total, 95th percentile 1.28, at most 4.1, a cell's 10 ISG15 counts
            predicted as 2,897). ``sc.pp.normalize_total`` of ``X`` takes that back out,
            scaling every gene of such a cell down; ``layers["log_normalized"]`` holds the
            values as predicted.
        condition_key
            obs column of the condition (not for ``translate``, which moves cells on the
            model's own condition covariates); default the model's only one.
        balance_key
            obs column of groups of the training cells, e.g. cell type (not for ``translate``;
            ``adata`` need not have it; a cell with a missing value, or marked unlabelled in
            the model's labels column, is in no group).
            ``latent_shift``: average the condition means over the groups, each weighted
            equally, as scGen balances cell types, over groups seen under both conditions.
            ``nearest_response``: the groups whose responses are transferred (default the
            model's labels or clusters; a label's response from the cells given it, see
            ``nearest_response``; a model trained with labels whose AnnData holds no
            labelled cell, loaded without its labels column, groups by its predicted clusters
            and says so once).
        batch_size
            Cells per minibatch.
        residual
            ``translate``: add the decoded change to each cell's observed data; ``None``
            (default): for count likelihoods only (see :meth:`deltavae.model.CGMDVAE.translate`).
        similarity
            ``nearest_response``: ``"expression"`` (principal components of the data) or
            ``"latent"`` (z), the space in which the most similar groups are found.
        response_weight
            ``translate``: the weight on the observed responses (see ``CGMDVAE.translate``).
        seed
            Seed of the random whole counts (``layers["counts"]``); the same seed gives the
            same counts, whatever the ``batch_size`` and on a GPU as on the CPU (``None``:
            seeded from torch's global generator). ``nearest_response``'s ``X`` draws nothing
            (its principal components have a fixed seed): the same whatever the seed, which
            only its whole counts follow, so one call can loop over the methods.

        Returns
        -------
        AnnData of the given cells and the genes, named as the given cells (as scGen's
        predictions: ``ctrl[pred.obs_names]`` pairs each prediction with its cell; concatenated
        with those cells, name each part's apart with ``index_unique``, as below: without it
        anndata warns of repeated names); their obs with the condition set to
        the target and each cell's own, the source, in ``obs["<key>_source"]`` (e.g.
        ``"condition_source"``; scGen leaves the source in the condition column), both over the
        model's categories where the column is categorical (empty ones kept: the order and default
        colours of the training data's; ``.cat.remove_unused_categories()`` drops them); their obsm
        (``X_umap``, ``X_pca``: the coordinates of the source cells, for plotting the prediction
        where each cell was, ``sc.pl.umap(pred)``, not those of the predicted state). ``translate``
        and ``latent_shift``: the expectation in ``X`` and, for count likelihoods, whole counts in
        ``layers["counts"]`` (normalize them like the real cells before scoring, e.g. with
        :func:`deltavae.metrics.log_normalize`; :meth:`CGMDVAE.sample
        <deltavae.model.CGMDVAE.sample>`'s cells hold whole counts in ``X`` and
        ``layers["counts"]``, the expectation in ``layers["expected"]``). ``X`` of
        ``translate``'s residual default (counts) is each cell's observed counts plus the model's
        change, averaged with the observed responses; a decoded ``X`` is the model's mean at each
        cell's library (a latent library's posterior mean), for ZINB the zero-inflated mean, dropout
        included (totals below the library size). ``nearest_response``: for count models too,
        expected counts in ``X`` (each cell's log-normalized counts plus the responses, taken
        back at its library size: ``expm1(log) * library / 1e4``, a total that is not the
        library, see ``method``), whole counts in
        ``layers["counts"]`` (``X`` rounded at random) and the log-normalized prediction, the
        scale the responses are transferred on, in ``layers["log_normalized"]``; for other
        likelihoods the data's own scale in ``X``. So every method's ``X`` of a count model is on
        the scale of the cells' counts: ``anndata.concat({"ctrl": ctrl, "stim": stim, "pred":
        pred}, label="group", index_unique="-")`` followed by
        ``sc.pp.normalize_total`` and ``sc.pp.log1p`` normalizes real and predicted cells alike
        (``join="inner"``, the default, keeps no layer the real cells lack). A model set up on a
        layer of counts (``layer="raw"``) gets the whole counts in that layer too, so that the
        concatenation keeps it for all cells; where the given cells' ``X`` is not counts
        (log-normalized, scanpy's layout) a warning says that ``X`` would mix scales. For tests
        between cells, such as ``sc.tl.rank_genes_groups``, set ``pred.X =
        pred.layers["counts"].copy()`` first: expected counts are rarely 0, so genes mostly 0
        in the real cells rank high against them for that alone. ``X`` is dense float32
        whatever the input's type.
        ``uns["prediction"]`` records the method, the target (a dict of strings where given as
        one) and, in words, what ``X`` holds. ``translate`` also records the weight it put on
        the observed responses in ``uns["response_weight"]`` (0 where none was averaged in);
        ``nearest_response`` each cell's weight on every training group whose response it
        received in ``obsm["response_weights"]`` (cells x groups, rows summing to 1), the groups
        named in ``uns["response_groups"]``.

        Examples
        --------
        >>> ctrl = adata[adata.obs.condition == "ctrl"]  # doctest: +SKIP
        >>> pred = g.predict_perturbation(ctrl, "stim", method="latent_shift")  # doctest: +SKIP
        >>> dv.metrics.mean_expression_r2(  # doctest: +SKIP
        ...     dv.metrics.log_normalize(pred.layers["counts"]), dv.metrics.log_normalize(stim.X)
        ... )
        """
        adata = self._resolve_adata(adata)  # None: the model's AnnData, as other read-outs
        refuse_numeric_names(adata, "adata")  # its subsets: anndata's obscure TypeError
        defaulted = method is None
        conditional = "translate" in self.perturbation_methods  # and has a condition to move
        can_translate = conditional and bool(category_mappings(self.registry_))
        if method is None:  # a model that cannot translate shifts z, as scGen does
            method = "translate" if can_translate else "latent_shift"
        if method == "translate" and method not in self.perturbation_methods:
            # First: the advice on translate's arguments below is for a model that translates.
            raise ValueError(
                f"method='translate' needs a conditional model such as CGMDVAE; "
                f"{type(self).__name__} has none. Use method='latent_shift' or "
                "'nearest_response'."
            )
        if similarity != "expression" and method != "nearest_response":
            raise ValueError("similarity applies to method='nearest_response' only.")
        only = {"residual": residual, "response_weight": response_weight}  # translate's
        if method == "translate":  # it moves cells on the model's own condition covariates
            only = {"balance_key": balance_key, "condition_key": condition_key}
        for name in [name for name, value in only.items() if value is not None]:
            where = "'translate'" if "key" not in name else "'latent_shift' or 'nearest_response'"
            raise ValueError(
                _only_for(
                    name,
                    where,
                    method,
                    defaulted,
                    type(self).__name__,
                    only[name],
                    target_condition,
                    can_translate,
                )
            )
        if method == "translate":
            return self.translate(
                adata,
                target_condition,
                batch_size=batch_size,
                residual=residual,
                response_weight=response_weight,
                seed=seed,
            )
        if method not in ("latent_shift", "nearest_response"):
            hint = did_you_mean(method, METHODS) if isinstance(method, str) else ""
            raise ValueError(
                f"method must be 'translate', 'latent_shift' or 'nearest_response', got "
                f"{short_repr(method)}" + (f"; {hint}" if hint else ".")
            )
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")
        self._check_if_trained(warn=False)
        read = "observed responses" if method == "nearest_response" else "condition means"
        warn_if_subset_since_fit(
            self, f"{method}'s {read} are read from", "Predict before subsetting"
        )
        contrast = Contrast.resolve(self, adata, target_condition, condition_key, balance_key)
        if contrast.source == contrast.target:
            warn_source_is_target(contrast, method)
        with seeded(self.module, seed):
            if method == "nearest_response":
                draws = CellDraws(seed)  # layers["counts"] of a count model
                out = nearest_response(self, adata, contrast, batch_size, similarity, draws=draws)
            else:
                out = latent_shift(self, adata, contrast, batch_size, CellDraws(seed))
        targets = {contrast.condition_key: contrast.target}  # a dict as given: a dict
        out.uns["prediction"]["target"] = target_record(target_condition, targets)
        match_counts_layer(self, adata, out)  # the layer the model reads counts from
        return out


def _only_for(
    name: str, where: str, method: str, defaulted: bool, model, value, target, can_translate
) -> str:
    """The refusal of argument ``name`` (given ``value``) of another method than ``method``
    (``defaulted``: the model's default), naming that method and what to pass; a model that
    cannot translate (``can_translate``) is not told to pass method='translate'."""
    if where == "'translate'" and not can_translate:
        return (
            f"{name} applies to method='translate' only, which {model} cannot do (it needs a "
            "conditional model with a condition covariate: CGMDVAE set up with condition_key); "
            f"leave {name} out for method={method!r}."
        )
    used = f"{model}'s default method is {method!r}" if defaulted else f"not to {method=}"
    advice = f"{used}. Pass method={where} to use {name}"
    if method == "translate" and name == "condition_key" and not isinstance(target, dict):
        named = short_repr({value: target})  # translate moves the model's own covariates
        advice += f", or name the key in translate's target: target_condition={named}"
    return f"{name} applies to method={where} only; {advice}."


SIMILARITIES = ("expression", "latent")
METHODS = ("translate", "latent_shift", "nearest_response")


@torch.inference_mode()
def nearest_response(
    model: PerturbationMixin,
    adata: AnnData,
    contrast: Contrast,
    batch_size: int | None = None,
    similarity: Literal["expression", "latent"] = "expression",
    memo: dict | None = None,
    draws: CellDraws | None = None,
) -> AnnData:
    """Add to each cell the observed response of the training groups most similar to it.

    For every group of the training cells (cell type, label or cluster) seen under both the
    source and the target condition, the response is the difference of its mean data under the
    two conditions. Each cell gets a weighted mean of these responses, weighted by the
    posterior probability of each group given the cell's coordinates under isotropic Gaussians
    around the groups' source-condition centres (the groups' mean variance per dimension,
    equal priors), not from the cell's own label: a cell near its group's centre gets mostly
    that group's response (one between two groups, a share of each); a cell of a group never
    seen under the target condition (a held-out cell type) gets the response of the groups it
    resembles most. The prediction is the cell's data plus
    that response, floored at the training data's minimum. The data must be additive: with
    ``likelihood="normal"`` the model's own data (e.g. log-normalized expression); with a
    count likelihood, the counts log-normalized by :func:`deltavae.metrics.log_normalize`
    (``log1p`` of counts per 10,000 over the model's genes), then taken back to counts:
    added there, a change multiplies the cell's counts by its exponential, which can take a
    cell already expressing a gene far beyond the data (see :func:`warn_far_above`), and its
    total beyond its library (the values per 10,000 counts are not scaled back to 10,000).

    Parameters
    ----------
    model
        A trained deltavae model (ZINBVAE, or CGMDVAE with a count or normal likelihood).
    adata
        Cells of one source condition, set up like the training data.
    contrast
        The conditions and, in ``groups_key``, the obs column of the training AnnData
        holding the groups (``balance_key``); if None, the model's labels (``labels_key``)
        where given and its predicted clusters elsewhere, except that unlabelled cells
        predicted to carry a label that cells are given count for no group: a cell type held
        out under the target, whose other cells are labelled, stays unseen under it.
    batch_size
        Cells per minibatch.
    similarity
        ``"expression"``: coordinates are the first 50 principal components of the training
        data (the model's layer). ``"latent"``: the model's latent z (posterior mean). On Kang
        IFN-beta with held-out cell types, expression picks the biologically closest types
        (CD8 T for CD4 T, FCGR3A+ for CD14+ monocytes) and scores higher.
    memo
        A dict shared by calls on one model's training cells (several source conditions of
        one request): the training cells' groups, data and coordinates are computed once and
        kept in it.
    draws
        The generators of a count model's whole counts
        (:class:`~deltavae.distributions._draws.CellDraws`); ``None``: no ``layers["counts"]``
        (translate, averaging the log-normalized values in, rounds its own).

    Returns
    -------
    AnnData of predicted data (for count models: expected counts, whole counts in
    ``layers["counts"]`` where ``draws`` are given, the log-normalized prediction in
    ``layers["log_normalized"]``; see :func:`on_count_scale`) with the cells' obs and obsm, the
    condition set to the target and the source in ``obs["<key>_source"]`` (as
    :meth:`PerturbationMixin.predict_perturbation` says), and in ``obsm["response_weights"]`` each
    cell's weight on every group (``uns["response_groups"]``, a numpy array, names them: of strings,
    object dtype, as it reads back from an .h5ad file).

    Examples
    --------
    >>> contrast = Contrast.resolve(g, ctrl, "stim", "condition", "cell_type")  # doctest: +SKIP
    >>> pred = nearest_response(g, ctrl, contrast)  # doctest: +SKIP
    """
    if model.module.likelihood not in ("normal", "zinb", "nb"):
        raise ValueError(
            "method='nearest_response' adds observed responses to the data and needs counts "
            "or log-normalized data (likelihood 'zinb', 'nb' or 'normal'); this model's "
            f"likelihood is {model.module.likelihood!r}."
        )
    condition_key, source, target, train_conditions, groups_key = contrast
    train = model.adata
    if groups_key is not None:
        groups, counted = memoised(
            memo, ("groups", groups_key), lambda: balance_groups(model, groups_key)
        )
    elif not isinstance(model, ClustersMixin):
        raise ValueError(
            f"{type(model).__name__} has no labels or clusters: pass balance_key, the obs "
            "column of the groups (e.g. cell type) whose responses are transferred."
        )
    else:
        warn_predicted_groups(model, train)  # labels in training, predicted clusters here
        groups, counted = memoised(
            memo, ("groups", None), lambda: label_groups(model, train, batch_size)
        )
    is_src, is_tgt = train_conditions == source, train_conditions == target
    # Cells without a group: missing balance_key values, unlabelled cells predicted to carry
    # a label that cells are given.
    is_src, is_tgt = is_src & counted, is_tgt & counted
    try:
        names = groups_under_both(groups, is_src, is_tgt, source, target, groups_key)
    except NoResponseError as err:
        if groups_key is not None or counted.all():
            raise
        cause = labels_cause(model, train, train_conditions, counted, source, target)
        raise UnlabelledResponseError(
            f"{err} Here {cause}. To use predicted labels, pass them as balance_key, an obs "
            f"column of the training AnnData: {predicted_labels_route(target)}.",
            cause,
        ) from None
    caller_obs, obsm, uns = adata.obs, adata.obsm, adata.uns  # the labels and columns as given
    what = "nearest_response adds the observed change to each cell's data"
    warn_unmeasured(model, adata, what, "method='latent_shift'")
    given, adata = adata, model._validate_anndata(adata)
    x_train = memoised(memo, "data", lambda: additive_data(model, train))
    x_query, library = additive_data_and_library(model, adata)  # one read of the cells
    if memo is None:  # inside translate (memo), translate says it
        warn_empty_cells(model, ~x_query.any(axis=1), adata.obs_names, "nearest_response", given)
    c_train, coordinates = memoised(
        memo,
        ("coordinates", similarity),
        lambda: similarity_coordinates(model, train, x_train, similarity, batch_size),
    )
    c_query = coordinates(adata, x_query)
    centres, responses, spreads, n_src, n_tgt = [], [], [], [], []
    for g in names:
        src, tgt = is_src & (groups == g), is_tgt & (groups == g)
        n_src.append(int(src.sum()))
        n_tgt.append(int(tgt.sum()))
        centres.append(c_train[src].mean(0))
        responses.append(x_train[tgt].mean(0) - x_train[src].mean(0))
        spreads.append(((c_train[src] - centres[-1]) ** 2).mean())
    centres, responses = np.stack(centres), np.stack(responses)
    bandwidth = max(float(np.mean(spreads)), 1e-8)
    distances = ((c_query[:, None, :] - centres[None]) ** 2).sum(-1)
    weights = softmax(-0.5 * distances / bandwidth, axis=1)
    warn_thin_responses(names, np.array(n_src), np.array(n_tgt), weights, contrast, memo)
    predicted = np.maximum(x_query + weights @ responses, x_train.min())
    layers = {}
    if model.module.likelihood in ("zinb", "nb"):  # counts in X, as the other methods give
        if memo is None:  # translate, averaging it in, says nothing of it alone
            warn_far_above(model, predicted, x_query, x_train, adata.var_names)
        predicted, layers = on_count_scale(model, adata, predicted, draws, library)
    out = predicted_cells(  # inside translate (memo): translate's own cells say it
        model, caller_obs, obsm, predicted, adata.var, {condition_key: target}, uns, memo is None
    )
    for name, values in layers.items():
        out.layers[name] = values
    out.obsm["response_weights"] = weights.astype(np.float32)
    # An array, as an .h5ad file gives it back (a list came back as one, and list methods
    # failed); strings as object, anndata's reading of them.
    groups = np.asarray(list(names))
    out.uns["response_groups"] = groups.astype(object) if groups.dtype.kind == "U" else groups
    describe_prediction(out, model, "nearest_response", target)
    return out
