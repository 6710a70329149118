"""The docstring examples that ``--doctest-modules`` skips, because they train, run as written
on small data: the calls and their arguments are the docstrings', the datasets they load are
subsets, and every ``train`` runs two epochs. What they print is not compared (small data and
two epochs print other numbers); an example that raises is a defect (``g.sample(label="B
cells")`` on a model set up without labels, in ``CGMDVAE.sample``'s example, did).

The names an example uses without defining them (a trained ``vae``, a query model ``q``) are
those its docstring's class example defines, or are built here as the text around them says.
About a minute on one core: in the slow stage."""

import doctest
import importlib
import pkgutil
import re

import anndata
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi

import deltavae as dv

# Examples and short trainings warn (NotConvergedWarning, a query's one-condition reference):
# a warning is no failure of an example.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]

_SKIP = doctest.OPTIONFLAGS_BY_NAME["SKIP"]
_EPOCHS = re.compile(r"max_epochs=\d+")
#: What the examples take as imported, as a user's session has.
_IMPORTS = {"anndata": anndata, "dv": dv, "np": np, "pd": pd, "sc": sc}
_REAL_KANG, _REAL_PBMC = dv.datasets.kang_ifnb, dv.datasets.pbmc3k


def _doctests() -> dict:
    found = {}
    modules = [dv] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(dv.__path__, "deltavae.")
    ]
    for module in modules:
        for test in doctest.DocTestFinder().find(module):
            found.setdefault(test.name, test)
    return found


class _Runner(doctest.DocTestRunner):
    """Collects the examples that raise; printed values are not compared. An example whose
    shown output is the exception it raises (``NotImplementedError: ...``) passes."""

    def __init__(self):
        super().__init__(optionflags=doctest.ELLIPSIS)
        self.errors = []

    def report_failure(self, out, test, example, got):
        pass

    def report_unexpected_exception(self, out, test, example, exc_info):
        if not example.want.startswith(f"{exc_info[0].__name__}:"):
            self.errors.append(f"{test.name}: {example.source.strip()} -> {exc_info[1]!r}"[:400])


class _Examples:
    def __init__(self):
        self.tests = _doctests()
        self.errors = []

    def run(self, name: str, namespace: dict, replace: tuple = ()) -> None:
        """Run the examples of docstring ``name`` in ``namespace``, skipped ones included,
        with two epochs of training, and keep what they define in ``namespace``."""
        test = self.tests[name]
        examples = []
        for example in test.examples:
            source = _EPOCHS.sub("max_epochs=2", example.source).replace(
                ".train()", ".train(max_epochs=2)"
            )
            for old, new in replace:
                source = source.replace(old, new)
            examples.append(doctest.Example(source, example.want, lineno=example.lineno))
        test = doctest.DocTest(
            examples,
            {**test.globs, **_IMPORTS, **namespace},
            name,
            test.filename,
            test.lineno,
            test.docstring,
        )
        runner = _Runner()
        runner.run(test, out=lambda text: None, clear_globs=False)
        namespace.update(test.globs)  # DocTest ran on a copy
        self.errors += runner.errors


def _small(adata, n_obs, n_genes):
    sc.pp.subsample(adata, n_obs=n_obs, random_state=0)
    totals = np.asarray(adata.X.sum(0)).ravel()
    return adata[:, np.sort(np.argsort(-totals)[:n_genes])].copy()


@pytest.fixture
def examples(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dv.datasets, "kang_ifnb", lambda: _small(_REAL_KANG(), 400, 300))
    monkeypatch.setattr(dv.datasets, "pbmc3k", lambda: _small(_REAL_PBMC(), 500, 400))
    monkeypatch.setattr(scvi.settings, "seed", 0)
    return _Examples()


_TRAIN = "deltavae.model._base.DeltaModelMixin.train"


def test_zinbvae_and_plot_examples_run(examples, tmp_path):
    ns = {}
    examples.run("deltavae", dict(ns))
    examples.run("deltavae.model._zinbvae.ZINBVAE", ns)
    ns["vae_seed1"] = ns["vae"]
    for name in (
        "model._zinbvae.ZINBVAE.write_to_adata",
        "model._summary.SummaryMixin.summary_string",
        "model._history.HistoryMixin.history",
        "train._checkpoint.RestoreBestValidation",
        "model._adata_setter.AnnDataSetter.minify_adata",
        "model._adata_setter.AnnDataSetter.view_registry",
        "model._saved.Saving.save",
        "model._saved.Saving.load",
        "train._data.DeltaDataSplitter",
        "train._data.FileOrderDataLoader",
        "train._plan.DeltaTrainingPlan",
        "pl._history.history",
    ):
        examples.run(f"deltavae.{name}", ns)
    # train's example ends on a backed file trained with DDP: here one process.
    ns["adata"].write_h5ad(tmp_path / "atlas.h5ad")
    ddp = (('strategy="ddp", devices=4', "max_epochs=1"),)
    examples.run(_TRAIN, dict(ns), ddp)
    ns["adata"].write_zarr(tmp_path / "atlas.zarr")
    examples.run("deltavae._io.read_lazy", {})
    examples.run("deltavae._io.write_results_to_store", ns)
    sc.pp.neighbors(ns["adata"], use_rep="X_zinbvae")
    sc.tl.leiden(ns["adata"], flavor="igraph", n_iterations=2, directed=False)
    examples.run("deltavae.pl._plots.embedding", ns)
    examples.run("deltavae.pl._plots.cluster_composition", ns)
    assert not examples.errors, "\n".join(examples.errors)


