"""gpu_check.py's phases 1 to 3 and the scvi-tools methods: ZINBVAE on PBMC 3k, CGMDVAE and
the donor-101 references on Kang IFN-beta, query mapping, the scvi-tools mixin methods."""

from __future__ import annotations

import copy

from _gpu_report import (
    FAILED,
    CheckFailed,
    Context,
    _accuracy,
    _float_state,
    _on_device,
    _same,
    _train,
)


# --------------------------------------------------------------------------- data
def prepare_pbmc(n_cells: int | None, seed: int):
    """PBMC 3k, 2,000 seurat_v3 genes on the counts (as ``deltavae demo`` prepares it)."""
    import numpy as np
    import scanpy as sc

    import deltavae as dv

    adata = dv.datasets.pbmc3k()
    if n_cells is not None:
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    sc.pp.filter_genes(adata, min_cells=3)
    n_top = min(2000, adata.n_vars)
    try:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top)
    except ValueError:  # the loess can be singular on a few hundred cells; a wider span fits
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top, span=1.0)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    return adata


def prepare_kang(n_cells: int | None, seed: int):
    """Kang IFN-beta with donor as strings (so a subset carries only its own donors)."""
    import numpy as np

    import deltavae as dv

    adata = dv.datasets.kang_ifnb()
    if n_cells is not None:
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    for key in ("donor", "cell_type", "condition", "sample"):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    return adata


# --------------------------------------------------------------------------- phases
def _fields(registry: dict) -> dict:
    return {key: bool(value) for key, value in registry["field_registries"].items()}


def _guarded(model, fn):
    """Call ``fn``; when it fails and leaves the model's AnnData registry changed, restore it.

    scvi-tools' ``get_state_registry`` adds an empty entry for a field the model never
    registered (e.g. a batch key); every later call on that AnnData then fails with
    ``KeyError: 'data_registry'``. The restore keeps one failure from hiding the next checks;
    the failure's detail says it happened.
    """
    manager = model.adata_manager
    saved = copy.deepcopy(manager._registry)
    try:
        return fn()
    except Exception as exc:
        if _fields(manager._registry) != _fields(saved):
            manager._registry = saved
            exc.add_note("it also broke the model's registry for later calls; restored here")
        raise


def scvi_mixin_checks(ctx: Context, name: str, model, groupby: str, group1: str, group2: str):
    """scvi-tools' VAEMixin / RNASeqMixin / PyroSampleMixin methods, which run the module.

    Methods that read a batch mapping come last, and every call is guarded (``_guarded``).
    """

    def run(model_name, check, fn, **kwargs):
        return ctx.report.run(model_name, check, lambda: _guarded(model, fn), **kwargs)

    run(name, "get_elbo", lambda: float(model.get_elbo()), detail=lambda v: f"{v:.4g}")
    run(
        name,
        "get_reconstruction_error",
        lambda: model.get_reconstruction_error(),
        detail=lambda d: ", ".join(f"{k} {float(v):.4g}" for k, v in d.items()),
    )
    run(
        name,
        "get_marginal_ll",
        lambda: float(model.get_marginal_ll(n_mc_samples=5)),
        detail=lambda v: f"{v:.4g}",
    )
    # Per cell: on the host, as numpy reads them (scvi-tools leaves them on the device).
    for check, fn in (
        ("get_elbo(return_mean=False)", lambda: model.get_elbo(return_mean=False)),
        (
            "get_reconstruction_error(return_mean=False)",
            lambda: model.get_reconstruction_error(return_mean=False)["reconstruction_loss"],
        ),
        (
            "get_marginal_ll(return_mean=False)",
            lambda: model.get_marginal_ll(n_mc_samples=5, return_mean=False),
        ),
    ):
        run(name, check, lambda fn=fn: _per_cell_on_host(model, fn()), detail=str)
    run(
        name,
        "get_latent_library_size(give_mean=False)",
        lambda: model.get_latent_library_size(give_mean=False),
    )
    run(
        name,
        "get_aggregated_posterior",
        lambda: model.get_aggregated_posterior(),
        detail=lambda d: type(d).__name__,
    )
    run(name, "get_likelihood_parameters", lambda: model.get_likelihood_parameters())
    run(
        name,
        "posterior_predictive_sample",
        lambda: model.posterior_predictive_sample(n_samples=1),
    )
    run(
        name,
        "get_normalized_expression",
        lambda: model.get_normalized_expression(library_size=1e4, n_samples=1),
    )
    run(
        name,
        "get_feature_correlation_matrix",
        lambda: model.get_feature_correlation_matrix(n_samples=2),
    )
    de = run(
        name,
        f"differential_expression({groupby}: {group1} vs {group2})",
        lambda: model.differential_expression(
            groupby=groupby, group1=group1, group2=group2, batch_size=256
        ),
        detail=lambda de: f"{len(de)} genes, top {de.index[0]}",
    )
    run(
        name,
        "differential_expression: raw_normalized_mean1/2 == counts per 10k",
        lambda: _normalized_means(model, de, groupby, (group1, group2)),
        needs=[de],
        detail=str,
        finite=False,
    )


