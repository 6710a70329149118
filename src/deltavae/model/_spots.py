"""What the spot models (NMFDeconv, Archetypes, SpatialImputer) share: registering spots,
reading their counts a chunk of rows at a time, so that a first pass over a backed file (a
starting point, a candidate set) never holds the whole matrix, and the spots a per-spot fit
loads onto."""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy import sparse
from scvi import REGISTRY_KEYS
from scvi.data.fields import LayerField, NumericalObsField

from .._checks import dense, short_repr
from .._rng import start_seed
from .._unchanged_on_failure import unchanged_on_failure
from ..train._data import DeltaDataManager
from ._cell_selection import selected_rows as _selected_rows
from ._empty_spots import drop_empty_spots, read_genes
from ._matrices import memory_copy, row_sums, to_memory, with_column
from ._plan_checks import checked_plan
from ._same_spots import check_fitted_totals, spot_totals
from ._spot_draws import SpotDrawsMixin
from ._spot_refusals import SpotScviRefusals
from ._validation import (
    check_data,
    check_flags,
    check_key_added,
    check_setup_target,
    computed,
    refuse_numeric_names,
    warn_user,
)

#: Spots read at a time by the first passes.
READ_CHUNK = 10_000

#: obs column holding each spot's row, for models that look per-spot parameters up by it.
SPOT_INDEX = "_indices"


def prefixed(key_added: str | None, *keys: str) -> tuple[str, ...]:
    """A spot model's result keys, each prefixed ``<key_added>_`` when ``key_added`` is given.

    Examples
    --------
    >>> prefixed(None, "proportions"), prefixed("ref2", "proportions", "cell_abundance")
    (('proportions',), ('ref2_proportions', 'ref2_cell_abundance'))
    """
    if key_added is None:
        return keys
    key_added = check_key_added(key_added)
    return tuple(f"{key_added}_{key}" for key in keys)


def second_argument_was(old: str, is_new=lambda value: False):
    """Decorate a ``write_to_adata(self, adata, batch_size, key_added, *, <old>)``: its second
    argument was ``old`` (Archetypes' ``n_anchors``, SpatialImputer's ``genes``) before
    ``batch_size`` took its place, as every model's ``write_to_adata`` has it. A second
    positional argument is still read as ``old`` (and a third as ``key_added``), with a
    FutureWarning, unless it is ``None`` or ``is_new(value)`` (an integer, which no ``genes``
    is).
    """

    def decorate(method):
        @functools.wraps(method)
        def write(self, adata=None, *args, **kwargs):
            if not args or args[0] is None or is_new(args[0]):  # None: either's default
                return method(self, adata, *args, **kwargs)
            name = type(self).__name__
            warn_user(
                f"{name}.write_to_adata's second argument is batch_size, as every model's; "
                f"a second positional argument is read as {old} until a later release: pass "
                f"{old}={short_repr(args[0])} by name.",
                FutureWarning,
            )
            batch_size = kwargs.pop("batch_size", None)
            return method(self, adata, batch_size, *args[1:], **{old: args[0]}, **kwargs)

        return write

    return decorate


def selected_rows(adata, indices) -> np.ndarray | None:
    """Positions of the spots ``indices`` selects in ``adata`` (``None``: every spot), read as
    the single-cell read-outs read ``indices``
    (:func:`~deltavae.model._cell_selection.selected_rows`), refusals speaking of spots."""
    return _selected_rows(adata, indices, unit="spot")


def warn_empty_spots(n_empty: int, n_spots: int, what: str, model) -> None:
    """Warn that ``n_empty`` of ``n_spots`` spots have no counts in the genes ``model`` reads,
    so their ``what`` (proportions, weights, imputed values) were left missing (NaN): what a
    model gives a spot without data (an encoder's output for an all-zero input, or the
    prior's) can look like a real mixture. The advice drops the spots empty in those genes and
    the model's layer (:func:`~deltavae.model._empty_spots.drop_empty_spots`). See
    :func:`missing_empty_rows`."""
    if n_empty:
        n_genes, _ = read_genes(model)
        warn_user(
            f"{n_empty} of {n_spots} spots have no counts in the {n_genes} genes the model "
            f"reads: their {what} are missing (NaN), as a spot without counts gives no "
            "evidence of them. Leave them out (.dropna()), or drop the spots without counts in "
            f"those genes ({drop_empty_spots(model)})."
        )


