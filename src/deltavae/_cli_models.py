"""Building the model ``deltavae fit`` trains (see :mod:`deltavae.cli`): the models that need a
single-cell reference (``--reference``) are built with their ``from_reference``; the others
are set up and constructed from the options they name. Options a model does not take are
refused by name, and a missing or unreadable reference before the spots are loaded."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import warnings
from pathlib import Path

import anndata as ad
import h5py

import deltavae as dv
from deltavae._anndata_or_folder import model_folder_advice
from deltavae._checks import short_repr
from deltavae._cli_files import SCVI_PREFIX, InputError, _options_for, zarr_to_h5ad
from deltavae._cli_flags import (
    _CSC_ADVICE,
    _UNCOUNTED_ADVICE,
    _csc_advice,
    _uncounted_advice,
    python_command,
)
from deltavae._cli_report import SPATIAL_MODELS, _as_flags
from deltavae._close_names import did_you_mean
from deltavae.cli import MODEL_CLASSES

#: Models ``deltavae fit --model`` can train, by command-line name. A model plugs in by adding
#: its name and class name to ``cli.MODEL_CLASSES`` (the parser's choices, read without
#: importing the models); options it does not take (``_cli_files._options_for``) are refused.
MODELS: dict[str, type] = {name: getattr(dv.model, cls) for name, cls in MODEL_CLASSES.items()}

#: Models built from a labelled single-cell reference (``--reference``, ``--labels-key``).
REFERENCE_MODELS = ("nmfdeconv", "imputer")

#: Models whose ``from_reference`` copies the spots' genes into memory: no ``--backed``.
IN_MEMORY_ONLY = ("imputer",)

#: Models that train on every spot: no validation spots for --early-stopping.
NO_VALIDATION = ("imputer",)  # NMFDeconv's default (amortised) can hold spots out

#: The command-line options that become model arguments, by argument name.
_MODEL_OPTIONS = (
    "layer",
    "batch_key",
    "condition_key",
    "sample_key",
    "labels_key",
    "unlabeled_category",
    "reference_layer",
    "n_latent",
    "n_clusters",
    "n_archetypes",
    "max_archetypes",
    "merge_threshold",
    "min_spots",
    "n_markers",
    "profiles",
    "design",
    "likelihood",
    "classifier_weight",
    "condition_alignment",
)


def check_model_inputs(args: argparse.Namespace) -> None:
    """Refuse, before the input is read, a reference that is missing, not needed or absent,
    and ``--backed`` for a model that copies its spots into memory."""
    needs = args.model in REFERENCE_MODELS
    if args.reference is None and needs:
        raise InputError(
            f"--model {args.model} needs a labelled single-cell reference: --reference "
            "reference.h5ad (raw counts, cell types in --labels-key)."
        )
    if args.reference is not None and not needs:
        raise InputError(
            f"--model {args.model} does not take --reference (only {', '.join(REFERENCE_MODELS)})."
        )
    if needs and (advice := model_folder_advice(args.reference, "--reference")):
        raise InputError(advice)
    if needs and Path(args.reference).is_dir():
        raise InputError(
            f"--reference {str(args.reference)!r} is a folder (a zarr store?); the reference is "
            f"read from an .h5ad file: {zarr_to_h5ad(Path(args.reference), '--reference')}"
        )
    if needs and not Path(args.reference).is_file():
        raise InputError(f"--reference {str(args.reference)!r} does not exist or is not a file.")
    if getattr(args, "early_stopping", False) and args.model in NO_VALIDATION:
        raise InputError(
            f"--model {args.model} fits on every spot, holding none out to stop on: drop "
            "--early-stopping."
        )
    if getattr(args, "train_size", None) is not None and args.model in NO_VALIDATION:
        raise InputError(
            f"--model {args.model} fits on every spot, holding none out: drop --train-size."
        )
    given = getattr(args, "train_size", None)
    train_size = given or _train_default(MODELS[args.model], "train_size")
    if getattr(args, "early_stopping", False) and train_size == 1:
        unit = "spot" if args.model in SPATIAL_MODELS else "cell"
        default = "" if given else f", the default of --model {args.model}"
        raise InputError(
            f"--early-stopping stops when the validation ELBO stops improving, but no {unit} "
            f"is held out for it (--train-size 1.0{default}): pass --train-size below 1, "
            "e.g. 0.9."
        )
    if args.model == "zinbvae" and getattr(args, "likelihood", None) in ("normal", "bernoulli"):
        raise InputError(  # refused by the model only once the data were read, without a fix
            f"--model zinbvae fits counts (--likelihood zinb or nb); --likelihood "
            f"{args.likelihood} (real values, or values in [0, 1]) fits --model cgmdvae."
        )
    read = {getattr(args, "labels_key", None), getattr(args, "condition_key", None)}
    if args.model == "cgmdvae" and "cgmdvae_cluster" in read:
        raise InputError(
            "obs['cgmdvae_cluster'] is where the output puts the model's clusters, and the "
            "model would read it as labels or condition: copy the column under another name "
            "in the input and pass that name."
        )
    n_archetypes = getattr(args, "n_archetypes", None)
    if getattr(args, "max_archetypes", None) is not None and n_archetypes not in (None, "auto"):
        raise InputError(
            f"--max-archetypes bounds the archetypes --n-archetypes auto tries, but "
            f"--n-archetypes {n_archetypes} fits that many: drop one of them."
        )
    if args.backed and args.model in IN_MEMORY_ONLY:
        raise InputError(
            f"--model {args.model} copies the spots' shared genes into memory; drop --backed."
        )


def _train_default(model_cls: type, name: str):
    """The default of ``model_cls.train``'s argument ``name``, from the first ``train`` of
    its classes that names it (``None`` if none does)."""
    for cls in model_cls.__mro__:
        train = cls.__dict__.get("train")
        parameter = None if train is None else inspect.signature(train).parameters.get(name)
        if parameter is not None:
            return parameter.default
    return None


def check_accelerator(accelerator: str) -> None:
    """The model's refusal of ``--accelerator gpu`` where torch sees no GPU, asked before
    anything is read (the model asked only once built, after the data were read and set up)."""
    from deltavae.model._training_checks import check_accelerator as refuse_missing_gpu

    try:
        refuse_missing_gpu(accelerator)
    except ValueError as err:
        raise InputError(_as_flags(str(err))) from err


#: Options that name an obs column of INPUT (the reference models' --labels-key names one of
#: the reference's).
_INPUT_COLUMNS = ("batch_key", "condition_key", "sample_key", "labels_key")


def check_input_keys(path: Path, args: argparse.Namespace) -> None:
    """Refuse an obs column (``--batch-key``, ...) or ``--layer`` that INPUT lacks, and a
    ``--labels-key`` or ``--reference-layer`` the reference lacks, from the files' metadata,
    before the data are read: the model refused a typo only after reading them."""
    columns, layers = _input_names(path) or (None, None)
    for name in _INPUT_COLUMNS if columns is not None else ():
        key = getattr(args, name, None)
        if key is not None and args.model not in REFERENCE_MODELS and key not in columns:
            raise InputError(
                _not_among(f"--{name.replace('_', '-')}", key, "a column of adata.obs", columns)
            )
    if args.layer is not None and layers is not None and args.layer not in layers:
        raise InputError(_not_among("--layer", args.layer, "in adata.layers", layers, "layers"))
    reference = None if args.reference is None else _input_names(Path(args.reference))
    if reference is not None:
        given, (columns, layers) = columns or [], reference
        _check_labels_key(args, columns, given)
        if args.reference_layer is not None and args.reference_layer not in layers:
            raise InputError(
                _not_among(
                    "--reference-layer",
                    args.reference_layer,
                    "in reference.layers",
                    layers,
                    "layers",
                )
            )


def _not_among(flag: str, key: str, where: str, names: list, kind: str = "columns") -> str:
    """The refusal of ``flag key``, which names none of ``names`` (a file's obs columns or
    layers), with the closest of them, as the Python API's messages give it.

    Examples
    --------
    >>> print(_not_among("--layer", "count", "in adata.layers", ["counts"], "layers"))
    --layer 'count' is not in adata.layers; available layers: ['counts'] (did you mean 'counts'?).
    >>> print(_not_among("--batch-key", "batch", "a column of adata.obs", ["_scvi_batch", "donor"]))
    --batch-key 'batch' is not a column of adata.obs; available columns: ['donor'].
    >>> print(_not_among("--layer", "counts", "in adata.layers", [], "layers"))
    --layer 'counts' is not in adata.layers: the file has no layers; drop --layer to read X.
    """
    if kind == "columns":  # scvi-tools' bookkeeping of a file set up in Python: not the user's
        names = [name for name in names if not str(name).startswith(SCVI_PREFIX)]
    if not names and kind == "layers":  # "available layers: []" said nothing of what to do
        return f"{flag} {key!r} is not {where}: the file has no layers; drop {flag} to read X."
    hint = did_you_mean(key, names)
    return f"{flag} {key!r} is not {where}; available {kind}: {short_repr(names, 30, kind)}" + (
        f" ({hint})." if hint else "."
    )


def _check_labels_key(args: argparse.Namespace, columns, input_columns=()) -> None:
    """Refuse a ``--labels-key`` the reference's obs ``columns`` lack; where INPUT's
    (``input_columns``) hold it, the two files were likely given the other way round."""
    labels_key = args.labels_key or "cell_type"
    if labels_key not in columns:
        swapped = (
            f" INPUT's obs holds {labels_key!r}: INPUT is the spots and --reference the "
            "labelled single cells; were the two files given the other way round?"
            if labels_key in input_columns
            else ""
        )
        raise InputError(
            _not_among("--labels-key", labels_key, "a column of the reference's obs", columns)
            + swapped
        )


def _input_names(path: Path) -> tuple[list[str], list[str]] | None:
    """INPUT's obs columns and layers, from the file's metadata; ``None`` where they cannot be
    read so (not an AnnData file: its read reports why)."""
    try:
        if path.is_dir():
            import zarr

            return _group_names(zarr.open_group(path, mode="r"))
        with h5py.File(path, "r") as file:
            return _group_names(file)
    except Exception:  # noqa: BLE001
        return None


def _group_names(group) -> tuple[list[str], list[str]] | None:
    columns = group["obs"].attrs.get("column-order")
    if columns is None:  # not anndata's encoding of a data frame
        return None
    layers = list(group["layers"]) if "layers" in group else []
    return [str(c) for c in columns], [str(layer) for layer in layers]


def read_reference(args: argparse.Namespace) -> ad.AnnData | None:
    """The ``--reference`` AnnData, with its ``--labels-key`` column checked (``None`` when the
    model takes no reference)."""
    if args.model not in REFERENCE_MODELS:
        return None
    try:
        reference = ad.read_h5ad(args.reference)
    except (OSError, TypeError, KeyError) as err:  # KeyError, TypeError: HDF5, not AnnData
        raise InputError(f"cannot read --reference {str(args.reference)!r}: {err}") from err
    _check_labels_key(args, reference.obs.columns)
    refuse_minified_file(reference, f"--reference {str(args.reference)!r}")
    return reference


def refuse_minified_file(adata: ad.AnnData, what: str) -> None:
    """Refuse a file scvi-tools' ``minify_adata`` emptied (its counts replaced by zeros), naming
    the file: the models' own refusal tells a Python user to read the file again, which a
    file written minified does not help (and a minified --reference was read as one without
    counts, told to check its layer or that it shares no gene)."""
    from deltavae._checks import MINIFY_KEY

    kind = adata.uns.get(MINIFY_KEY)
    if kind is not None:
        raise InputError(
            f"{what} was minified by scvi-tools (minify_adata; uns[{MINIFY_KEY!r}] = "
            f"{str(kind)!r}): its counts were dropped, and deltavae's models read the counts. "
            "Pass the file written before minify_adata."
        )


def model_options(model_cls: type, args: argparse.Namespace) -> dict[str, dict]:
    """The model arguments the command line gives, by where they go: ``from_reference``
    (``"reference"``), or ``setup_anndata`` (``"setup"``) and the class (``"init"``). Options the
    model does not take are refused here, before anything is read."""
    given = {name: getattr(args, name, None) for name in _MODEL_OPTIONS}
    what = f"--model {args.model}"
    if given["unlabeled_category"] is not None and given["labels_key"] is None:
        raise InputError(
            "--unlabeled-category names the label of unlabelled cells in --labels-key; pass "
            "--labels-key too, or drop --unlabeled-category."
        )
    takes_weight = "classifier_weight" in inspect.signature(model_cls).parameters
    if given["classifier_weight"] is not None and given["labels_key"] is None and takes_weight:
        raise InputError(
            "--classifier-weight weighs the labels of --labels-key; pass --labels-key too, "
            "or drop --classifier-weight."
        )
    if args.model in REFERENCE_MODELS:
        build = inspect.signature(model_cls.from_reference).parameters
        if "seed" in build:  # the reference's states (k-means) are drawn with it
            given["seed"] = args.seed
        # from_reference passes the class's own arguments (--n-latent) on to the class.
        passed_on = {k: given.pop(k) for k in list(given) if k not in build}
        options = _options_for(model_cls.from_reference, what, _models_taking, **given)
        if options.get("n_markers") == "all":  # every shared gene
            options["n_markers"] = None
        init = _options_for(model_cls, what, _models_taking, **passed_on)
        return {"reference": {**options, **init}}
    setup_names = ("layer", "batch_key", "condition_key", "sample_key", "labels_key")
    setup_names += ("unlabeled_category",)
    setup = {name: given.pop(name) for name in setup_names}
    return {
        "setup": _options_for(model_cls.setup_anndata, what, _models_taking, **setup),
        "init": _options_for(model_cls, what, _models_taking, **given),
    }


def _models_taking(name: str) -> list[str]:
    """The ``--model`` names that take the argument ``name``: in ``from_reference`` or the
    class for the models built from a reference, else in ``setup_anndata`` or the class (as
    :func:`model_options` passes them).

    Examples
    --------
    >>> _models_taking("labels_key")
    ['cgmdvae', 'nmfdeconv', 'imputer']
    """

    def takes(model: str, cls: type) -> bool:
        build = cls.from_reference if model in REFERENCE_MODELS else cls.setup_anndata
        return any(name in inspect.signature(fn).parameters for fn in (build, cls))

    return [model for model, cls in MODELS.items() if takes(model, cls)]


def build_model(model_cls: type, adata: ad.AnnData, reference, options: dict[str, dict]):
    """Set ``adata`` up and build the model with the arguments of :func:`model_options`."""
    if "reference" in options:
        return model_cls.from_reference(adata, reference=reference, **options["reference"])
    model_cls.setup_anndata(adata, **_typed_unlabeled(adata, options["setup"]))
    return model_cls(adata, **options["init"])


def _typed_unlabeled(adata: ad.AnnData, setup: dict) -> dict:
    """``--unlabeled-category`` as the labels column holds it: a flag is text, so ``-1``
    in a column of integers is read as that integer (Python callers pass it typed)."""
    value, key = setup.get("unlabeled_category"), setup.get("labels_key")
    if not isinstance(value, str) or key not in adata.obs:
        return setup
    column = adata.obs[key]
    held = column.cat.categories if hasattr(column, "cat") else column.dropna().unique()
    typed = [v for v in held if not isinstance(v, str) and str(v) == value]
    return {**setup, "unlabeled_category": typed[0]} if typed else setup


@contextlib.contextmanager
def setup_warnings(args: argparse.Namespace):
    """Setting a model up, with its warnings as a command-line user acts on them: the spatial
    models' all-zero spots are left to their results' own warning (which says what their
    weights mean), and scvi-tools' CSC advice ("safe to cast before model initialization")
    says how to convert the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if args.model in SPATIAL_MODELS:
            warnings.filterwarnings("ignore", message=r"\d+ spots in .* are all zeros")
        yield
    for w in caught:
        message = w.message  # the warning itself: its class may take more than a message
        if str(message).startswith(_CSC_ADVICE):
            message = _csc_advice(args.input, args.layer)
        elif _UNCOUNTED_ADVICE in str(message):
            message = _uncounted_advice(str(message), args.input, args.layer)
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)