def _normalized_means(model, de, groupby: str, groups: tuple) -> str:
    """``raw_normalized_mean1/2`` of a DE table: the mean of the groups' counts scaled to
    10,000 a cell (0 for a cell without counts), read from the registered counts on the host
    whatever the device; and scvi-tools' cache of the scaling not left in the model's obs."""
    import numpy as np
    import scipy.sparse as sp

    from deltavae.model._de_scaling import SCVI_NORM

    adata = model.adata
    counts = model.adata_manager.get_from_registry("X")
    column = adata.obs[groupby].astype(str).to_numpy()
    worst = []
    for key, group in zip(("raw_normalized_mean1", "raw_normalized_mean2"), groups, strict=True):
        rows = counts[np.flatnonzero(column == group)]
        rows = sp.csr_matrix(rows, dtype=np.float64)
        totals = np.asarray(rows.sum(1)).ravel()
        scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
        expected = np.asarray((sp.diags(scale) @ rows).mean(0)).ravel()
        got = de.loc[adata.var_names, key]
        worst.append(_same(expected, got, 1e-4, f"{key} ({group}, {len(scale)} cells)"))
    if SCVI_NORM in adata.obs:
        raise CheckFailed(f"obs[{SCVI_NORM!r}] left in the model's AnnData")
    return "; ".join(worst)


def _library_quantiles(model) -> str:
    """The groups (cluster and condition) whose observed library sizes ``sample`` draws from
    (their quantiles, kept at training): phase 5 compares such draws across devices."""
    kept = getattr(model, "library_log_quantiles_by_cluster_", None) or {}
    if not kept or getattr(model, "library_log_quantiles_", None) is None:
        raise CheckFailed("no library quantiles kept: sample draws log-normal libraries")
    return f"quantiles of {len(kept)} (cluster, condition) groups and of all cells"


def _per_cell_on_host(model, values) -> str:
    """One finite value per cell of the model's AnnData, read by numpy on the host."""
    import numpy as np

    device = getattr(values, "device", None)
    if device is not None and device.type != "cpu":
        raise CheckFailed(f"returned on {device}: numpy cannot read it")
    array = np.asarray(values, dtype=float).reshape(-1)
    if len(array) != model.adata.n_obs or not np.isfinite(array).all():
        raise CheckFailed(f"{len(array)} values for {model.adata.n_obs} cells, or not finite")
    return f"{len(array)} cells, mean {array.mean():.4g}"


def phase_scvi_methods(ctx: Context, models: dict) -> None:
    """The scvi-tools mixin methods of ZINBVAE and CGMDVAE (last: a failure can break a model)."""
    groups = {
        "ZINBVAE/pbmc": ("cell_type", "B", "CD14+ Mono"),
        "CGMDVAE/kang": ("cell_type", "B cells", "CD14+ Monocytes"),
    }
    for name, (groupby, group1, group2) in groups.items():
        if name in models:
            scvi_mixin_checks(ctx, name, models[name]["model"], groupby, group1, group2)


