"""scanpy's and scvi-tools' keywords for what deltavae names otherwise (``random_state`` for
``seed``, ``groupby`` for ``cluster_key``): refused before the call with the keyword to pass,
where Python's bare "unexpected keyword argument" named neither it nor what to do. No model
is built or trained: each refusal comes before the function reads anything."""

import inspect

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
    # No keyword of ours takes their place: a sentence says what to do (SAID).
    *[
        (f"model.{model}", foreign, None)
        for model in ("ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer")
        for foreign in ("random_state", "seed")
    ],
]
#: What the refusals no keyword of ours answers say, by the call's last name and keyword.
SAID = {
    **{
        (model, foreign): "constructor takes no seed: its training is seeded by scvi.settings.seed"
        for model in ("ZINBVAE", "CGMDVAE", "Archetypes", "NMFDeconv", "SpatialImputer")
        for foreign in ("random_state", "seed")
    },
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
        assert SAID[call, foreign] in str(err.value)
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
