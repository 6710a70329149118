"""Checks of scvi-tools' expression calls before scvi-tools runs them: the groups, genes and
batches named exist, the comparison is not averaged away by batch correction, and the counts
of the cells compared are in memory."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pandas as pd
import scvi
from scvi.model.base import RNASeqMixin

from .._checks import short_repr
from ..distributions._draws import CellDraws
from ._cell_selection import check_indices, mask_by_name, selected_rows
from ._de_checks import (
    check_dataloader_alone,
    check_de_keywords,
    check_de_selection,
    check_de_test,
    check_draws,
    check_groupby_column,
    check_library_size,
    de_group_lists,
    fill_advice,
    same_number,
    without_ungrouped_cells,
)
from ._de_labels import GROUPS_AS_GIVEN, groups_as_given, unlabelled_cells
from ._de_names import check_batches, check_genes
from ._de_rows import de_in_memory, idx_rows
from ._de_scaling import scvi_obs_columns
from ._de_scanpy import (
    RANK_KEY_EXAMPLE,
    RANK_KEY_NOTE,
    check_rank_key,
    with_key_added,
    write_rank_genes_groups,
)
from ._de_sizes import warn_few_cells_compared
from ._de_tables import (
    check_importance_keywords,
    effect_breaks_ties,
    in_gene_list_order,
)
from ._expression_reads import normalized_on_host
from ._latent_shift import draws_at_data_floor
from ._parameter_reads import (
    denoised_samples_on_host,
    library_sizes_on_host,
    likelihood_parameters_on_host,
)
from ._posterior_draws import posterior_predictive_draws
from ._readout_docs import (
    CORRELATION_DRAWS,
    DE_DRAWS,
    DRAWS_OVERALL,
    GENE_LIST_ORDER,
    LIBRARY_DRAWS,
    NORMALIZED_DRAWS,
    PARAMETER_DRAWS,
    PREDICTIVE_DRAWS,
    with_batch_size_default,
    with_note,
    with_silent,
)
from ._validation import warn_user

#: Cells x genes from which scvi-tools' importance-weighted DE takes minutes on a CPU.
_SLOW_IMPORTANCE = 1_000_000


class CheckedExpressionMixin(RNASeqMixin):
    """scvi-tools' expression API with its arguments checked first: scvi-tools silently drops
    unknown genes of ``gene_list`` (an empty frame when none is known) and fails on a list for
    ``group2`` with "Lengths must match"."""

    @functools.wraps(RNASeqMixin.get_normalized_expression)
    def get_normalized_expression(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._check_if_trained(warn=False)
        method = RNASeqMixin.get_normalized_expression
        given = _bind(self, method, args, kwargs)
        check_dataloader_alone(given, "get_normalized_expression")
        check_importance_keywords(given)
        gene_list = given.get("gene_list")
        check_genes(self, gene_list)
        if isinstance(gene_list, str):  # one gene (scvi-tools' isin failed on a string)
            args, kwargs = _set_argument(method, args, kwargs, "gene_list", [gene_list])
        if given.get("indices") is not None and given.get("dataloader") is None:
            # As positions: scvi-tools labels the rows adata.obs_names[indices], which read a
            # boolean Series by position (a mask built on obs in another order labelled the
            # cells computed with other cells' names), and its importance weights index
            # indices with an array (a list or range failed).
            data = self.adata if given.get("adata") is None else given["adata"]
            rows = selected_rows(data, given["indices"])
            args, kwargs = _set_argument(method, args, kwargs, "indices", rows)
        library_size = check_library_size(given.get("library_size", 1))
        if library_size is not given.get("library_size", 1):  # a 0-d array, as its number
            args, kwargs = _set_argument(method, args, kwargs, "library_size", library_size)
        check_draws(given, ("n_samples", "n_samples_overall"))
        for arg, value in check_batches(self, given, ("transform_batch",)).items():
            args, kwargs = _set_argument(method, args, kwargs, arg, value)  # "107": batch 107
        if given.get("n_samples_overall") is not None and not given.get("return_numpy"):
            # Draws of randomly chosen cells, not one row per cell: scvi-tools failed making
            # them a frame indexed by the cells ("Shape of passed values is ...").
            if given.get("return_numpy") is False:
                warn_user(
                    "n_samples_overall returns draws of randomly chosen cells, not one row per "
                    "cell: returning an np.ndarray (n_samples_overall x genes)."
                )
            args, kwargs = _set_argument(method, args, kwargs, "return_numpy", True)
        # scvi-tools' loop, with the minibatches' values brought to the host together (its
        # .cpu() of each made a GPU wait a minibatch): the same arguments and numbers.
        result = normalized_on_host(self, *args, **kwargs)
        every = given.get("dataloader") is not None  # scvi-tools then ignores gene_list
        return in_gene_list_order(result, gene_list, self.adata.var_names, -1, every)

    @functools.wraps(RNASeqMixin.get_feature_correlation_matrix)
    def get_feature_correlation_matrix(self, *args, **kwargs):  # noqa: D102 - scvi-tools'
        self._check_if_trained(warn=False)  # scvi-tools answered from the untrained networks
        method = RNASeqMixin.get_feature_correlation_matrix
        given = _bind(self, method, args, kwargs)
        check_draws(given, ("n_samples",))  # 0 gave a table of NaN, -2 numpy's "negative"
        for arg, value in check_batches(self, given, ("transform_batch",)).items():
            args, kwargs = _set_argument(method, args, kwargs, arg, value)  # as above
        return super().get_feature_correlation_matrix(*args, **kwargs)

    @functools.wraps(RNASeqMixin.get_likelihood_parameters)
    def get_likelihood_parameters(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._check_if_trained(warn=False)  # as get_normalized_expression
        method = RNASeqMixin.get_likelihood_parameters
        given = _bind(self, method, args, kwargs)
        check_dataloader_alone(given, method.__name__)
        check_draws(given, ("n_samples",))  # scvi-tools read 0 and -1 as 1 draw
        # scvi-tools' loop, the minibatches' values brought to the host together (3 .cpu() a
        # minibatch made a GPU wait): the same arguments and arrays.
        return likelihood_parameters_on_host(self, *args, **kwargs)

    @functools.wraps(RNASeqMixin.get_latent_library_size)
    def get_latent_library_size(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        # scvi-tools' loop, the libraries brought to the host together (as above)
        return library_sizes_on_host(self, *args, **kwargs)

    @functools.wraps(RNASeqMixin._get_denoised_samples)
    def _get_denoised_samples(self, *args, **kwargs):
        # get_feature_correlation_matrix's draws: scvi-tools' loop, brought to the host
        # together (as above)
        return denoised_samples_on_host(self, *args, **kwargs)

    @functools.wraps(RNASeqMixin.posterior_predictive_sample)
    def posterior_predictive_sample(self, *args, **kwargs):  # noqa: D102 - scvi-tools' docstring
        self._check_if_trained(warn=False)
        method = RNASeqMixin.posterior_predictive_sample
        given = _bind(self, method, args, kwargs)
        check_dataloader_alone(given, "posterior_predictive_sample")
        check_draws(given, ("n_samples",))  # scvi-tools read 0 and -1 as 1 draw
        gene_list = given.get("gene_list")
        check_genes(self, gene_list)  # scvi-tools dropped unknown genes without a word
        if isinstance(gene_list, str):  # one gene; scvi-tools read it as a substring of one:
            # gene_list="IFI44L" returned IFI44 too.
            gene_list = [gene_list]
            args, kwargs = _set_argument(method, args, kwargs, "gene_list", gene_list)
        # scvi-tools' draws, put together without pydata-sparse's compiled kernels (10-20 s
        # on a first call) and with the genes of gene_list in its order; every number drawn
        # on the CPU, cell after cell, seeded from torch's CPU generator (scvi.settings.seed):
        # on the device, a GPU drew other numbers than the CPU, and batch_size changed them.
        result = posterior_predictive_draws(self, *args, cell_draws=CellDraws(), **kwargs)
        return draws_at_data_floor(self, given.get("adata"), result)  # as sample's

    @functools.wraps(RNASeqMixin.differential_expression)
    def differential_expression(self, *args, key_added: str | None = None, **kwargs):  # noqa: D102
        self._check_if_trained(warn=False)  # an untrained query model answered from its start
        query = getattr(self, "_query_adata", None)  # load_query_data's query, as given
        if (
            query is not None
            and _bind(self, RNASeqMixin.differential_expression, args, kwargs).get("adata") is None
        ):
            # Its obs, where the user adds groupings (leiden) after mapping, not the copy read.
            args, kwargs = _set_argument(
                RNASeqMixin.differential_expression, args, kwargs, "adata", query
            )
        asked = _bind(self, RNASeqMixin.differential_expression, args, kwargs)
        target = self.adata if asked.get("adata") is None else asked["adata"]
        if key_added is not None:  # before any draw
            check_rank_key(target, key_added, asked.get("groupby"), asked.get("adata") is not None)
        args, kwargs = check_de_groups(self, RNASeqMixin.differential_expression, args, kwargs)
        settled = _bind(self, RNASeqMixin.differential_expression, args, kwargs)
        warn_few_cells_compared(
            target if settled.get("adata") is None else settled["adata"], settled
        )
        reference = settled.get("group2")
        args, kwargs = de_in_memory(  # of an AnnData on disk: the cells compared only
            self, RNASeqMixin.differential_expression, args, kwargs, _set_argument
        )
        args, kwargs = _groups_as_given(self, RNASeqMixin.differential_expression, args, kwargs)
        given = _bind(self, RNASeqMixin.differential_expression, args, kwargs)
        data = self.adata if given.get("adata") is None else given["adata"]
        if (
            given.get("weights") == "importance"
            # (unwrapped: every public method opens closed backed files, see _backing)
            and inspect.unwrap(type(self).get_importance_weights)
            is RNASeqMixin.get_importance_weights
            and self.device.type == "cpu"
            and data.n_obs * data.n_vars >= _SLOW_IMPORTANCE
        ):
            warn_user(
                "weights='importance' runs scvi-tools' importance sampling, which scores "
                "every cell against up to 1,024 others: minutes on a CPU (520 s for 342 "
                "against 154 PBMC cells x 2,000 genes, one thread) where the default "
                "weights='uniform' takes a second."
            )
        with scvi_obs_columns(self):  # raw_normalized_mean of these counts, not a cache
            de = effect_breaks_ties(super().differential_expression(*args, **kwargs))
        if key_added is not None:
            write_rank_genes_groups(target, de, key_added, asked["groupby"], reference)
        return de

    get_normalized_expression.__doc__ = with_note(
        with_silent(get_normalized_expression.__doc__),
        f"{GENE_LIST_ORDER} {DRAWS_OVERALL} {NORMALIZED_DRAWS}",
    )
    get_feature_correlation_matrix.__doc__ = with_note(
        with_batch_size_default(
            with_silent(get_feature_correlation_matrix.__doc__),
            RNASeqMixin.get_feature_correlation_matrix,
        ),
        CORRELATION_DRAWS,
    )
    get_likelihood_parameters.__doc__ = with_note(
        get_likelihood_parameters.__doc__, PARAMETER_DRAWS
    )
    get_latent_library_size.__doc__ = with_note(get_latent_library_size.__doc__, LIBRARY_DRAWS)
    posterior_predictive_sample.__doc__ = with_note(
        with_silent(posterior_predictive_sample.__doc__), GENE_LIST_ORDER + " " + PREDICTIVE_DRAWS
    )
    differential_expression.__signature__ = with_key_added(RNASeqMixin.differential_expression)
    differential_expression.__doc__ = (
        RNASeqMixin.differential_expression.__doc__.replace(
            "**kwargs\n", RANK_KEY_NOTE + "**kwargs\n", 1
        ).rstrip()
        + "\n\nNotes\n-----\nWithin each comparison the rows run by ``proba_de``"
        ' (``mode="change"``) or ``bayes_factor`` (``"vanilla"``), as in scvi-tools;'
        " genes tied there (``proba_de`` reaches 1.0 for many clear markers) follow the size"
        " of ``lfc_mean``, largest first (vanilla: ``scale1 - scale2``, signed as"
        " ``bayes_factor``: the most down-regulated genes last), so the ends of the table do"
        " not change with the seed. ``delta`` and ``fdr_target`` apply to"
        ' ``mode="change"`` only: given to the default ``"vanilla"`` they warn. An unknown'
        " ``mode`` or ``weights`` is refused before any draw, as is ``groupby`` on a column of"
        " continuous values (most of them distinct: bin them first, ``pd.qcut``). Without"
        " ``adata`` the groups are read from the model's own AnnData: pass ``adata=`` where"
        " ``groupby``'s column was added to another one (a subset, a copy). Cells of no"
        " group (NaN in ``groupby``'s column) are left out of the rest a group is compared"
        " with (warned; scvi-tools and scanpy count them in it). By a CGMDVAE's labels"
        ' column, cells marked unlabelled (``"Unknown"``) are no group either: left out'
        " (warned) unless ``group1`` or ``group2`` names the mark; labels the model never saw"
        " are groups as the column holds them. A group (or ``idx1``, ``idx2``, the rest) of"
        " fewer than 3 cells is warned of, with its size: its table is those cells', noise"
        " (scanpy's ``rank_genes_groups`` refuses a group of one cell). Of an AnnData on disk"
        " (backed, ``read_lazy``) or of dask arrays only the counts of the cells compared are"
        " read into memory, a chunk of rows at a time (against the rest: every cell's), with"
        " a warning of the size above 1 GiB.\n\n"
        + " ".join(DE_DRAWS.split())
        + "\n"
        + RANK_KEY_EXAMPLE
    )


def _groups_as_given(model, differential_expression, args: tuple, kwargs: dict):
    """The call's ``args`` and ``kwargs``, comparing by a copy of the labels column where
    ``groupby`` names it and the AnnData holds labels the model was not trained with
    (:func:`~deltavae.model._de_labels.groups_as_given`)."""
    given = _bind(model, differential_expression, args, kwargs)
    data = groups_as_given(model, given.get("adata"), given.get("groupby"))
    if data is None:
        return args, kwargs
    args, kwargs = _set_argument(differential_expression, args, kwargs, "adata", data)
    return _set_argument(differential_expression, args, kwargs, "groupby", GROUPS_AS_GIVEN)


def _bind(model, method, args: tuple, kwargs: dict) -> dict:
    return inspect.signature(method).bind_partial(model, *args, **kwargs).arguments


def check_de_groups(
    model, differential_expression, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    """The ``groupby`` column and the ``group1``/``group2`` names a call of scvi-tools'
    ``differential_expression`` gives exist in the AnnData it reads: a misspelled group made
    scvi-tools divide by zero cells. Returns the call's ``args`` and ``kwargs`` (an AnnData
    on disk is read into memory afterwards, the cells compared only: :mod:`._de_rows`).

    ``differential_expression`` is the unbound scvi-tools method whose signature the call
    follows.
    """
    given = _bind(model, differential_expression, args, kwargs)
    if "gene_list" in given.get("kwargs", {}):
        # scvi-tools hands it to get_bayes_factors, which fails naming neither.
        raise TypeError(
            "differential_expression takes no gene_list: it tests every gene. Select the "
            "genes from its table: de[de.index.isin(genes)]."
        )
    check_de_keywords(given)
    check_de_selection(given)
    check_de_test(given)
    for arg, value in de_group_lists(given).items():  # a set as a list
        args, kwargs = _set_argument(differential_expression, args, kwargs, arg, value)
        given[arg] = value
    check_draws(given.get("kwargs", {}), ("n_samples_overall",))  # get_bayes_factors'
    typed = check_batches(model, given, ("batchid1", "batchid2"))
    for arg in ("batchid1", "batchid2"):
        value = given.get(arg)
        if value is None:
            continue
        typed_value = [typed[arg]] if isinstance(value, str) else typed[arg]
        args, kwargs = _set_argument(differential_expression, args, kwargs, arg, typed_value)
        if not given.get("batch_correction"):  # scvi-tools: "Inconsistent batch policy"
            raise ValueError(
                f"{arg} chooses the batches that batch_correction=True averages over: pass "
                f"batch_correction=True with it, or leave {arg} out."
            )
    adata = model.adata if given.get("adata") is None else given.get("adata")
    for arg in ("idx1", "idx2"):
        if isinstance(given.get(arg), str) and not len(idx_rows(adata, given[arg])):
            raise ValueError(  # scvi-tools: "One of idx1 or idx2 has size zero."
                f"{arg}={given[arg]!r} selects no cell (a query of adata.obs): check the "
                "column's values, e.g. adata.obs[column].unique()."
            )
        if given.get(arg) is not None and not isinstance(given[arg], str):
            rows = _cell_positions(adata, given[arg], arg)
            if rows is not given[arg]:
                args, kwargs = _set_argument(differential_expression, args, kwargs, arg, rows)
                given[arg] = rows
    groupby = given.get("groupby")
    batch = model.adata_manager.get_state_registry(scvi.REGISTRY_KEYS.BATCH_KEY)
    key = batch.get("original_key")
    idx1, idx2 = given.get("idx1"), given.get("idx2")
    if idx1 is not None and idx2 is not None:
        shared = np.intersect1d(
            idx_rows(adata, idx1) % adata.n_obs, idx_rows(adata, idx2) % adata.n_obs
        )
        if len(shared):  # scvi-tools moved them to idx2 (all of idx1: a ZeroDivisionError)
            raise ValueError(
                f"idx1 and idx2 share {len(shared)} cells (e.g. {adata.obs_names[shared[0]]!r}); "
                "a cell is in one of the groups compared. Against every other cell: idx2=None."
            )
    if given.get("batch_correction") and idx1 is not None and idx2 is not None and key in adata.obs:
        # idx1/idx2 split by the condition itself (stim against ctrl within a cell type):
        # averaging over it erased the difference tested (ISG15's lfc 5.0 -> 0.4, silently).
        values = adata.obs[key].astype(str).to_numpy()
        if not set(values[idx_rows(adata, idx1)]) & set(values[idx_rows(adata, idx2)]):
            raise ValueError(
                f"idx1 and idx2 share no category of adata.obs[{key!r}], which "
                "batch_correction=True averages over: it would remove the difference being "
                "tested. Pass batch_correction=False."
            )
    if (
        idx1 is not None
        and idx2 is None
        and len(np.unique(idx_rows(adata, idx1) % adata.n_obs)) == adata.n_obs
    ):
        raise ValueError(  # scvi-tools divided by the rest's zero cells
            "idx1 selects every cell, so the rest it is compared with (idx2=None) is empty; "
            "select fewer cells, or pass idx2."
        )
    if groupby is None:
        return args, kwargs
    if given.get("batch_correction") and groupby == batch.get("original_key"):
        role = "first condition" if model_has_conditions(model) else "batch"
        raise ValueError(
            f"batch_correction=True averages the expression over the categories of "
            f"adata.obs[{groupby!r}] (the model's {role}), "
            "which is the column the groups are compared by, so it removes the difference "
            "being tested. Pass batch_correction=False."
        )
    adata = given.get("adata")
    passed, adata = adata is not None, model.adata if adata is None else adata
    column = check_groupby_column(adata, groupby, passed)
    present, values = set(column.dropna().astype(str)), set(column.dropna().unique())
    for arg in ("group1", "group2"):
        value = given.get(arg)
        if value is None:
            continue
        names = [value] if np.ndim(value) == 0 else list(value)
        found = [str(n) in present or same_number(n, values) for n in names]  # 0 for 0.0
        missing = [n for n, f in zip(names, found, strict=True) if pd.isna(n) or not f]
        if missing:
            raise ValueError(
                f"{arg}={short_repr(value)}: no cell of adata.obs[{groupby!r}] is "
                f"{short_repr(missing[0])}; its groups: {sorted(present)[:20]}."
                + f" NaN marks cells of no group: {fill_advice(groupby)}" * pd.isna(missing[0])
                + " For every other cell, leave group2 out." * (str(missing[0]).lower() == "rest")
            )
        other_type = [name for name in names if name not in values]
        if other_type:
            # "0" for a column of integers: scvi-tools compares values, finds no cell and
            # divides by zero.
            actual = next(v for v in values if str(v) == str(other_type[0]))
            actual = actual.item() if isinstance(actual, np.generic) else actual
            raise ValueError(
                f"{arg}={short_repr(value)}: adata.obs[{groupby!r}] holds {type(actual).__name__} "
                f"values, not {type(other_type[0]).__name__}: pass {actual!r}."
            )
    data = _bind(model, differential_expression, args, kwargs).get("adata")
    data = adata if data is None else data
    marked, mark = unlabelled_cells(model, column, groupby, given)  # "Unknown": no group
    kept = without_ungrouped_cells(column, groupby, given.get("group2") is None, marked, mark)
    if kept is not None:  # NaN: no group, not the rest's (scvi-tools counted them in it)
        args, kwargs = _set_argument(differential_expression, args, kwargs, "adata", data[kept])
        column = column[kept]
    marks = "NaN" if marked is None else f"NaN or {mark!r}"
    left_out = "" if kept is None else f" ({int((~kept).sum())} of no group, {marks})"
    group1 = given.get("group1")
    if group1 is not None and given.get("group2") is None and given.get("idx1") is None:
        if column.isin([group1] if np.ndim(group1) == 0 else list(group1)).all():
            raise ValueError(  # scvi-tools divided by the rest's zero cells
                f"group1={group1!r} holds every cell of adata.obs[{groupby!r}]{left_out}, so "
                "the rest it is compared with (group2=None) is empty."
            )
    group2 = given.get("group2")
    if group1 is not None and group2 is not None:
        reference = [group2] if np.ndim(group2) == 0 else list(group2)
        if any(group in reference for group in ([group1] if np.ndim(group1) == 0 else group1)):
            raise ValueError(  # scvi-tools compared the group with itself: no gene is DE
                f"group2={group2!r} is also in group1={group1!r}: a group compared with itself."
            )
    if group1 is None and given.get("idx1") is None:
        # scvi-tools compares every category, also one without cells: it divided by zero.
        groups = column.astype("category").cat.categories
        held = [group for group in groups if (column == group).any()]
        if len(held) == 1:  # the others: categories without cells, or NaN
            raise ValueError(
                f"adata.obs[{groupby!r}] has cells in one group only ({held[0]!r}){left_out}. "
                "Differential expression needs two groups with cells."
            )
        if group2 is not None:  # each other group against it; scvi-tools added "g2 vs g2"
            reference = [group2] if np.ndim(group2) == 0 else list(group2)
            held = [group for group in held if group not in reference]
        if 0 < len(held) < len(groups):
            args, kwargs = _set_argument(differential_expression, args, kwargs, "group1", held)
    if group2 is not None and np.ndim(group2) > 0:
        if len(list(group2)) != 1:
            raise ValueError(
                f"group2={group2!r}: scvi-tools compares against one group. To compare with "
                f"several, pass idx1=adata.obs[{groupby!r}] == group1 and "
                f"idx2=adata.obs[{groupby!r}].isin(group2) instead of groupby."
            )
        # A list of one group is that group.
        return _set_argument(differential_expression, args, kwargs, "group2", list(group2)[0])
    return args, kwargs


def _set_argument(method, args: tuple, kwargs: dict, name: str, value) -> tuple[tuple, dict]:
    """The call's ``args`` and ``kwargs`` with argument ``name`` set to ``value``."""
    position = list(inspect.signature(method).parameters).index(name) - 1  # after self
    if position < len(args):
        return (*args[:position], value, *args[position + 1 :]), kwargs
    return args, {**kwargs, name: value}


def model_has_conditions(model) -> bool:
    """Whether ``model`` registers condition covariates (CGMDVAE's batch field mirrors the
    first of them)."""
    return bool(getattr(model, "condition_keys", []))


def _cell_positions(adata, idx, arg: str):
    """``idx1``/``idx2`` as scvi-tools reads them: cell names (``adata.obs_names[mask]``) as
    their positions; a mask or positions checked as every read-out's ``indices`` are
    (:func:`~deltavae.model._cell_selection.check_indices`; scvi-tools failed with a bare numpy
    IndexError)."""
    idx = mask_by_name(adata, idx, arg)
    values = np.asarray(idx)
    if values.ndim != 1 or values.dtype.kind not in "OUS":
        check_indices(idx, adata.n_obs, arg)
        return idx
    if not adata.obs_names.is_unique:
        raise ValueError(f"{arg} names cells, but adata.obs_names repeat; pass a boolean mask.")
    rows = adata.obs_names.get_indexer(values.astype(str))
    if (rows < 0).any():
        raise ValueError(
            f"{arg} names {int((rows < 0).sum())} cells not in adata.obs_names, e.g. "
            f"{str(values[rows < 0][0])!r}."
        )
    return rows