def phase_zinbvae_pbmc(ctx: Context, models: dict) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "ZINBVAE/pbmc"
    adata = run(
        name, "prepare PBMC 3k (2,000 HVGs)", lambda: prepare_pbmc(ctx.cfg["pbmc_cells"], 0)
    )
    if adata is FAILED:
        return

    def build():
        dv.model.ZINBVAE.setup_anndata(adata)
        return dv.model.ZINBVAE(adata, n_latent=10)

    epochs = ctx.cfg["zinbvae_epochs"]
    model = ctx.build_and_train(
        name,
        "setup_anndata + ZINBVAE()",
        build,
        epochs,
        f"train({epochs} epochs, {ctx.accelerator})",
        on_device=True,
    )
    if model is FAILED:
        return
    latent, *_ = ctx.report.run_each(
        name,
        [
            ("get_latent_representation", lambda: model.get_latent_representation()),
            (
                "get_latent_representation(new AnnData)",
                lambda: model.get_latent_representation(adata[:200].copy()),
            ),
            (
                "get_latent_representation(give_mean=False)",
                lambda: model.get_latent_representation(give_mean=False),
            ),
            ("write_to_adata", lambda: model.write_to_adata(adata), {"detail": str}),
        ],
    )
    run(
        name,
        "write_to_adata(whole PBMC 3k, every gene) == latent",
        lambda: _written_into_whole(model, adata, latent),
        needs=[latent],
        detail=str,
        finite=False,
    )
    models[name] = {"model": model, "adata": adata, "latent": latent, "kind": "latent"}


def _written_into_whole(model, adata, latent) -> str:
    """The model of 2,000 genes writes its latent into the AnnData of all 13,714 (computed on
    its genes, read from the whole)."""
    import deltavae as dv

    whole = dv.datasets.pbmc3k()
    whole = whole[adata.obs_names].copy()
    keys = model.write_to_adata(whole)
    return f"{keys}: " + _same(latent, whole.obsm["X_zinbvae"], 1e-6, "latent")


def phase_kang(ctx: Context, models: dict) -> None:
    run = ctx.report.run
    kang = run("Kang", "prepare Kang IFN-beta", lambda: prepare_kang(ctx.cfg["kang_cells"], 0))
    if kang is FAILED:
        return
    _cgmdvae_main(ctx, models, kang)
    _zinbvae_reference(ctx, models, kang)
    _cgmdvae_reference(ctx, models, kang)


