"""What ``save`` and ``load`` check before they touch a file: ``load``'s folder, AnnData and
keywords (in the wording every method uses), ``save``'s keywords (one neither scvi-tools'
``save`` nor ``AnnData.write_h5ad`` takes is refused), and a model fit to save (parameters not
finite refused; a diverged training, or a query model's reference's, warned); and what the
reader checks of a saved file: its records as written, and a save of another class named
with the call that reads it."""

from __future__ import annotations

import importlib
import inspect
import os
import zipfile

import scvi.model as scvi_models
import torch
from anndata import AnnData
from scvi.model.base import BaseModelClass

from .._anndata_or_folder import check_anndata, check_path
from .._close_names import did_you_mean
from ..train._convergence import NotConvergedWarning
from ..train._divergence import trained_state
from ._read_calls import load_call
from ._scvi_glue import drop_scvi_no_ops, refuse_scvi_names
from ._validation import warn_user


def check_load_arguments(cls, dir_path, adata, kwargs: dict) -> tuple[str, AnnData | None]:
    """``dir_path`` (``~`` expanded) and ``adata`` checked as a folder and an AnnData (or
    None) for ``cls.load(dir_path, adata, **kwargs)``, worded as every method words them
    (:func:`~deltavae._anndata_or_folder.argument_advice`): a file name, a table or the
    arguments swapped failed with "'str' object has no attribute 'var_names'" or "expected
    str, bytes or os.PathLike object, not AnnData", scvi-tools' ``datamodule`` with
    "__init__() got an unexpected keyword argument"."""
    drop_scvi_no_ops(kwargs, "load")  # datamodule=None, scvi-tools' default: runs
    refuse_scvi_names("load", cls.__name__, kwargs)
    name = f"{cls.__name__}.load"
    known = [p for p in inspect.signature(BaseModelClass.load).parameters if p != "adata"][1:]
    unknown = [key for key in kwargs if key not in known]
    if unknown:  # Python named scvi-tools' BaseModelClass.load(), not the model's
        hint = did_you_mean(unknown[0], known, end=" ")
        raise TypeError(
            f"{name}() got an unexpected keyword argument {unknown[0]!r} ("
            f"{hint}load takes dir_path, adata, "
            f"{', '.join(k for k in known if k != 'datamodule')})."
        )
    call = f"{name}(dir_path, adata)"  # the arguments' order, in every message of a swap
    if adata is False:  # scvi-tools 1.4: load without data ("got bool. Wrap a table ...")
        raise TypeError(
            f"{name}(dir_path, adata=False) loads a model without an AnnData in scvi-tools; a "
            f"deltavae model reads the AnnData it is loaded with. Pass the training "
            f"{'spots' if getattr(cls, '_rows_are_spots', False) else 'cells'}, or adata=None "
            "for the AnnData saved with the model (save(..., save_anndata=True))."
        )
    dir_path, adata = check_path(dir_path, call), check_anndata(adata, call=call)
    if adata is not None and adata.n_obs == 0:  # scvi-tools: "adata or registry must be provided"
        unit = "spot" if getattr(cls, "_rows_are_spots", False) else "cell"
        raise ValueError(
            f"adata holds no {unit}s (0 observations; an empty selection?): the model reads "
            f"the AnnData it is loaded with. Pass {unit}s, {call}, or adata=None for the "
            "AnnData saved with the model."
        )
    return dir_path, adata


def check_save_keywords(kwargs: dict) -> None:
    """Refuse a keyword that neither scvi-tools' ``save`` nor ``AnnData.write_h5ad`` (which
    scvi-tools hands the rest) takes: without ``save_anndata=True`` nothing reads them, so a
    misspelt ``save_anndate=True`` saved the model without its AnnData, silently.

    Examples
    --------
    >>> check_save_keywords({"prefix": "p_", "compression": "gzip"})
    >>> check_save_keywords({"save_anndate": True})
    Traceback (most recent call last):
    ...
    TypeError: save() got an unexpected keyword argument 'save_anndate' (did you mean ...
    """
    known = ["dir_path", "overwrite", "save_anndata"]
    for method in (BaseModelClass.save, AnnData.write_h5ad):
        known += [
            name
            for name, p in inspect.signature(method).parameters.items()
            if p.kind is not p.VAR_KEYWORD and name not in ("self", "filename")
        ]
    known = list(dict.fromkeys(known))
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known, end=" ")
        raise TypeError(
            f"save() got an unexpected keyword argument {unknown[0]!r} ("
            f"{hint}save takes "
            f"{', '.join(known[1:])})."
        )