def test_cgmdvae_examples_run(examples):
    ns = {}
    examples.run("deltavae.model._cgmdvae.CGMDVAE", ns)
    examples.run("deltavae.model._cgmdvae.CGMDVAE.setup_anndata", dict(ns))
    adata = ns["adata"]
    for name in (
        "model._cgmdvae.CGMDVAE.train",
        "train._mixture_init.MixtureInitialization",
        "model._cgmdvae_mixins.LatentMixin.get_latent_representation",
        "model._cgmdvae_generation.GenerationMixin.translate",
        "pl._analysis.cluster_probabilities",
        "pl._analysis.cluster_entropy",
        "model._cluster_predictions.PredictionsMixin.predict_clusters",
    ):
        examples.run(f"deltavae.{name}", ns)
    # The model's clusters' markers drawn by scanpy (key_added). The method keeps
    # scvi-tools' __module__ (functools.wraps): doctest's finder passes it over.
    name = "deltavae.model._de.CheckedExpressionMixin.differential_expression"
    doc = dv.model.CGMDVAE.differential_expression.__doc__
    examples.tests[name] = doctest.DocTestParser().get_doctest(doc, {}, name, None, 0)
    examples.run(name, {**ns, "model": ns["g"]})
    assert adata.uns["rank_genes_groups"]["params"]["groupby"] == "cgmdvae_cluster"
    # A model with labels (sample(label=...)) and a query mapped onto it (q, query).
    kang = dv.datasets.kang_ifnb()
    stimulated = kang.obs["condition"] == "stim"  # the query: a condition new to the reference
    reference, query = kang[~stimulated].copy(), kang[stimulated].copy()
    dv.model.CGMDVAE.setup_anndata(reference, condition_key="condition", labels_key="cell_type")
    labelled = dv.model.CGMDVAE(reference)
    labelled.train(max_epochs=2)
    labelled.save("reference_model/")
    ns.update(labelled=labelled, query=query, g_k12=ns["g"])
    examples.run("deltavae.model._cgmdvae_generation.GenerationMixin.sample", ns)
    examples.run("deltavae.model._query.QueryMappingMixin.load_query_data", ns)
    examples.run("deltavae.model._cluster_predictions.PredictionsMixin.predict_labels", ns)
    examples.run("deltavae.model._cgmdvae_write.WriteMixin.write_to_adata", ns)
    examples.run(
        "deltavae.model._cluster_predictions.PredictionsMixin.predict", {**ns, "adata": query}
    )
    # Perturbations: ctrl and stim of the model's AnnData, on the scales the texts name.
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    stim = adata[adata.obs["condition"] == "stim"].copy()
    examples.run(
        "deltavae.model._perturbation.PerturbationMixin.predict_perturbation", {**ns, "stim": stim}
    )
    logs = {}
    for key, cells in (("ctrl", ctrl), ("stim", stim)):
        logs[key] = sc.AnnData(dv.metrics.log_normalize(cells.X), var=cells.var[[]])
    pred = ns["g"].predict_perturbation(ctrl, "stim")
    pred = sc.AnnData(dv.metrics.log_normalize(pred.layers["counts"]), var=pred.var[[]])
    top = list(adata.var_names[:20])
    metric = {"ctrl": logs["ctrl"], "stim": logs["stim"], "pred": pred, "top": top}
    examples.run("deltavae.metrics._perturbation.mean_expression_r2", {**ns, **metric})
    examples.run("deltavae.pl._analysis.perturbation_scatter", {**ns, **metric, "ctrl": ctrl})
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, directed=False)
    plots = {"vae": ns["g"], "predicted": pred, "observed": logs["stim"]}
    examples.run("deltavae.pl", {**ns, **plots})
    assert not examples.errors, "\n".join(examples.errors)