def _cgmdvae_main(ctx: Context, models: dict, kang) -> None:
    import numpy as np

    import deltavae as dv

    run, name = ctx.report.run, "CGMDVAE/kang"
    adata = kang.copy()
    rng = np.random.default_rng(ctx.seed)
    unlabelled = rng.random(adata.n_obs) < 0.5
    labels = adata.obs["cell_type"].astype(str).to_numpy(dtype=object)
    labels[unlabelled] = "Unknown"
    adata.obs["label"] = labels

    def build():
        dv.model.CGMDVAE.setup_anndata(
            adata, condition_key="condition", labels_key="label", unlabeled_category="Unknown"
        )
        return dv.model.CGMDVAE(adata, n_clusters=6, likelihood="zinb")

    epochs = ctx.cfg["cgmdvae_epochs"]
    model = ctx.build_and_train(
        name,
        "setup_anndata + CGMDVAE() (semi-supervised)",
        build,
        epochs,
        f"train({epochs} epochs, mixture_init={ctx.cfg['mixture_init']})",
        on_device=True,
        mixture_init=ctx.cfg["mixture_init"],
    )
    if model is FAILED:
        return
    z = run(name, "get_latent_representation(z)", lambda: model.get_latent_representation())
    run(
        name,
        "get_latent_representation(w)",
        lambda: model.get_latent_representation(representation="w"),
    )
    run(
        name,
        "get_latent_representation(condition='ctrl')",
        lambda: model.get_latent_representation(condition="ctrl"),
    )
    run(name, "predict_clusters()", lambda: model.predict_clusters())
    soft = run(name, "predict_clusters(soft=True)", lambda: model.predict_clusters(soft=True))
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    predicted = run(
        name,
        "predict_labels",
        lambda: model.predict_labels(),
        detail=lambda p: (
            "accuracy on unlabelled cells "
            f"{_accuracy(p['label'].to_numpy()[unlabelled], truth[unlabelled]):.3f}"
        ),
    )
    run(name, "write_to_adata", lambda: model.write_to_adata(adata), detail=str)

    def sample(m):
        return m.sample(n_cells=50, cluster=0, condition="stim", seed=0)

    def by_label(m):
        return m.sample(n_cells=50, label=m.label_names[0], seed=2, batch_size=16)

    sampled = run(name, "sample(cluster=0, condition='stim')", lambda: sample(model))
    drawn = run(name, "sample() (drawn cluster, condition)", lambda: model.sample(50, seed=1))
    run(name, "sample: library quantiles kept", lambda: _library_quantiles(model), detail=str)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    translated = run(name, "translate(ctrl -> stim)", lambda: model.translate(ctrl, "stim", seed=0))
    few = ctrl[: min(500, ctrl.n_obs)].copy()
    for method, extra in (
        ("translate", {}),
        ("latent_shift", {}),
        ("nearest_response", {}),
        ("nearest_response", {"similarity": "latent"}),
    ):
        label = f"predict_perturbation({method}{', latent' if extra else ''})"
        run(
            name,
            label,
            lambda method=method, extra=extra: model.predict_perturbation(
                ctrl, "stim", method=method, **extra
            ),
        )
    models[name] = {
        "model": model,
        "adata": adata,
        "latent": z,
        "soft": soft,
        # Scored on the device against quantiles kept on the device: the CPU scores the same.
        "typicality": None if predicted is FAILED else predicted["typicality"].to_numpy(),
        "kind": "latent",
        # Seeded draws, made on the CPU: the CPU copy draws the same (phase 5), translate
        # with another batch_size too.
        "seeded": {
            "sample(cluster=0, seed=0)": (sampled, sample),
            "sample(seed=1)": (drawn, lambda m: m.sample(50, seed=1)),
            # A cell type asked for by label, decoded in parts (sample's batch_size).
            "sample(label=, batch_size=16, seed=2)": (
                run(name, "sample(label=, batch_size=16)", lambda: by_label(model)),
                by_label,
            ),
            "translate(seed=0, batch_size=1000)": (
                translated,
                lambda m: m.translate(ctrl, "stim", seed=0, batch_size=1000),
            ),
            # The latent shift's counts (CellDraws too) and the nearest responses, of 500
            # control cells: the CPU copy reads them again, and all of Kang's took seconds.
            **{
                f"predict_perturbation({method}, 500 cells, seed=0)": (
                    run(
                        name,
                        f"predict_perturbation({method}, 500 cells, seed=0)",
                        lambda method=method: model.predict_perturbation(
                            few, "stim", method=method, seed=0
                        ),
                    ),
                    lambda m, method=method: m.predict_perturbation(
                        few, "stim", method=method, seed=0
                    ),
                )
                for method in ("latent_shift", "nearest_response")
            },
        },
    }


def _split_donors(kang):
    ref = kang[kang.obs["donor"] == "101"].copy()
    query = kang[kang.obs["donor"] == "107"].copy()
    for frame in (ref, query):
        frame.obs["donor"] = frame.obs["donor"].astype(str).astype("category")
    return ref, query