def missing_empty_rows(empty: np.ndarray, what: str, model, *values) -> None:
    """Set to NaN, in place, the rows of ``values`` (float arrays or DataFrames, rows as
    ``empty``) of the spots ``empty`` marks (no counts in the genes ``model`` reads: what a
    model gives them is its output for an all-zero input, or its prior, which can look like a
    real result), and warn once, counting them among ``len(empty)`` spots.
    Every spot model's read-outs (NMFDeconv, SpatialImputer, Archetypes) share it.

    Examples
    --------
    >>> a = np.ones((3, 2))
    >>> missing_empty_rows(np.array([False, False, False]), "proportions", None, a)  # no warning
    """
    empty = np.asarray(empty, dtype=bool)
    for value in values:
        if isinstance(value, pd.DataFrame | pd.Series):
            value.iloc[np.flatnonzero(empty)] = np.nan
        else:
            value[empty] = np.nan
    warn_empty_spots(int(empty.sum()), len(empty), what, model)


def spot_rate(lr: float | None, kwargs: dict, default: float, module=None) -> float:
    """A spot model's learning rate: ``lr``, else the one given in ``plan_kwargs`` (``lr``, or
    ``optim_kwargs``' ``lr``), else the model's ``default``. A rate given in ``plan_kwargs``
    alone was refused as disagreeing with the default the model filled in for ``lr``. The
    ``default`` is set on the model's ``module`` as ``default_lr``: a diverged run's advice
    (DeltaTrainingPlan) suggests no rate below a tenth of the run's unless the default is.

    Examples
    --------
    >>> spot_rate(None, {"plan_kwargs": {"lr": 0.1}}, 0.005), spot_rate(None, {}, 0.005)
    (0.1, 0.005)
    """
    if module is not None:
        module.default_lr = default
    if lr is not None:
        return lr
    plan = checked_plan(kwargs.get("plan_kwargs"))
    given = plan.get("lr", (plan.get("optim_kwargs") or {}).get("lr"))
    return default if given is None else given