#: The start of ``read_lazy``'s note that an .h5ad file's layers are read into memory.
_LAYERS_IN_MEMORY = "read_lazy keeps only X of "


def read_backed(path: Path, layer: str | None, out: str | None = None) -> ad.AnnData:
    """``read_lazy(path)`` for --backed. Its note that the layers of an .h5ad file are read
    into memory (with Python advice) is given only where --layer names one, a model on X
    training from disk, and says what to do in a shell: a store beside ``path`` (another
    name where one is there), and the run on it, whose --out is a store too (``out``'s)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        adata = dv.read_lazy(path)
    for w in caught:
        message = w.message
        if str(message).startswith(_LAYERS_IN_MEMORY):
            if layer is None:
                continue
            store = path.with_suffix(".zarr")
            if store.exists():  # kept: write_zarr would replace it
                store = path.with_name(f"{path.stem}_from_h5ad.zarr")
            message = (
                f"--backed keeps only X of {str(path)!r} on disk (an .h5ad file's layers are "
                f"read into memory): --layer {layer} is in memory and the model trains from "
                "memory. To train from disk, put the counts in X and drop --layer, or convert "
                "the file once to a zarr store, whose layers stay on disk when sparse (a dense "
                "layer there is refused; this makes it a CSR matrix): "
                + python_command(
                    f"import anndata, scipy.sparse as sp; a = anndata.read_h5ad({str(path)!r}); "
                    f"a.layers[{layer!r}] = sp.csr_matrix(a.layers[{layer!r}]); "
                    f"a.write_zarr({str(store)!r})"
                )
                + f", then run deltavae fit on {str(store)!r} with --backed and a store as "
                f"--out ({str(Path(out or 'OUTPUT').with_suffix('.zarr'))!r})."
            )
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)
    return adata


def renamed_for_writing(args: argparse.Namespace, adata: ad.AnnData, reference) -> list[str]:
    """Replace, before training, the "/" of the names that would become column names in the
    output file (anndata >= 0.13 cannot write them to .h5ad, zarr cannot now): the reference's
    cell types (the columns of obsm['proportions']), the reference genes the imputer imputes
    (of obsm['imputed']), and the input's own obs columns and obsm tables, which the output
    holds again (not with --backed, whose output is a copy of the input file; the options
    naming a renamed column, ``--condition-key``, name it renamed). Refused where the new name
    is already another's. Returns what was renamed, as notes for the report.

    A shell user gets a file that loads back as written, its names said, rather than a run
    that trains and then fails at the write, or a file an update of anndata cannot write.
    """
    from deltavae._slashes import renamed_names, renamed_obsm_columns

    notes = []
    try:
        if reference is not None:
            key = args.labels_key or "cell_type"
            column = reference.obs[key].astype("category")
            renames = renamed_names(column.cat.categories, f"--labels-key {key!r} cell types")
            if renames:
                reference.obs[key] = column.cat.rename_categories(lambda c: renames.get(str(c), c))
                notes.append(f"cell types renamed in the output: {_pairs(renames)}")
        if reference is not None and args.model in IN_MEMORY_ONLY:  # the imputer
            genes = reference.var_names.astype(str)
            imputed = genes[~genes.isin(adata.var_names.astype(str))]
            among = [*genes, *adata.var_names.astype(str)]
            renames = renamed_names(imputed, "reference genes to impute", among)
            if renames:
                reference.var_names = [renames.get(g, g) for g in genes]
                notes.append(f"genes renamed in obsm['imputed']: {_pairs(renames)}")
        if not args.backed:
            notes += _renamed_obs_columns(args, adata)
            for obsm_key, renames in renamed_obsm_columns(adata).items():
                notes.append(
                    f"columns of the input's obsm[{obsm_key!r}] renamed: {_pairs(renames)}"
                )
    except ValueError as err:  # a renamed name is already another's
        raise InputError(
            f"{err} Nothing was trained: rename them in the file, and run again."
        ) from err
    why = "('/' cannot be written in a column name of an .h5ad file)"
    return [f"{note} {why}" for note in notes]


def _renamed_obs_columns(args: argparse.Namespace, adata: ad.AnnData) -> list[str]:
    """The input's obs columns named with "/" renamed, and the options naming them (a CGMDVAE's
    conditions are recorded in uns under their column's name, read back nested otherwise)."""
    from deltavae._slashes import renamed_names

    renames = renamed_names(adata.obs.columns, "the input's obs columns")
    if not renames:
        return []
    adata.obs = adata.obs.rename(columns=renames)
    options = [o for o in _INPUT_COLUMNS if o != "labels_key" or args.model not in REFERENCE_MODELS]
    moved = []
    for option in options:
        if getattr(args, option, None) in renames:
            setattr(args, option, renames[getattr(args, option)])
            moved.append(f"--{option.replace('_', '-')} {getattr(args, option)!r}")
    named = f" (so {', '.join(moved)})" if moved else ""
    return [f"obs columns of the input renamed: {_pairs(renames)}{named}"]


def _pairs(renames: dict[str, str]) -> str:
    shown = [f"{old!r} -> {new!r}" for old, new in list(renames.items())[:5]]
    return ", ".join(shown) + (f" and {len(renames) - 5} more" if len(renames) > 5 else "")