def _zinbvae_reference(ctx: Context, models: dict, kang) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "ZINBVAE/kang-ref"
    ref, query = _split_donors(kang)

    def build():
        dv.model.ZINBVAE.setup_anndata(
            ref, batch_key="condition", categorical_covariate_keys=["donor"]
        )
        return dv.model.ZINBVAE(ref, n_latent=10)

    epochs = ctx.cfg["reference_epochs"]
    model = ctx.build_and_train(name, "setup_anndata + ZINBVAE() (donor 101)", build, epochs)
    if model is FAILED:
        return
    latent = run(name, "get_latent_representation", lambda: model.get_latent_representation())
    ctrl = ref[ref.obs["condition"] == "ctrl"].copy()
    by_type = {"condition_key": "condition", "balance_key": "cell_type"}
    values = ctx.report.run_each(
        name,
        [
            (
                f"predict_perturbation({method}{', balanced' if balanced else ''}, seed=0)",
                lambda m=method, b=balanced: model.predict_perturbation(
                    ctrl,
                    "stim",
                    method=m,
                    seed=0,
                    **(by_type if b else {"condition_key": "condition"}),
                ),
            )
            for method, balanced in (
                ("latent_shift", False),
                ("latent_shift", True),
                ("nearest_response", True),
            )
        ]
        + [
            (
                "differential_abundance(sample_key='sample')",
                lambda: model.differential_abundance(sample_key="sample"),
                {"detail": lambda v: type(v).__name__},
            )
        ],
    )
    again = {  # the seeded counts, drawn on the CPU: the CPU copy draws the same (phase 5)
        label: (value, lambda m, kw=kw: m.predict_perturbation(ctrl, "stim", seed=0, **kw))
        for label, value, kw in (
            ("predict_perturbation(latent_shift, balanced, seed=0)", values[1], by_type),
            (
                "predict_perturbation(nearest_response, balanced, seed=0)",
                values[2],
                {**by_type, "method": "nearest_response"},
            ),
        )
    }
    models[name] = {
        "model": model,
        "adata": ref,
        "latent": latent,
        "kind": "latent",
        "seeded": again,
    }

    qname = "ZINBVAE/query"
    truth = query.obs["cell_type"].astype(str).to_numpy()
    q = run(
        qname,
        "load_query_data(donor 107)",
        lambda: dv.model.ZINBVAE.load_query_data(query.copy(), model, accelerator=ctx.accelerator),
        finite=False,
        detail=lambda q: f"new {q.query_mapping_['new_categories']}",
    )
    epochs = ctx.cfg["query_epochs"]
    ctx.train(qname, q, epochs, f"train query ({epochs} epochs)")
    run(qname, "query module on device", lambda: _on_device(ctx, q), needs=[q])
    _query_mapped_on_cpu(ctx, run, qname, model, query)
    q_latent = run(
        qname, "get_latent_representation (query)", q.get_latent_representation, needs=[q]
    )
    if q is not FAILED and q_latent is not FAILED:  # compared on the CPU, pickled (variants)
        models[qname] = {"model": q, "adata": q.adata, "latent": q_latent, "kind": "latent"}

    def knn_transfer():
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=15).fit(latent, ref.obs["cell_type"].astype(str))
        return _accuracy(knn.predict(q_latent), truth)

    run(
        qname,
        "15-NN label transfer (query latent)",
        knn_transfer,
        needs=[q_latent, latent],
        detail=lambda acc: f"accuracy {acc:.3f}",
    )


def _query_mapped_on_cpu(ctx: Context, run, qname: str, model, query) -> None:
    """Map ``query`` onto ``model`` on the CPU and train it on the device: the reference
    columns' gradient masks live in hooks, not buffers, and must follow the gradients there."""
    cross = run(
        qname,
        "load_query_data on the CPU",
        lambda: type(model).load_query_data(query.copy(), model, accelerator="cpu"),
        finite=False,
    )
    ctx.train(qname, cross, 2, "train the CPU-mapped query on the device (2 epochs)")
    if cross is not FAILED:
        _custom_optimizer(ctx, qname, cross)