@contextlib.contextmanager
def spots_named() -> Iterator[None]:
    """Errors and warnings of ``setup_anndata`` called by a ``from_reference`` on its ``spots``
    name them by that argument: ``spots.X``, as the reference's name ``reference.X`` (they
    said ``adata.X``, an argument the user never passed); ``model.adata`` is left as it is.
    The warnings are said again once the setup is done, under the caller's filters."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except (ValueError, KeyError, TypeError) as err:
        _say_again(caught)
        text = err.args[0] if len(err.args) == 1 else None
        if type(err) not in (ValueError, KeyError, TypeError) or not isinstance(text, str):
            raise
        if not _ADATA.search(text):
            raise
        raise type(err)(_ADATA.sub("spots", text)) from err.__cause__
    _say_again(caught)


def _say_again(caught) -> None:
    """Warn again of the ``caught`` warnings, the spots named by their argument."""
    for said in caught:
        category = said.category if issubclass(said.category, Warning) else UserWarning
        warn_user(_ADATA.sub("spots", str(said.message)), category)


_ADATA = re.compile(r"(?<![\w.])adata\b(?!=)")  # not model.adata, nor adata= (an argument)


class SpotModelMixin(SpotScviRefusals, SpotDrawsMixin):
    """Spot registration and chunked reads for models of spatial spots' raw counts.

    Each model's ``setup_anndata`` (its own arguments and docstring) calls
    :meth:`_register_spots` with the fields it adds to the counts.
    """

    #: The parameter fitted per spot and its axis of spots (None: none), see fitted_spots.
    _per_spot_parameter: tuple[str, int] | None = None
    #: Training refusals name the rows spots (check_training_arguments).
    _rows_are_spots = True

    def _finish_init(self, summary: str, init_locals: dict) -> None:
        # The spots, by name: a model fitted per spot loads onto them only (fitted_spots).
        self.spot_names_ = pd.Index(self.adata.obs_names.astype(str))
        # and a few of their totals: other spots of those names are refused (_same_spots)
        self.spot_totals_ = spot_totals(self.adata, self.registry_["setup_args"].get("layer"))
        super()._finish_init(summary, init_locals)

    @classmethod
    def load(cls, dir_path: str, adata=None, **kwargs):
        """Load a saved model, checking the file and the genes first.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            The spots, with the training genes; in memory and in another order, they are put
            in the training order by name on a copy (with a warning; ``adata`` is unchanged
            and gets the results of ``write_to_adata``). A
            model fitted per spot loads onto its own spots, by name, its read-outs in their
            order (spots of those names holding other counts, another slide's, are refused). A view
            (``spots[mask]``) is copied into memory, as ``from_reference`` copies one: pass
            ``write_to_adata`` the AnnData to write into. ``None`` uses the AnnData saved
            with the model.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ``backup_url``: where to download a missing model file).

        Examples
        --------
        >>> a = dv.model.Archetypes.load("archetypes/", spots)  # doctest: +SKIP
        """
        # Genes in another order are put in the training order on a copy by Saving.load
        # (in_training_order), which writes results into the spots given.
        return super().load(dir_path, adata=adata, **kwargs)

    @classmethod
    def _spots_to_load(cls, adata, attr_dict: dict, state_dict: dict):
        """The load hook of :meth:`DeltaModelMixin.load` (which copied a view, ``spots[mask]``,
        as ``from_reference`` copies one): the fitted spots (:func:`fitted_spots`)."""
        if cls._per_spot_parameter is None:
            return adata
        return fitted_spots(adata, attr_dict, state_dict, cls._per_spot_parameter, cls.__name__)

    @classmethod
    def _register_spots(
        cls, adata, layer, setup_method_args, extra_fields=(), spot_index=False, **kwargs
    ) -> None:
        """The body of each spot model's ``setup_anndata``: the counts checked a chunk of rows
        at a time, registered as raw counts, plus the model's ``extra_fields`` and, with
        ``spot_index``, each spot's row (written to ``obs[SPOT_INDEX]`` once the data passed).
        An argument the model does not take is refused before anything is written."""
        check_setup_target(adata, kwargs, cls.__name__)
        check_flags(spot_index=spot_index)  # "no" was True: obs["_indices"] written
        spots = pd.Index(adata.obs_names.astype(str))
        if spots.has_duplicates:  # results are matched back to spots by name
            raise ValueError(
                f"Spot names in adata are not unique (repeated: "
                f"{spots[spots.duplicated()].unique()[:5].tolist()}); results are matched to "
                "spots by name: make them unique (adata.obs_names_make_unique())."
            )
        check_data(adata, layer, kind="counts", unit="spots")
        fields = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True), *extra_fields]
        with unchanged_on_failure(adata):  # obs[SPOT_INDEX] not left by a failed registration
            if spot_index:
                adata.obs[SPOT_INDEX] = np.arange(adata.n_obs)
                fields.append(NumericalObsField(REGISTRY_KEYS.INDICES_KEY, SPOT_INDEX))
            adata_manager = DeltaDataManager(fields=fields, setup_method_args=setup_method_args)
            adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _counts(self):
        """The registered count matrix of the model's AnnData (on disk when backed)."""
        return self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)

    def _read_rows(
        self, rows: np.ndarray, columns: np.ndarray | None = None, dtype=np.float64
    ) -> np.ndarray:
        """Dense counts (``dtype``) of the (sorted) ``rows``, read ``READ_CHUNK`` rows at a
        time."""
        X, blocks = self._counts(), []
        for start in range(0, len(rows), READ_CHUNK):
            block = computed(X[rows[start : start + READ_CHUNK]])  # a copy: rows are an array
            blocks.append(dense(block if columns is None else block[:, columns], dtype))
        if len(blocks) == 1:  # a pool of Archetypes' candidates: not copied twice more
            return blocks[0]
        return np.concatenate(blocks) if blocks else np.zeros((0, X.shape[1]), dtype=dtype)

    def _row_totals(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Counts of each of the (sorted, unique) ``rows`` (in the ``columns`` only, when
        given), float64, summed as they are stored: sparse rows are not made dense, and
        every row in memory is the matrix itself, not a copy of it."""
        X = self._counts()
        weights = None
        if columns is not None:  # a product with the columns' indicator: no copy of them
            weights = np.zeros(X.shape[1])
            weights[columns] = 1.0

        def total(block) -> np.ndarray:
            if weights is None:
                return row_sums(block)
            return np.asarray(block @ weights, dtype=np.float64).ravel()

        every = len(rows) == X.shape[0]  # sorted and unique: every row, in order
        if every and (isinstance(X, np.ndarray) or sparse.issparse(X)):
            return total(X)
        blocks = []
        for at in range(0, len(rows), READ_CHUNK):  # on disk: a chunk of rows at a time
            part = slice(at, at + READ_CHUNK) if every else rows[at : at + READ_CHUNK]
            blocks.append(total(computed(X[part])))
        return np.concatenate(blocks) if blocks else np.zeros(0)

    def _row_chunks(
        self, columns: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> Iterator[np.ndarray]:
        """Dense float64 counts of every spot (or of the sorted ``rows``), ``READ_CHUNK`` rows
        at a time, in file order."""
        X = self._counts()
        n = X.shape[0] if rows is None else len(rows)
        for start in range(0, n, READ_CHUNK):
            stop = start + READ_CHUNK
            block = computed(X[start:stop] if rows is None else X[rows[start:stop]])
            yield dense(block if columns is None else block[:, columns])

    def _sample_rows(self, n_max: int) -> np.ndarray:
        """Every row when there are at most ``n_max``, else ``n_max`` random rows (seeded by
        ``scvi.settings.seed``, 0 while unset: :func:`deltavae._rng.start_seed`), sorted so
        that a backed file is read front to back."""
        n = self.adata.n_obs
        if n <= n_max:
            return np.arange(n)
        rng = np.random.default_rng(start_seed())
        return np.sort(rng.choice(n, n_max, replace=False))


def training_rows(names: pd.Index, trained: pd.Index) -> np.ndarray:
    """Rows of a per-spot model's training spots (``trained``) that ``names`` are: any of
    them, in any order. Other or repeated spots raise, naming what differs."""
    if names.equals(trained):
        return np.arange(len(names))
    unknown = names.difference(trained)
    if len(unknown) or not names.is_unique or not trained.is_unique:
        repeated = ", some repeated" if not names.is_unique else ""
        raise ValueError(
            "inference='per_spot' fits proportions for the training spots only, found by name "
            f"in any order; this AnnData has {len(names)} spots, {len(unknown)} of them not "
            f"among the model's {len(trained)} (e.g. {unknown[:3].tolist()}){repeated}. Map "
            "new spots with an inference='amortized' model."
        )
    return trained.get_indexer(names)


def fitted_rows(model) -> np.ndarray:
    """Rows, among a per-spot model's fitted spots, of the spots its AnnData holds now (by
    name): subset in place since (``sc.pp.filter_cells``), its rows are no longer those."""
    return training_rows(pd.Index(model.adata.obs_names.astype(str)), model.spot_names_)


def with_spot_index(adata):
    """New spots for an amortized model set up with ``spot_index=True``: an AnnData sharing
    ``adata``'s matrices with a row column added, so the caller's obs stays as it is."""
    if adata.isbacked:
        raise ValueError(
            f"The model was set up with spot_index=True, which these spots lack; add it "
            f"(adata.obs[{SPOT_INDEX!r}] = numpy.arange(adata.n_obs)) or set the model up "
            "without it: an amortized model does not read it."
        )
    return with_column(adata, SPOT_INDEX, np.arange(adata.n_obs))


def spots_to_load(adata, var_names):
    """The spots a saved :class:`SpatialImputer` loads onto, with its genes only (on a copy);
    the load hook then puts them in the fitted order (:func:`fitted_spots`)."""
    genes = pd.Index(np.asarray(var_names).astype(str))
    names = pd.Index(adata.var_names.astype(str))
    missing = genes[~genes.isin(names)]
    if len(missing):
        raise ValueError(
            f"adata lacks {len(missing)} of the model's {len(genes)} spot genes "
            f"(e.g. {missing[:5].tolist()}); pass the spots the model was fitted on."
        )
    repeated = genes[genes.isin(names[names.duplicated()])]
    if len(repeated):
        raise ValueError(
            f"adata repeats {len(repeated)} of the model's spot genes (e.g. "
            f"{repeated[:5].tolist()}); make them unique (adata.var_names_make_unique())."
        )
    if adata.isbacked and adata.is_view:  # anndata indexes a backed view no further
        adata = to_memory(adata)
    # By position: names the model does not read may repeat (pandas cannot index by them).
    adata = adata[:, names.get_indexer_for(genes)]
    return memory_copy(adata)


#: What each spot model fits per spot (a parameter and its axis of spots), and what to do
#: for other spots.
_PER_SPOT_ADVICE = {
    "SpatialImputer": "fit a new model (SpatialImputer.from_reference) or use "
    "design='latent', whose encoder maps any spots",
    "NMFDeconv": "fit a new model, or use inference='amortized', whose encoder maps any spots",
    "Archetypes": "load it with its training spots and read others with "
    "model.get_archetype_weights(new_spots)",
}


def fitted_spots(adata, attr_dict: dict, state_dict: dict, parameter, model: str):
    """The spots a saved model with parameters per spot (``parameter``: its name and axis of
    spots in ``state_dict``) loads onto, in the fitted order: the same spots in another order
    are put back by name (on a copy, with a warning); other spots, or another number of them,
    are refused, naming them: the parameters belong to the spots, and matched by position
    they would give every spot another's results."""
    name, axis = parameter
    if name not in state_dict:  # not fitted per spot (an amortized model)
        return adata
    n_fitted = state_dict[name].shape[axis]
    fitted = attr_dict.get("spot_names_")  # absent from models saved before it was kept
    names = pd.Index(adata.obs_names.astype(str))
    check_fitted_totals(adata, attr_dict, model, _PER_SPOT_ADVICE[model])
    if fitted is not None and names.equals(pd.Index(fitted)):
        return adata
    if fitted is None and len(names) == n_fitted:
        return adata  # an older save: the spots cannot be told apart by name
    fitted = pd.Index(fitted) if fitted is not None else None
    same = fitted is not None and len(names) == len(fitted) and not names.has_duplicates
    if same and names.isin(fitted).all():
        refuse_numeric_names(adata, "adata")  # anndata's TypeError on the reorder below
        warn_user(
            f"adata has the model's {len(names)} spots in another order; they are put back "
            "in the fitted order by name on the copy the model reads (adata itself is "
            "unchanged); read-outs give their rows in adata's order."
        )
        adata = memory_copy(adata[names.get_indexer(fitted)])
        adata.obs[SPOT_INDEX] = np.arange(adata.n_obs)
        return adata
    unknown = names.difference(fitted) if fitted is not None else names[:0]
    which = f", {len(unknown)} of them not fitted (e.g. {unknown[:3].tolist()})"
    if fitted is not None:  # Archetypes' parameter spans its candidate spots, not all
        n_fitted = len(fitted)
    if fitted is not None and not len(unknown) and not names.has_duplicates:
        raise ValueError(  # a subset of its spots: "those spots only" read as allowed
            f"This {model} fitted parameters for each of its {n_fitted} spots, so it takes "
            f"all of them; got {len(names)} spots, a subset of them. Pass all {n_fitted} and "
            f"read these with the read-outs' indices= (their positions); for other spots "
            f"{_PER_SPOT_ADVICE[model]}."
        )
    raise ValueError(
        f"This {model} fitted parameters for each of its {n_fitted} spots, so it loads onto "
        f"those spots only; got {len(names)} spots{which if len(unknown) else ''}. Pass the "
        f"spots the model was fitted on; for other spots {_PER_SPOT_ADVICE[model]}."
    )
