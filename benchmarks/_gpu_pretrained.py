"""gpu_check.py's pretrained CGMDVAE (variants phase): ``CGMDVAE.from_zinbvae`` of phase 1's
ZINBVAE, trained on the device where that ZINBVAE was trained.

The weights are carried from the ZINBVAE's module on the device; the first ``train`` places
the mixture on the pretrained z at epoch 0 and runs ``early_stopping="auto"`` (stopping and
the best validation epoch kept, as CGMDVAE's default); ``predict_labels`` then scores the
typicality record on the device. The model joins phase 5, which reads its latent, cluster
probabilities and typicality again on the CPU copy.
"""

from __future__ import annotations

from _gpu_report import FAILED, CheckFailed, Context


def _trained_detail(model) -> str:
    """The run's epochs and the best epoch kept: ``early_stopping="auto"`` validated."""
    if "validation_loss" not in model.history:
        raise CheckFailed("no validation_loss: early_stopping='auto' did not validate")
    epochs = len(model.history["elbo_train"])
    return f"{epochs} epochs, best_epoch_ {model.best_epoch_} (early_stopping='auto')"


def pretrained_entry(ctx: Context, models: dict) -> None:
    """``CGMDVAE/from_zinbvae``: built from ``models["ZINBVAE/pbmc"]`` (skipped without it),
    trained, read, and added to ``models`` for phase 5."""
    import deltavae as dv
    from deltavae.model._from_zinbvae import PRETRAINED_EPOCHS

    source = models.get("ZINBVAE/pbmc")
    if source is None:
        return
    run, name = ctx.report.run, "CGMDVAE/from_zinbvae"
    epochs = min(PRETRAINED_EPOCHS, ctx.cfg["variant_epochs"])
    model = run(
        name,
        "CGMDVAE.from_zinbvae(ZINBVAE/pbmc)",
        lambda: dv.model.CGMDVAE.from_zinbvae(
            source["model"], adata=source["adata"].copy(), n_clusters=8
        ),
        detail=lambda m: f"pretrained_from_ {m.pretrained_from_}",
        finite=False,
    )
    trained = ctx.train(
        name,
        model,
        epochs,
        f"train({epochs} epochs, early_stopping='auto')",
        on_device=True,
        early_stopping="auto",
        train_size=0.9,
    )
    if trained is FAILED:
        return
    run(name, "best epoch kept", lambda: _trained_detail(model), detail=str, finite=False)
    latent = run(name, f"latent on {ctx.device}", model.get_latent_representation)
    soft = run(name, "predict_clusters(soft=True)", lambda: model.predict_clusters(soft=True))
    labels = run(
        name,
        "predict_labels (typicality)",
        model.predict_labels,
        detail=lambda p: f"typicality median {p['typicality'].median():.3f}",
        finite=False,
    )
    models[name] = {
        "model": model,
        "adata": model.adata,
        "latent": latent,
        "soft": soft,
        "typicality": None if labels is FAILED else labels["typicality"].to_numpy(),
        "kind": "latent",
    }
