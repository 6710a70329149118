"""``deltavae fit --help``: --early-stopping said it counts "after the KL warm-up" for
nmfdeconv too, which trains without one, and --n-latent gave every default but the
imputer's."""

import argparse
import inspect
import re

import deltavae as dv
from deltavae.cli import build_parser


def _option(flag: str) -> str:
    """The help of ``deltavae fit``'s ``flag``, on one line."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = sub.choices["fit"].format_help()
    found = re.search(rf"\n  {flag}\b(.*?)\n  -", text, flags=re.DOTALL)
    return " ".join(found[1].split())


def test_early_stopping_help_leaves_nmfdeconv_out_of_the_warm_up():
    said = _option("--early-stopping")
    assert "after the KL warm-up of zinbvae, cgmdvae and archetypes" in said, said
    assert "nmfdeconv, which has none: from the first epoch" in said, said
    # As the models train: NMFDeconv with no KL warm-up, the others with one.
    source = inspect.getsource(dv.model.NMFDeconv.train)
    assert 'kwargs.setdefault("n_epochs_kl_warmup", None)' in source


def test_n_latent_help_gives_the_imputers_default():
    said = _option("--n-latent")
    default = inspect.signature(dv.model.SpatialImputer).parameters["n_latent"].default
    assert f"imputer {default}, read with --design latent only" in said, said


def test_early_stopping_help_gives_each_models_default():
    """--early-stopping said "[off: train all --epochs]" and, in the same help, "cgmdvae stops
    so by default", with no flag to turn CGMDVAE's early stopping off."""
    from deltavae._cli_models import MODELS, _train_default
    from deltavae.train._stopping import AUTO_PATIENCE

    said = _option("--early-stopping, --no-early-stopping")
    default = said[said.rindex("[") :]
    on = [name for name, cls in MODELS.items() if _train_default(cls, "early_stopping") == "auto"]
    off = [name for name, cls in MODELS.items() if _train_default(cls, "early_stopping") is False]
    assert on == ["cgmdvae"] and len(on) + len(off) == len(MODELS)
    assert "on for cgmdvae where cells are held out (--train-size below 1)" in default, default
    assert f"after {AUTO_PATIENCE} validations without improvement" in default, default
    assert "off for zinbvae, nmfdeconv, archetypes and imputer]" in default, default
    assert "--no-early-stopping trains all --epochs" in said, said
    parse = build_parser().parse_args
    argv = ["fit", "in.h5ad", "--model", "cgmdvae", "--out", "o.h5ad"]
    assert parse(argv).early_stopping is None  # the model's default
    assert parse([*argv, "--early-stopping"]).early_stopping is True
    assert parse([*argv, "--no-early-stopping"]).early_stopping is False


def test_fit_help_names_both_keys_of_the_spots_coordinates():
    """The help said the weights are drawn on obsm['spatial'] only, while fit draws the
    coordinates of obsm['X_spatial'] too (scanpy's name for them)."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = " ".join(sub.choices["fit"].format_help().split())
    assert "(obsm['spatial'], or obsm['X_spatial'] as scanpy names them)" in text, text
    import anndata as ad
    import numpy as np

    from deltavae._cli_report import has_coordinates

    assert has_coordinates(ad.AnnData(np.ones((2, 1)), obsm={"X_spatial": np.ones((2, 2))}))
