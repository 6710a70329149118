"""scanpy's and scvi-tools' keywords for what deltavae names otherwise (``random_state`` for
``seed``, ``groupby`` for ``cluster_key``): refused before the call with the keyword to pass,
where Python's bare "unexpected keyword argument" named neither it nor what to do. No model
is built or trained: each refusal comes before the function reads anything."""

import inspect
import re

import anndata as ad
import numpy as np
import pytest
from sphinx.util.inspect import signature, stringify_signature

import deltavae as dv

#: (public path, scanpy's or scvi-tools' keyword, ours): every table of ``foreign_keywords``.
TABLE = [
    ("model.CGMDVAE.sample", "random_state", "seed"),
    ("model.CGMDVAE.sample", "n_samples", "n_cells"),
    ("model.CGMDVAE.translate", "random_state", "seed"),
    ("model.CGMDVAE.predict_perturbation", "random_state", "seed"),
    ("model.ZINBVAE.predict_perturbation", "random_state", "seed"),
    ("model.NMFDeconv.marker_genes", "groupby", "labels_key"),
    ("model.NMFDeconv.marker_genes", "n_genes", "n_markers"),
    ("model.NMFDeconv.signatures_from_reference", "groupby", "labels_key"),
    ("model.NMFDeconv.from_reference", "n_genes", "n_markers"),
    ("model.SpatialImputer.from_reference", "random_state", "seed"),
    ("model.SpatialImputer.cross_validate", "random_state", "seed"),
    ("datasets.pseudo_spots", "random_state", "seed"),
    ("datasets.synthetic_counts", "random_state", "seed"),
    ("datasets.synthetic_blobs", "random_state", "seed"),
    ("datasets.synthetic_blobs", "n_observations", "n_cells"),
    ("datasets.synthetic_blobs", "n_variables", "n_features"),
    ("datasets.synthetic_blobs", "n_centers", "n_clusters"),
    ("datasets.convex_mixtures", "random_state", "seed"),
    ("pl.cluster_composition", "groupby", "cluster_key"),
    ("pl.cluster_probabilities", "color", "clusters"),
    ("pl.spatial_proportions", "color", "columns"),
    ("train.MixtureInitialization", "random_state", "seed"),
    ("model.Archetypes", "n_comps", "n_pcs"),
    ("model.ZINBVAE.setup_anndata", "groupby", "batch_key"),
    ("model.ZINBVAE.setup_anndata", "key", "batch_key"),
    ("model.ZINBVAE.setup_anndata", "batch", "batch_key"),
    ("model.ZINBVAE.setup_anndata", "covariates", "categorical_covariate_keys"),
    ("model.CGMDVAE.setup_anndata", "groupby", "labels_key"),
    ("model.CGMDVAE.setup_anndata", "key", "condition_key"),
    ("model.CGMDVAE.setup_anndata", "batch", "condition_key"),
    ("model.CGMDVAE.setup_anndata", "covariates", "condition_key"),
    ("model.Archetypes.setup_anndata", "groupby", "sample_key"),
    ("model.Archetypes.setup_anndata", "key", "sample_key"),
    ("model.Archetypes.setup_anndata", "batch", "sample_key"),
    ("model.Archetypes.setup_anndata", "covariates", None),
    *[
        (f"model.{model}.setup_anndata", foreign, None)
        for model in ("NMFDeconv", "SpatialImputer")
        for foreign in ("groupby", "key", "batch", "covariates")
    ],
    *[
        (f"model.{model}.setup_anndata", foreign, None)
        for model in ("ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer")
        for foreign in ("random_state", "seed")
    ],
    # No keyword of ours takes their place: a sentence says what to do (SAID).
    *[
        (f"model.{model}", foreign, None)
        for model in ("ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer")
        for foreign in ("random_state", "seed")
    ],
]
#: What the refusals no keyword of ours answers say, by the call's path (or last name) and
#: keyword.
SAID = {
    **{
        (model, foreign): "constructor takes no seed: its training is seeded by scvi.settings.seed"
        for model in ("ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer")
        for foreign in ("random_state", "seed")
    },
    **{
        ("setup_anndata", foreign): "setup_anndata registers the data only, and a model takes "
        "no seed: its training is seeded by scvi.settings.seed"
        for foreign in ("random_state", "seed")
    },
    ("setup_anndata", "groupby"): "reads the reference's cell types: ",  # NMFDeconv's too
    **{
        ("setup_anndata", foreign): "takes no batch or covariate (Archetypes takes each spot's "
        "slide as sample_key)"
        for foreign in ("key", "batch", "covariates")
    },
    ("model.Archetypes.setup_anndata", "covariates"): "one covariate is each spot's slide (or "
    "batch): sample_key='slide'",
}