def test_spot_model_examples_run(examples, monkeypatch):
    # Archetypes' match_signatures example names PBMC genes: the synthetic spots carry them.
    mixtures = dv.datasets.convex_mixtures

    def named(**kwargs):
        spots = mixtures(**kwargs)
        names = spots.var_names.tolist()
        names[:4] = ["MS4A1", "CD79A", "CD3E", "CD3D"]
        spots.var_names = names
        return spots

    monkeypatch.setattr(dv.datasets, "convex_mixtures", named)
    ns = {}
    examples.run("deltavae.model._nmfdeconv.NMFDeconv", ns)
    ns["new_spots"] = ns["spots"][:20].copy()
    for name in (
        "model._nmfdeconv.NMFDeconv.train",
        "model._nmfdeconv.NMFDeconv.get_signatures",
        "model._nmfdeconv.NMFDeconv.get_technology_factor",
        "model._nmfdeconv.NMFDeconv.used_genes",
        "model._nmf_results.NMFResultsMixin.get_abundance",
        "model._nmf_results.NMFResultsMixin.get_proportions",
        "model._nmf_results.NMFResultsMixin.write_to_adata",
    ):
        examples.run(f"deltavae.{name}", ns)
    examples.run("deltavae.model._nmf_reference.FromReferenceMixin.from_reference", dict(ns))
    ns["d"].save("nmf_model/")
    examples.run("deltavae.model._nmfdeconv.NMFDeconv.load", ns)
    examples.run(
        "deltavae.model._nmfdeconv.NMFDeconv.setup_anndata", {**ns, "spots": ns["spots"].copy()}
    )

    arch = {}
    examples.run("deltavae.model._archetypes.Archetypes", arch)
    arch["spots"].obs["slide"] = np.arange(arch["spots"].n_obs) % 2
    arch["spots"].obs["slide"] = arch["spots"].obs["slide"].astype(str)
    for name in (
        "model._archetypes.Archetypes.train",
        "model._archetypes.Archetypes.get_anchors",
        "model._archetypes.Archetypes.get_archetype_profiles",
        "model._archetypes.Archetypes.get_markers",
        "model._archetypes.Archetypes.get_sample_factors",
        "model._archetypes.Archetypes.match_signatures",
        "model._archetypes.Archetypes.write_to_adata",
        "model._archetype_merging.ArchetypeMergingMixin.archetype_names",
        "model._archetype_merging.ArchetypeMergingMixin.get_archetype_weights",
        "pl._spatial.archetype_elbow",
    ):
        examples.run(f"deltavae.{name}", arch)
    examples.run(
        "deltavae.model._archetypes.Archetypes.setup_anndata",
        {**arch, "spots": arch["spots"].copy()},
    )
    arch["a"].save("archetypes/")
    examples.run("deltavae.model._spots.SpotModelMixin.load", arch)

    # spatial_proportions draws NMFDeconv's proportions, then an Archetypes' weights, of
    # spots on a slide.
    spots = ns["spots"]
    spots.obsm["spatial"] = np.random.default_rng(0).uniform(0, 100, (spots.n_obs, 2))
    on_slide = spots.copy()
    dv.model.Archetypes.setup_anndata(on_slide)
    weights = dv.model.Archetypes(on_slide, n_archetypes=3)
    weights.train(max_epochs=2)
    weights.write_to_adata(on_slide)
    spots.obsm["archetype_weights"] = on_slide.obsm["archetype_weights"]
    examples.run("deltavae.pl._spatial.spatial_proportions", ns)
    assert not examples.errors, "\n".join(examples.errors)


def test_spatial_imputer_examples_run(examples):
    ns = {}
    examples.run("deltavae.model._imputer.SpatialImputer", ns)
    ref, spots = ns["ref"], ns["spots"]
    ref.obs["cell_type"] = ref.obs["cluster"].astype(str)  # from_reference's default key
    spots.obs["region"] = np.where(np.arange(spots.n_obs) % 2, "cortex", "striatum")
    examples.run(
        "deltavae.model._imputer.SpatialImputer.setup_anndata", {**ns, "spots": spots.copy()}
    )
    for name in ("from_reference", "train"):
        examples.run(f"deltavae.model._imputer.SpatialImputer.{name}", ns)
    latent = dv.model.SpatialImputer.from_reference(spots, reference=ref, design="latent")
    latent.train(max_epochs=2)
    for name in ("get_abundance", "get_proportions", "impute"):
        examples.run(f"deltavae.model._imputer_results.ImputerResultsMixin.{name}", ns)
    examples.run(
        "deltavae.model._imputer_results.ImputerResultsMixin.write_to_adata",
        {**ns, "latent_imputer": latent},
    )
    examples.run(
        "deltavae.model._imputer_results.ImputerResultsMixin.get_latent_representation",
        {**ns, "imputer": latent},
    )
    assert isinstance(ns["imputer"].get_proportions(), pd.DataFrame)
    cv = {}
    examples.run("deltavae.model._imputer_cross_val.ImputerCrossValMixin.cross_validate", cv)
    assert list(cv["scores"].columns) == ["pcc", "ssim", "rmse", "jsd", "fold"]
    assert not examples.errors, "\n".join(examples.errors)
