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
