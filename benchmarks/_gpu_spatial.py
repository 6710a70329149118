"""gpu_check.py's phases 4 to 6: NMFDeconv, SpatialImputer and Archetypes on PBMC
pseudo-spots, CPU copies against the device, save, load and train on."""

from __future__ import annotations

import numpy as np
from _gpu_models import prepare_pbmc
from _gpu_reads import device_reads, same_read
from _gpu_report import (
    FAILED,
    CheckFailed,
    Context,
    _epochs_detail,
    _float_state,
    _module_device,
    _on_device,
    _same,
    _train,
)

# Relative difference (to the largest absolute value) above which two devices disagree.
DEVICE_TOLERANCE = 1e-3

# Relative difference above which a reloaded model's result differs from the saved one's.
LOAD_TOLERANCE = 1e-5

# Marker sets for Archetypes.match_signatures on the PBMC pseudo-spots.
PBMC_SIGNATURES = {
    "B": ["MS4A1", "CD79A", "CD79B"],
    "T": ["CD3E", "CD3D", "IL7R"],
    "NK": ["GNLY", "NKG7"],
    "CD14+ Mono": ["CD14", "LYZ", "S100A9"],
    "FCGR3A+ Mono": ["FCGR3A", "MS4A7"],
    "Platelet": ["PPBP", "PF4"],
}


def phase_spatial(ctx: Context, models: dict) -> None:
    import deltavae as dv

    run = ctx.report.run
    cells = run("spots", "prepare PBMC 3k for spots", lambda: prepare_pbmc(None, 0))
    made = run(
        "spots",
        f"pseudo_spots({ctx.cfg['n_spots']} spots)",
        lambda: dv.datasets.pseudo_spots(
            cells, "cell_type", n_spots=ctx.cfg["n_spots"], seed=ctx.seed
        ),
        needs=[cells],
        detail=lambda sr: f"{sr[0].n_obs} spots, {sr[1].n_obs} reference cells",
        finite=False,
    )
    if made is FAILED:
        return
    spots, reference = made
    _nmfdeconv(ctx, models, spots, reference)
    _imputer(ctx, models, spots, reference)
    _archetypes(ctx, models, spots)


def _nmfdeconv(ctx: Context, models: dict, spots, reference) -> None:
    import deltavae as dv

    name = "NMFDeconv"
    target = spots.copy()
    epochs = ctx.cfg["nmf_epochs"]
    model = ctx.build_and_train(
        name,
        "from_reference",
        lambda: dv.model.NMFDeconv.from_reference(target, reference, labels_key="cell_type"),
        epochs,
        detail=lambda m: f"{len(m.used_genes())} marker genes, {len(m.cell_types_)} types",
        on_device=True,
    )
    if model is FAILED:
        return
    truth = spots.obsm["proportions_true"]

    def rmse(p):
        diff = p.to_numpy() - truth[p.columns].to_numpy()
        return f"RMSE vs true proportions {float(np.sqrt((diff**2).mean())):.3f}"

    props, *_ = ctx.report.run_each(
        name,
        [
            ("get_proportions", model.get_proportions, {"detail": rmse}),
            ("get_abundance", model.get_abundance),
            ("get_signatures", model.get_signatures),
            ("get_technology_factor", model.get_technology_factor),
            ("write_to_adata(spots)", lambda: model.write_to_adata(target), {"detail": str}),
        ],
    )
    models[name] = {"model": model, "adata": model.adata, "latent": props, "kind": "proportions"}