def _public(path: str):
    obj = dv
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _public_tables() -> set[tuple[str, str, str]]:
    """Every (path, foreign, ours) the public API's functions and methods refuse."""
    found = set()
    for sub in ("model", "datasets", "pl", "metrics", "train"):
        for name in getattr(dv, sub).__all__:
            obj = getattr(getattr(dv, sub), name)
            members = [(a, getattr(obj, a)) for a in dir(obj)] if inspect.isclass(obj) else []
            for attr, member in [("", obj), *members]:
                if attr.startswith("_"):
                    continue
                if inspect.isclass(member):  # its constructor's
                    member = vars(member).get("__init__")
                path = f"{sub}.{name}" + (f".{attr}" if attr else "")
                for foreign, ours in getattr(member, "foreign_keywords", {}).items():
                    keyword = ours.partition(": ")[0]
                    found.add((path, foreign, keyword if keyword.isidentifier() else None))
    return found


def test_the_table_is_every_refusal_of_the_public_api():
    assert _public_tables() == set(TABLE)


@pytest.mark.parametrize(("path", "foreign", "ours"), TABLE)
def test_a_foreign_keyword_is_refused_naming_ours(path, foreign, ours):
    """It was Python's bare "got an unexpected keyword argument 'random_state'" (and for
    SpatialImputer.from_reference, "did you mean 'n_states'?")."""
    call = path.rsplit(".", 1)[-1]  # a method's named with its class's: Model.sample(...)
    with pytest.raises(TypeError, match=rf"{call}\(\) got .* '{foreign}': ") as err:
        _public(path)(**{foreign: 7})
    if ours is None:
        assert SAID.get((path, foreign), SAID.get((call, foreign))) in str(err.value)
    else:
        assert f"{foreign}= is {ours}= here" in str(err.value)
        assert f"{call}(..., {ours}=7)" in str(err.value)


@pytest.mark.parametrize("path", sorted({path for path, _, _ in TABLE}))
def test_signatures_sphinx_shows_are_the_functions_own(path):
    *owner, name = path.split(".")
    owner = _public(".".join(owner))
    member = inspect.getattr_static(owner, name)  # as the class holds it
    member = getattr(member, "__func__", member)  # a staticmethod's, a classmethod's
    member = vars(member)["__init__"] if inspect.isclass(member) else member
    shown = signature(member)
    own = inspect.unwrap(member)
    assert stringify_signature(shown) == stringify_signature(signature(own))
    assert str(member.__doc__).split("\n")[0] == str(own.__doc__).split("\n")[0]  # doc_params'
    for _, foreign, ours in [row for row in TABLE if row[0] == path]:
        assert ours in {*shown.parameters, None} and foreign not in shown.parameters


#: scvi-tools 1.4's setup_anndata keywords, and those one model of ours takes for another's.
SETUP_NAMES = (
    "batch_key",
    "labels_key",
    "layer",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
    "size_factor_key",
    "unlabeled_category",
    "condition_key",
    "sample_key",
)


@pytest.mark.parametrize(
    "model", ["ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer"]
)
def test_every_setup_keyword_a_model_lacks_says_what_it_takes(model):
    """Archetypes.setup_anndata(labels_key=...), NMFDeconv's and SpatialImputer's batch_key,
    size_factor_key, condition_key and others said "see its docstring for the arguments it
    takes", naming nothing of theirs."""
    cls = getattr(dv.model, model)
    takes = inspect.signature(cls.setup_anndata).parameters
    adata = ad.AnnData(np.ones((4, 3), dtype=np.float32))
    for name in [name for name in SETUP_NAMES if name not in takes]:
        with pytest.raises(
            TypeError, match=rf"^{model}.setup_anndata\(\) got .* '{name}': "
        ) as err:
            cls.setup_anndata(adata, **{name: "x"})
        assert "docstring" not in str(err.value)
        said = str(err.value).split(": ", 1)[1]
        assert re.search(r"\w+_key|from_reference|takes no|from its counts", said)
    assert list(adata.obs) == []