def _custom_optimizer(ctx: Context, qname: str, q) -> None:
    """Two more epochs with scvi-tools' custom optimiser (``optimizer="Custom"``, an SGD with
    weight decay from ``optimizer_creator``): the reference's weights, frozen or masked
    entries of partly trainable ones, must stay as they were on the device, and others move."""
    import torch

    from deltavae.train._checkpoint import PARTLY_TRAINABLE

    def frozen():
        partly = {id(p): m for p, m in q.module.__dict__.get(PARTLY_TRAINABLE) or []}
        return [
            (name, p.detach().clone(), partly.get(id(p)))
            for name, p in q.module.named_parameters()
            if not p.requires_grad or id(p) in partly
        ]

    def train():
        kept, before = frozen(), _float_state(q)
        creator = lambda params: torch.optim.SGD(params, lr=1e-3, weight_decay=0.1)  # noqa: E731
        _train(ctx, q, 2, plan_kwargs={"optimizer": "Custom", "optimizer_creator": creator})
        params = dict(q.module.named_parameters())
        moved = [
            name
            for name, value, learns in kept
            if not torch.equal(
                (params[name] if learns is None else params[name][~learns.to(value.device)]),
                (value if learns is None else value[~learns.to(value.device)]),
            )
        ]
        if moved:
            raise CheckFailed(f"reference weights changed: {moved[:3]}")
        after = _float_state(q)
        changed = sum(not torch.equal(before[k], after[k]) for k in before)
        if not changed:
            raise CheckFailed(f"none of {len(before)} parameter tensors changed")
        return f"{len(kept)} frozen or masked kept, {changed} of {len(before)} tensors changed"

    check = "train query, optimizer='Custom' (2 epochs)"
    ctx.report.run(qname, check, train, detail=str, finite=False)


def _cgmdvae_reference(ctx: Context, models: dict, kang) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "CGMDVAE/kang-ref"
    ref, query = _split_donors(kang)
    truth = query.obs.pop("cell_type").astype(str).to_numpy()

    def build():
        dv.model.CGMDVAE.setup_anndata(
            ref, condition_key=["condition", "donor"], labels_key="cell_type"
        )
        return dv.model.CGMDVAE(ref, likelihood="zinb")

    epochs = ctx.cfg["reference_epochs"]
    model = ctx.build_and_train(
        name,
        "setup_anndata + CGMDVAE() (donor 101)",
        build,
        epochs,
        f"train({epochs} epochs, supervised)",
        mixture_init=ctx.cfg["mixture_init"],
    )
    if model is FAILED:
        return
    _two_condition_keys(ctx, name, model, ref)
    qname = "CGMDVAE/query"
    q = run(
        qname,
        "load_query_data(donor 107, no labels)",
        lambda: dv.model.CGMDVAE.load_query_data(query, model, accelerator=ctx.accelerator),
        finite=False,
        detail=lambda q: f"new {q.query_mapping_['new_categories']}",
    )
    epochs = ctx.cfg["query_epochs"]
    ctx.train(qname, q, epochs, f"train query ({epochs} epochs)")
    run(qname, "query module on device", lambda: _on_device(ctx, q), needs=[q])
    _query_mapped_on_cpu(ctx, run, qname, model, query)
    run(
        qname,
        "predict_labels (label transfer)",
        lambda: q.predict_labels(),
        needs=[q],
        detail=lambda p: (
            f"accuracy {_accuracy(p['label'], truth):.3f}, typicality median "
            f"{p['typicality'].median():.3f} (of the reference's record)"
        ),
    )
    run(qname, "write_to_adata (query)", lambda: q.write_to_adata(), needs=[q], detail=str)
    if q is not FAILED:
        _unknown_and_replaced(ctx, qname, q, query)


