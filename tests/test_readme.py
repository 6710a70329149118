"""The README's example runs as written (with fewer epochs)."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed package)")
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    assert "model.train()" in code
    code = code.replace("model.train()", "model.train(max_epochs=2)")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    adata, stim = namespace["adata"], namespace["stim"]
    assert "cgmdvae_cluster" in adata.obs and "X_umap" in adata.obsm
    assert (stim.obs["condition"] == "stim").all()
    assert stim.n_obs == int((adata.obs["condition"] == "ctrl").sum())


def test_readme_scanpy_session_runs():
    """The scanpy session's block: PBMC 3k from the package, counts kept in a layer before
    normalize_total, the latent written where scanpy's neighbors read it."""
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed package)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "dv.datasets.pbmc3k()" in block)
    assert "vae.train()" in code
    code = code.replace("vae.train()", "vae.train(max_epochs=2)")
    namespace: dict = {}
    exec(
        compile("import deltavae as dv\nimport scanpy as sc\n" + code, str(README), "exec"),
        namespace,
    )
    adata = namespace["adata"]
    assert adata.n_obs == 2638 and adata.n_vars == 2000
    assert adata.obsm["X_zinbvae"].shape == (2638, 10)
    assert "leiden" in adata.obs and "X_umap" in adata.obsm


def test_readme_marker_block_runs():
    """The block after the scanpy session: the model's differential expression written where
    scanpy's marker plots read it (``key_added``), drawn by ``rank_genes_groups_dotplot``.
    On a small session of its own (the one above, 2,638 cells, takes its time)."""
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed package)")
    import warnings

    import numpy as np
    import scanpy as sc

    import deltavae as dv

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "differential_expression(" in block)
    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=60, n_clusters=3, seed=0)
    adata.X = adata.layers["counts"].toarray()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=10)  # the dendrogram's input (else scanpy's PCA, with a warning)
    adata.obs["leiden"] = adata.obs["cluster"].astype(str).astype("category")
    dv.model.ZINBVAE.setup_anndata(adata, layer="counts")
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two epochs: too few to converge, said
        vae.train(max_epochs=2, enable_progress_bar=False)
    namespace = {"adata": adata, "vae": vae, "sc": sc}
    exec(compile(code, str(README), "exec"), namespace)
    table = adata.uns["rank_genes_groups"]
    assert table["params"]["groupby"] == "leiden"
    assert set(table["names"].dtype.names) == {"0", "1", "2"}
    assert np.isnan(table["pvals"]["0"]).all()  # not tests, as the README says
    assert len(namespace["de"]) == 3 * adata.n_vars  # one row per gene and group
