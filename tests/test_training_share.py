"""A split that trains on almost nothing: ``train(train_size=0.01)`` (and ``deltavae fit
--train-size 0.01``) trained on 2 of 200 cells and validated on 198, without a word;
scvi-tools refuses only an empty training set. Every model now refuses it, with the
numbers and what to pass."""

import warnings

import pytest

import deltavae as dv
from deltavae.cli import main

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _cells():
    return dv.datasets.synthetic_counts(
        n_cells=200, n_genes=20, n_clusters=2, n_conditions=1, seed=0
    )


def _zinbvae():
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    return dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8), "cell", {}


def _cgmdvae():
    adata = _cells()
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=2, n_hidden=8)
    return model, "cell", {"mixture_init_epoch": None}


def _spots():
    return dv.datasets.convex_mixtures(n_spots=200, n_genes=60, n_archetypes=3, seed=0)


def _nmfdeconv():
    spots = _spots()
    dv.model.NMFDeconv.setup_anndata(spots)
    return dv.model.NMFDeconv(spots, n_components=3), "spot", {}  # its default: 1.0


def _archetypes():
    spots = _spots()
    dv.model.Archetypes.setup_anndata(spots)
    return dv.model.Archetypes(spots, n_archetypes=3), "spot", {}


@pytest.mark.parametrize("build", [_zinbvae, _cgmdvae, _nmfdeconv, _archetypes])
def test_a_training_set_smaller_than_a_minibatch_and_the_validation_is_refused(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the builds' own notes on synthetic data
        model, unit, extra = build()
    said = (
        rf"train_size=0.01 trains on 2 of the 200 {unit}s and validates on 198: fewer "
        rf"{unit}s train than one minibatch \(batch_size=\d+\), too few to learn from\. .*"
        r"pass train_size=0\.99, or leave it out for the default \((0\.9|1\.0)\)\. .* "
        r"pass batch_size=2 or less\."
    )
    with pytest.raises(ValueError, match=said):
        model.train(train_size=0.01, **extra, **TRAIN)
    assert not model.is_trained_
    # On purpose: a minibatch no larger than the training set; or as many train as validate.
    model.train(train_size=0.05, batch_size=10, **extra, **TRAIN)
    assert len(model.train_indices) == 10
    model.train(train_size=0.5, **extra, **TRAIN)
    assert len(model.train_indices) == 100


def test_the_command_line_names_its_flags(tmp_path, capsys):
    path = tmp_path / "cells.h5ad"
    _cells().write_h5ad(path)
    argv = ["fit", str(path), "--model", "zinbvae", "--train-size", "0.01", "--epochs", "1"]
    assert main([*argv, "--no-plots", "--threads", "1", "--out", str(tmp_path / "o.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "--train-size 0.01 trains on 2 of the 200 cells and validates on 198" in err, err
    assert "pass --train-size 0.99" in err and "pass --batch-size 2 or less" in err, err
    assert not (tmp_path / "o.h5ad").exists()