def check_fit_to_save(model) -> None:
    """Refuse to save parameters that are not finite (every result of them would be NaN), and
    warn before saving a model whose last training diverged, or a query model's reference's
    (kept: the last finite parameters, which ``load`` and every read-out say may be far from
    a fit)."""
    bad = [
        name
        for name, value in trained_state(model.module).items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise ValueError(
            f"The model's parameters {bad[:5]} hold NaN or infinite values: every result of "
            "them would be NaN, so it is not saved. Build the model anew and train it again, "
            "with a lower learning rate (train(lr=...)) if training diverged."
        )
    if getattr(model, "diverged_", None):
        warn_user(
            f"Saving a model whose last training diverged ({model.diverged_}): it keeps the "
            "last parameters that gave a finite loss, which may be far from a fit (loading it "
            "says so again). Train a new model with a lower learning rate (train(lr=...)) and "
            "save that one instead.",
            NotConvergedWarning,
        )
    if getattr(model, "reference_diverged_", None):  # a query model's frozen weights
        warn_user(
            "Saving a query model whose reference's last training diverged "
            f"({model.reference_diverged_}): it keeps that run's last finite weights, frozen, "
            "which may be far from a fit (loading it says so again). Map the query onto a "
            "reference trained anew with a lower learning rate and save that one instead.",
            NotConvergedWarning,
        )


def check_records(model_file: str) -> None:
    """Refuse a model file whose records differ from the CRC-32 checksums its zip archive
    keeps of them (``torch.save`` writes them, ``torch.load`` does not read them): the
    parameters' own checksums (``weights_digest_``) cover the parameters only, so a bit
    changed in the pickled attributes (setup, split, history, the typicality and library
    records, those checksums themselves) loaded silently, with other predicted labels or
    sampled counts, or failed inside pickle or pandas (``UnicodeDecodeError``, ...).

    Raises :class:`zipfile.BadZipFile` naming the record (the reader words it as a damaged
    file); a file that is no zip archive (truncated before its directory) is left to torch.
    """
    if not zipfile.is_zipfile(model_file):
        return
    with zipfile.ZipFile(model_file) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(
            f"its record {bad!r} does not match the CRC-32 checksum saved with it: changed "
            "after saving"
        )


def other_class_refusal(path: str, model_name: str, cls, use: str) -> str:
    """Why ``cls.<use>`` refuses the save of a ``model_name`` at ``path``, and the call that
    reads it: ``model_name``'s own ``use``, or its ``load`` where it has no such method
    (``ZINBVAE.load_query_data`` of a saved NMFDeconv named ``NMFDeconv.load_query_data``,
    which NMFDeconv lacks); scvi-tools' class for a model scvi-tools saved (``SCVI.load`` was
    read as deltavae's).

    Examples
    --------
    >>> from deltavae.model import ZINBVAE
    >>> other_class_refusal("m", "CGMDVAE", ZINBVAE, "load")
    "'m' is a CGMDVAE model; use CGMDVAE.load, not ZINBVAE.load."
    >>> other_class_refusal("m", "Archetypes", ZINBVAE, "load_query_data")
    "'m' is an Archetypes model, which maps no query: load it with Archetypes.load('m', ...
    """
    first = model_name[:1]
    initial = model_name[1:2].isupper() and first in "FHLMNRSX"  # "an NMFDeconv"
    article = "an" if first in "AEIOU" or initial else "a"
    other = getattr(importlib.import_module("deltavae.model"), model_name, None)
    said = f"{path!r} is {article} {model_name} model"
    if other is None and hasattr(scvi_models, model_name):  # deltavae has no such class
        method = use if hasattr(getattr(scvi_models, model_name), use) else "load"
        return (
            f"{path!r} holds a model of scvi-tools' {model_name}, not of deltavae: use "
            f"scvi.model.{model_name}.{method}, not {cls.__name__}.{use}."
        )
    if other is not None and not hasattr(other, use):
        saved_data = os.path.isfile(os.path.join(path, "adata.h5ad"))
        what = "maps no query" if "query" in use else f"has no {use}"
        return (
            f"{said}, which {what}: load it with {load_call(other, path, saved_data=saved_data)}"
            f", not {cls.__name__}.{use}."
        )
    return f"{said}; use {model_name}.{use}, not {cls.__name__}.{use}."