def _imputer(ctx: Context, models: dict, spots, reference) -> None:
    """SpatialImputer (neighbour profiles) on the spots without the reference's last 100
    genes, scored against their true counts."""
    import deltavae as dv
    from deltavae.metrics import imputation_scores

    name = "SpatialImputer"
    hidden = list(reference.var_names[-100:])
    target = spots[:, [g for g in spots.var_names if g not in set(hidden)]].copy()
    model = ctx.build_and_train(
        name,
        "from_reference (profiles='neighbours')",
        lambda: dv.model.SpatialImputer.from_reference(target, reference, labels_key="cell_type"),
        ctx.cfg["imputer_epochs"],
        detail=lambda m: f"{target.n_vars} measured genes, {len(m.state_names_)} types",
        on_device=True,
    )
    if model is FAILED:
        return

    def pcc(imputed):
        truth = spots[:, hidden].to_df()
        return f"median PCC of hidden genes {imputation_scores(truth, imputed)['pcc'].median():.3f}"

    imputed, *_ = ctx.report.run_each(
        name,
        [
            ("impute", model.impute, {"detail": pcc}),
            ("get_proportions", model.get_proportions),
            ("write_to_adata(spots)", lambda: model.write_to_adata(target), {"detail": str}),
        ],
    )
    ctx.report.run(
        name,
        "impute a quarter of the spots at a time == at once",
        lambda: _same(imputed, _impute_in_chunks(model, 4), 1e-5, "imputed"),
        needs=[imputed],
        detail=str,
        finite=False,
    )
    models[name] = {"model": model, "adata": model.adata, "latent": imputed, "kind": "imputed"}
    _cross_validate(ctx, name, target, reference)


def _cross_validate(ctx: Context, name: str, spots, reference) -> None:
    """``SpatialImputer.cross_validate``: two folds of 20 shared genes, each a model trained on
    the device; the user's seed and the generators (the device's too) as before the call."""
    import scvi
    import torch

    import deltavae as dv

    genes = [g for g in spots.var_names if g in reference.var_names][:20]
    cuda = ctx.device == "cuda"

    def states():
        device = torch.cuda.get_rng_state() if cuda else None
        return scvi.settings.seed, torch.get_rng_state(), device

    def cross_validate():
        before = states()
        table = dv.model.SpatialImputer.cross_validate(
            spots, reference, labels_key="cell_type", n_folds=2, genes=genes, seed=ctx.seed,
            max_epochs=min(ctx.cfg["imputer_epochs"], 50),
            train_kwargs={"accelerator": ctx.accelerator, "enable_progress_bar": False,
                          "max_time": ctx.box()},
        )  # fmt: skip
        after = states()
        kept = [before[0] == after[0]] + [
            a is None or bool(torch.equal(a, b)) for a, b in zip(before[1:], after[1:], strict=True)
        ]
        if not all(kept):
            raise CheckFailed(f"seed, CPU and device generators put back: {kept}")
        if not len(table) or not np.isfinite(table["pcc"]).any():
            raise CheckFailed(f"no gene scored: {len(table)} rows")
        return table

    ctx.report.run(
        name,
        "cross_validate(2 folds, 20 genes)",
        cross_validate,
        finite=False,
        detail=lambda t: (
            f"{len(t)} genes scored, median PCC {t['pcc'].median():.3f}; seed and generators kept"
        ),
    )