def _unknown_and_replaced(ctx: Context, qname: str, q, query) -> None:
    """The query's read-outs added since the last GPU run: ``predict_labels(unknown_below=)``
    (typicality scored on the device against the reference's record), ``predict`` (SCANVI's
    form) and ``write_to_adata(unknown_below=)``; then the query's counts replaced
    (``query.X = other``): the model must read the new matrix, as a copy of the query gives;
    last, the query subset in place (``sc.pp.filter_cells``): one epoch trains on the cells
    left and ``predict_labels()`` labels them (``follow_query``), on the device."""
    import numpy as np

    def unknown():
        from deltavae.model._typicality import unknown_mark

        labels = q.predict_labels(unknown_below=0.1)
        marked = labels["typicality"].to_numpy() < 0.1
        mark = unknown_mark(q, labels["label"].cat.categories)
        if not np.isfinite(labels["typicality"]).all() or (labels["label"] == mark).sum() != (
            marked.sum()
        ):
            raise CheckFailed(f"{marked.sum()} under 0.1, {(labels['label'] == mark).sum()} marked")
        return f"{marked.mean():.1%} of the query marked {mark!r}"

    def predict():
        hard, labels = q.predict(), q.predict_labels()["label"].to_numpy()
        if not (np.asarray(hard).astype(str) == labels.astype(str)).all():
            raise CheckFailed("predict() differs from predict_labels()['label']")
        return f"{len(hard)} labels, as predict_labels'"

    def written():
        q.write_to_adata(unknown_below=0.1)
        return f"{query.obs['cgmdvae_typicality'].lt(0.1).mean():.1%} under 0.1 in obs"

    def replaced():
        before, kept = q.get_latent_representation(query), query.X
        query.X = kept * 2  # twice the counts: another matrix object, other latents
        try:
            after = q.get_latent_representation(query)
            fresh = q.get_latent_representation(query.copy())
        finally:
            query.X = kept
        if np.allclose(after, before):
            raise CheckFailed("the latent of the replaced counts is the old one")
        return _same(fresh, after, 1e-5, "replaced X == a copy of it")

    ctx.report.run_each(
        qname,
        [
            ("predict_labels(unknown_below=0.1)", unknown, {"finite": False, "detail": str}),
            ("predict() == predict_labels' labels", predict, {"finite": False, "detail": str}),
            ("write_to_adata(unknown_below=0.1)", written, {"finite": False, "detail": str}),
            ("query.X replaced: latent of the new counts", replaced, {"detail": str}),
        ],
    )

    def subset_in_place():
        # Last: the query keeps the cells left (nothing later reads this query model).
        query._inplace_subset_obs(np.arange(query.n_obs) % 4 != 0)  # sc.pp.filter_cells
        q.train(**ctx.fit(1))  # trains on the cells left (follow_query), on the device
        labels = q.predict_labels()
        if not labels.index.equals(query.obs_names) or q.adata.n_obs != query.n_obs:
            raise CheckFailed(f"{len(labels)} labels of the {query.n_obs} cells left")
        _on_device(ctx, q)
        return f"{query.n_obs} cells left: trained one epoch and labelled, on the device"

    ctx.report.run(
        qname,
        "query subset in place: trained and labelled as it is now",
        subset_in_place,
        finite=False,
        detail=str,
    )


def _two_condition_keys(ctx: Context, name: str, model, ref) -> None:
    """Read-outs of a model of two condition keys (condition, donor): conditions left unnamed
    drawn jointly from the training cells' combinations, the combinations cells are moved to
    checked against those that trained."""
    ctrl = ref[ref.obs["condition"] == "ctrl"].copy()
    stim = {"condition": "stim"}
    ctx.report.run_each(
        name,
        [
            (
                "get_latent_representation(condition={'condition': 'stim'})",
                lambda: model.get_latent_representation(condition=stim),
            ),
            ("sample() (condition and donor drawn)", lambda: model.sample(50, seed=0)),
            (
                "translate(ctrl -> {'condition': 'stim'})",
                lambda: model.translate(ctrl, stim, seed=0),
            ),
            (
                "predict_perturbation(latent_shift, condition_key)",
                lambda: model.predict_perturbation(
                    ctrl, "stim", method="latent_shift", condition_key="condition"
                ),
            ),
        ],
    )
