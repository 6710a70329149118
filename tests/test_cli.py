"""The ``deltavae`` console script: demo, fit, input errors and the installed entry point."""

import subprocess
import sys

import anndata as ad
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import deltavae as dv  # noqa: E402
from deltavae.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def counts_h5ad(tmp_path_factory):
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=40, n_clusters=3, n_conditions=2, seed=1
    )
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2 == 0, "d1", "d2")
    path = tmp_path_factory.mktemp("input") / "counts.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_demo_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "2", "--n-cells", "300", "--n-top-genes", "200"]
    assert main(argv) == 0

    adata = ad.read_h5ad(out / "pbmc3k_zinbvae.h5ad")
    assert adata.shape == (300, 200)
    assert adata.obsm["X_zinbvae"].shape == (300, 10)
    assert adata.obsm["X_umap"].shape == (300, 2)
    assert "leiden" in adata.obs and "cell_type" in adata.obs
    scores = adata.uns["deltavae_demo"]
    for name in ("ari", "nmi"):
        assert -1.0 <= float(scores[name]) <= 1.0
    assert int(scores["epochs"]) == 2
    for name in ("umap_cell_type.png", "umap_leiden.png", "elbo_history.png"):
        assert (out / name).stat().st_size > 1000

    printed = capsys.readouterr().out
    assert "ARI" in printed and "NMI" in printed and "elapsed" in printed
    assert str(out / "pbmc3k_zinbvae.h5ad") in printed


def test_fit_writes_input_plus_latent(counts_h5ad, tmp_path, capsys):
    path, original = counts_h5ad
    out = tmp_path / "nested" / "fitted.h5ad"
    argv = ["fit", str(path), "--model", "zinbvae", "--layer", "counts", "--batch-key", "donor"]
    argv += ["--epochs", "2", "--n-latent", "3", "--out", str(out)]
    assert main(argv) == 0

    fitted = ad.read_h5ad(out)
    assert fitted.obsm["X_zinbvae"].shape == (original.n_obs, 3)
    assert set(original.obs.columns) <= set(fitted.obs.columns)
    assert set(original.layers) <= set(fitted.layers)
    np.testing.assert_array_equal(
        fitted.layers["counts"].toarray(), original.layers["counts"].toarray()
    )
    assert "obsm/X_zinbvae" in capsys.readouterr().out


def test_fit_cgmdvae_writes_clusters(counts_h5ad, tmp_path, capsys):
    path, original = counts_h5ad
    out = tmp_path / "clusters.h5ad"
    argv = ["fit", str(path), "--model", "cgmdvae", "--layer", "counts"]
    argv += ["--condition-key", "condition", "--n-clusters", "3", "--epochs", "3"]
    assert main(argv + ["--out", str(out)]) == 0
    fitted = ad.read_h5ad(out)
    assert fitted.obs["cgmdvae_cluster"].dtype == "category"
    assert fitted.obsm["cgmdvae_cluster_probs"].shape == (original.n_obs, 3)
    assert "obs/cgmdvae_cluster" in capsys.readouterr().out
    # An option the model does not take is refused by name.
    argv = ["fit", str(path), "--model", "cgmdvae", "--batch-key", "donor"]
    assert main(argv + ["--out", str(tmp_path / "x.h5ad")]) == 2
    assert "--batch-key" in capsys.readouterr().err


def test_fit_missing_batch_key_is_a_clean_error(counts_h5ad, tmp_path, capsys):
    path, _ = counts_h5ad
    out = tmp_path / "never.h5ad"
    argv = ["fit", str(path), "--model", "zinbvae", "--batch-key", "sample", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error: ")
    assert "'sample'" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_fit_non_integer_data_is_a_clean_error(tmp_path, capsys):
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=2)
    adata.X = adata.X.toarray() + 0.5
    path = tmp_path / "normalized.h5ad"
    adata.write_h5ad(path)
    argv = ["fit", str(path), "--model", "zinbvae", "--out", str(tmp_path / "never.h5ad")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("deltavae: error: ")
    assert "raw counts" in err
    assert "Traceback" not in err


def test_fit_missing_input_and_bad_usage(tmp_path, capsys):
    argv = ["fit", str(tmp_path / "absent.h5ad"), "--model", "zinbvae", "--out", "x.h5ad"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", "in.h5ad", "--model", "nope", "--out", "x.h5ad"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["demo", "--epochs", "0"]) == 2
    assert main(["demo", "--n-cells", "10", "--out", str(tmp_path)]) == 2
    assert "--n-cells must lie between" in capsys.readouterr().err


def test_version_through_the_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "deltavae.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"deltavae {dv.__version__}"
