"""Every data argument of the public functions (plots, metrics, datasets, the file helpers)
refuses what is not of its documented type by name: a TypeError or ValueError whose message
names the argument. numpy's "float() argument must be a string or a real number, not 'dict'"
(eight metrics, ``cluster_entropy``), "'csr_matrix' object has no attribute 'obs_names'"
(``pseudo_spots``), pathlib's "expected str, bytes or os.PathLike object, not AnnData"
(``read_lazy``, ``write_results_to_store``) named neither the argument nor what it takes, and
``pl.history`` of a table said "The model has no training history; train it first"."""

import inspect

import matplotlib
import numpy as np
import pandas as pd
import pytest

import deltavae as dv

matplotlib.use("Agg")


class _Foreign:
    """An object of no type any argument takes."""

    def __repr__(self):
        return "<foreign>"


def _valid_calls(tmp_path) -> dict:
    """A call of every public function that takes a data argument, with valid data."""
    table = pd.DataFrame(
        np.random.default_rng(0).dirichlet([1, 1, 1], size=6), columns=["a", "b", "c"]
    )
    labels = np.array([0, 0, 1, 1, 2, 2])
    cells = dv.datasets.synthetic_counts(n_cells=40, n_genes=8, n_clusters=2, seed=0)
    probs = table.to_numpy()
    store = tmp_path / "cells.zarr"
    cells.write_zarr(store)
    return {
        "pl.cluster_entropy": {"probs": probs},
        "pl.perturbation_scatter": {"predicted": cells, "observed": cells, "show": False},
        "pl.history": {"model": {"elbo_train": pd.DataFrame({"elbo_train": [3.0, 2.0]})}},
        "pl.archetype_elbow": {"adata_or_model": cells, "show": False},
        "pl.embedding": {"adata": cells, "basis": "umap", "show": False},
        "pl.cluster_composition": {
            "adata": cells,
            "cluster_key": "cluster",
            "labels_key": "condition",
            "show": False,
        },
        "pl.cluster_probabilities": {"adata": cells, "show": False},
        "pl.spatial_proportions": {"adata": cells, "show": False},
        **{
            f"metrics.{name}": {"labels_true": labels, "labels_pred": labels}
            for name in ("ari", "nmi", "purity", "clustering_accuracy", "cluster_scores")
        },
        **{
            f"metrics.{name}": {"true": table, "pred": table}
            for name in (
                "deconvolution_scores",
                "imputation_scores",
                "jsd",
                "per_type_pcc",
                "presence_aupr",
                "rmse",
                "ssim",
            )
        },
        "metrics.log_normalize": {"counts": cells.X},
        "metrics.matched_profile_correlation": {
            "true_profiles": probs.T,
            "pred_profiles": probs.T,
        },
        "metrics.mean_expression_r2": {"predicted": cells, "observed": cells},
        "datasets.pseudo_spots": {"reference": cells, "labels_key": "cluster", "n_spots": 4},
        "datasets.spatial_reference_pair": {"name": "cerebellum"},
        "read_lazy": {"path": store},
        "write_results_to_store": {"adata": cells, "keys": ["obs/cluster"], "path": store},
    }


def _function(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(getattr(dv, module) if module else dv, attr)


def _data_arguments(name: str, func) -> list[str]:
    """The arguments that hold data (no keys, names or flags)."""
    keys = {"cluster_key", "labels_key", "keys", "name"}
    required = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    return [arg for arg in required if arg not in keys]


def test_every_public_function_with_data_arguments_is_listed(tmp_path):
    """A new function joins the check below (or says here why it takes no data)."""
    listed = set(_valid_calls(tmp_path))
    public = {
        f"{module}.{name}"
        for module in ("pl", "metrics", "datasets")
        for name in getattr(dv, module).__all__
        if any(
            p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
            for p in inspect.signature(getattr(getattr(dv, module), name)).parameters.values()
        )
    } | {"read_lazy", "write_results_to_store"}
    assert public == listed


# Fixed ids: repr of a set follows the string hash, which differs between pytest-xdist's
# workers (PYTHONHASHSEED), and workers that collect different test ids refuse to run.
@pytest.mark.parametrize(
    "foreign", [_Foreign(), {"a", "b"}, "cells.h5ad"], ids=["foreign", "set", "path"]
)
def test_data_arguments_of_another_type_are_refused_by_name(tmp_path, foreign):
    wrong = []
    for name, kwargs in _valid_calls(tmp_path).items():
        func = _function(name)
        for arg in _data_arguments(name, func):
            if arg == "path" and isinstance(foreign, str):
                continue  # a path is a path: a missing file is another check's
            try:
                func(**{**kwargs, arg: foreign})
            except (TypeError, ValueError) as error:
                if arg not in str(error) and f"{name.split('.')[-1]} takes" not in str(error):
                    wrong.append(f"{name}({arg}=...): {type(error).__name__}: {error}"[:300])
            except Exception as error:  # noqa: BLE001 - any other kind is the defect
                wrong.append(f"{name}({arg}=...): {type(error).__name__}: {error}"[:300])
            else:
                wrong.append(f"{name}({arg}={foreign!r}): accepted")
    assert not wrong, "\n".join(wrong)


def test_a_table_outside_a_model_is_not_told_of_the_models_genes(tmp_path):
    """pseudo_spots and write_results_to_store, given a table, were told to wrap it "with the
    model's genes as var_names", though no model is involved; the models' advice keeps it."""
    table = pd.DataFrame(np.ones((3, 2)), columns=["g0", "g1"])
    for call in (
        lambda: dv.datasets.pseudo_spots(table),
        lambda: dv.write_results_to_store(table, ["X_latent"], tmp_path / "cells.zarr"),
    ):
        with pytest.raises(TypeError, match="AnnData.X., with the gene names as var_names") as e:
            call()
        assert "model" not in str(e.value)
    with pytest.raises(TypeError, match="AnnData.X., with the model's genes as var_names"):
        dv.model.ZINBVAE.setup_anndata(table)