def _impute_in_chunks(model, parts: int):
    """``impute`` reading the spots in ``parts`` chunks (an atlas's do not fit at once)."""
    import deltavae.model._imputer as imputer_model

    chunk = imputer_model._CHUNK
    imputer_model._CHUNK = -(-model.adata.n_obs // parts)
    try:
        return model.impute()
    finally:
        imputer_model._CHUNK = chunk


def _archetypes(ctx: Context, models: dict, spots) -> None:
    import deltavae as dv

    name = "Archetypes"
    adata = spots.copy()

    def build():
        dv.model.Archetypes.setup_anndata(adata)
        return dv.model.Archetypes(
            adata, n_archetypes="auto", max_archetypes=ctx.cfg["max_archetypes"]
        )

    epochs = ctx.cfg["archetype_epochs"]
    model = ctx.build_and_train(
        name,
        "setup_anndata + Archetypes(auto)",
        build,
        epochs,
        detail=lambda m: f"{m.n_archetypes_raw_} archetypes chosen",
        on_device=True,
    )
    if model is FAILED:
        return
    unchecked = {"finite": False}  # tables and dicts of names
    new_spots = spots[:50].copy()
    weights, *_ = ctx.report.run_each(
        name,
        [
            ("get_archetype_weights", lambda: model.get_archetype_weights()),
            ("get_archetype_weights(new spots)", lambda: model.get_archetype_weights(new_spots)),
            ("get_archetype_profiles", model.get_archetype_profiles),
            ("get_anchors", lambda: model.get_anchors(10), unchecked),
            ("get_markers", lambda: model.get_markers(20), {**unchecked, "detail": len}),
            (
                "match_signatures",
                lambda: model.match_signatures(PBMC_SIGNATURES),
                {**unchecked, "detail": lambda t: f"matched {t['signature'].notna().sum()}"},
            ),
            ("archetype_names", model.archetype_names, {"detail": str}),
            ("write_to_adata", lambda: model.write_to_adata(adata), {"detail": str}),
        ],
    )
    models[name] = {"model": model, "adata": adata, "latent": weights, "kind": "weights"}


def _result(entry: dict, model=None):
    """The result compared across devices and across save/load, for each kind of model."""
    model = model if model is not None else entry["model"]
    if entry["kind"] == "proportions":
        return model.get_proportions()
    if entry["kind"] == "weights":
        return model.get_archetype_weights()
    if entry["kind"] == "imputed":
        return model.impute()
    return model.get_latent_representation()


def phase_devices(ctx: Context, models: dict) -> None:
    """Recompute each model's main result on the CPU; compare with the device's."""
    run = ctx.report.run
    for name, entry in models.items():
        model, on_device = entry["model"], entry["latent"]
        what = entry["kind"]
        reads = device_reads(name, model)  # the gathered read-outs, on the device first
        read = {
            label: run(name, f"{label} on {ctx.device}", lambda f=f, m=model: f(m), finite=False)
            for label, f in reads.items()
        }
        moved = run(name, "to_device('cpu')", lambda m=model: m.to_device("cpu"), finite=False)
        if moved is FAILED:
            continue
        run(
            name,
            f"{what} on cpu == on {ctx.device}",
            lambda e=entry, d=on_device, w=what: _same(d, _result(e), DEVICE_TOLERANCE, w),
            needs=[on_device],
            detail=str,
            finite=False,
        )
        if entry.get("soft") is not None:
            run(
                name,
                f"cluster probabilities on cpu == on {ctx.device}",
                lambda m=model, s=entry["soft"]: _cluster_agreement(m, s),
                needs=[entry["soft"]],
                detail=str,
                finite=False,
            )
        if entry.get("typicality") is not None:
            run(
                name,
                f"predict_labels' typicality on cpu == on {ctx.device}",
                lambda m=model, t=entry["typicality"]: _same(
                    t, m.predict_labels()["typicality"].to_numpy(), DEVICE_TOLERANCE, "typicality"
                ),
                detail=str,
                finite=False,
            )
        for label, f in reads.items():
            run(
                name,
                f"{label} on cpu == on {ctx.device}",
                lambda d=read[label], f=f, m=model: same_read(d, f(m), DEVICE_TOLERANCE),
                needs=[read[label]],
                detail=str,
                finite=False,
            )
        for check, (drawn, again) in entry.get("seeded", {}).items():
            run(
                name,
                f"{check} on cpu == on {ctx.device}",
                lambda d=drawn, f=again, m=model, c=check: _same_draws(d, f(m), _drawn_cells(c)),
                needs=[drawn],
                detail=str,
                finite=False,
            )
        run(
            name,
            f"to_device('{ctx.torch_device}') (back)",
            lambda m=model: (m.to_device(ctx.torch_device), _on_device(ctx, m))[1],
            finite=False,
        )


def _drawn_cells(check: str) -> bool:
    """Whether a seeded check is of ``sample`` (cells drawn anew, libraries too)."""
    return check.startswith("sample(")


def _same_draws(on_device, on_cpu, cells: bool = False) -> str:
    """A seeded read-out's draws (counts where it has them), made on the CPU whatever the
    model's device: the same but where the decoded values' last digits put a draw on an edge.
    Real values (a normal likelihood's cells: decoded mean plus the CPU's noise) carry the
    decoding's round-off: the same within the devices' tolerance. For ``cells`` (``sample``'s)
    also their clusters and conditions, and for counts each cell's expected total (its library
    size drawn from the stored quantiles, less the dropouts): within the tolerance."""
    a, b = (c.layers["counts"] if "counts" in c.layers else c.X for c in (on_device, on_cpu))
    a, b = np.asarray(a), np.asarray(b)
    if cells:
        differ = [k for k in on_device.obs if not on_device.obs[k].equals(on_cpu.obs.get(k))]
        if differ or not on_device.obs_names.equals(on_cpu.obs_names):
            raise CheckFailed(f"cells' obs differ: {differ or 'names'}")
    if a.shape == b.shape and not np.array_equal(a, np.round(a)):
        return _same(a, b, DEVICE_TOLERANCE, "real-valued draws")
    same = float(np.mean(a == b))
    text = f"{same:.5f} of the draws equal"
    if same < 0.999:
        raise CheckFailed(f"only {text}")
    if cells and "counts" in on_device.layers:
        totals = (np.asarray(c.layers["expected"]).sum(1) for c in (on_device, on_cpu))
        text += "; " + _same(*totals, DEVICE_TOLERANCE, "expected totals (libraries)")
    return text


def _cluster_agreement(model, soft_on_device) -> str:
    soft = model.predict_clusters(soft=True)
    agree = float((soft.argmax(1) == soft_on_device.argmax(1)).mean())
    return f"{_same(soft_on_device, soft, DEVICE_TOLERANCE, 'probabilities')}; hard {agree:.4f}"


def phase_save_load(ctx: Context, models: dict) -> None:
    run = ctx.report.run
    keep = ("ZINBVAE/pbmc", "CGMDVAE/kang", "NMFDeconv", "SpatialImputer", "Archetypes")
    for name in [n for n in keep if n in models]:
        entry = models[name]
        model, adata = entry["model"], entry["adata"]
        path = ctx.tmp / name.replace("/", "_")
        saved = run(
            name, "save", lambda m=model, p=path: m.save(str(p), overwrite=True), finite=False
        )
        cls = type(model)
        loaded = run(
            name,
            f"load(path, adata, accelerator='{ctx.accelerator}')",
            lambda c=cls, p=path, a=adata: c.load(str(p), adata=a, accelerator=ctx.accelerator),
            needs=[saved],
            finite=False,
            detail=lambda m: f"module on {_module_device(m)}",
        )
        if loaded is FAILED:
            continue
        run(name, "loaded module on device", lambda m=loaded: _on_device(ctx, m))
        run(
            name,
            "result after load == before save",
            lambda e=entry, m=loaded: _same(_result(e), _result(e, m), LOAD_TOLERANCE, "result"),
            detail=str,
            finite=False,
        )
        for check, (drawn, again) in entry.get("seeded", {}).items():
            if _drawn_cells(check):  # of the library quantiles saved with the model too
                run(
                    name,
                    f"{check} after load == before save",
                    lambda d=drawn, f=again, m=loaded: _same_draws(d, f(m), True),
                    needs=[drawn],
                    detail=str,
                    finite=False,
                )
        before = _float_state(loaded)
        done = len(loaded.history["elbo_train"]) if "elbo_train" in loaded.history else 0
        epochs = ctx.cfg["resume_epochs"]
        resumed = run(
            name,
            f"train after load ({epochs} epochs): loss finite",
            lambda m=loaded, e=epochs: _train(ctx, m, e),
            detail=lambda m, e=epochs, d=done: _epochs_detail(m, e, d),
            finite=False,
        )
        run(
            name,
            "train after load: parameters changed",
            lambda m=loaded, b=before: _parameters_changed(b, _float_state(m)),
            needs=[resumed],
            detail=str,
            finite=False,
        )


def _parameters_changed(before: dict, after: dict) -> str:
    import torch

    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if not changed:
        raise CheckFailed(f"none of {len(before)} parameter tensors changed")
    return f"{len(changed)} of {len(before)} tensors changed"
