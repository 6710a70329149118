"""Read-outs and training paths added since the last GPU run (2026-12-04_h200), followed with
each tensor's would-be device (:mod:`_device_tracker`, as in test_device_tracking.py):
``CGMDVAE.from_zinbvae`` (and ``from_scvi_model``) with the ZINBVAE on the device, the first
training after it (mixture placed at epoch 0, ``early_stopping="auto"``), ``predict_labels``'
typicality and the record a query's ``load_query_data`` scores, ``predict`` from a user's
data loader, differential expression written for scanpy (``pts``/``pts_rest``), scvi-tools'
``plan_config``/``trainer_config``, and Archetypes with ``n_archetypes="auto"``."""

import deltavae as dv

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}


def _counts(seed=0):
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=seed
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    return adata


def test_from_zinbvae_and_its_training_stay_on_the_device(tracked, tmp_path):
    """The weights carried from a ZINBVAE on the device (covariate columns it lacked start
    at 0, made beside its weights), then the pretrained CGMDVAE trained and read. The other
    CGMDVAEs are set up on copies, leaving the first one's registration alone."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    vae.train(max_epochs=2, **TRAIN)
    built = {}

    def build():
        built["model"] = dv.model.CGMDVAE.from_zinbvae(
            vae, labels_key="cell_type", unlabeled_category="unknown", n_clusters=3
        )

    def scvi_form():
        return dv.model.CGMDVAE.from_scvi_model(vae, None, adata=adata.copy(), n_clusters=3)

    plain = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, encode_covariates=False)
    plain.train(max_epochs=1, **TRAIN)

    def new_columns():  # the CGMDVAE's encoder reads conditions this one's did not
        return dv.model.CGMDVAE.from_zinbvae(plain, adata=adata.copy(), n_clusters=3)

    tracked(vae.module, {"from_zinbvae": build, "from_scvi_model": scvi_form})
    tracked(plain.module, {"new covariate columns": new_columns})
    model = built["model"]
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    tracked(
        model.module,
        {
            "labels, typicality": lambda: model.predict_labels(unknown_below=0.2),
            "predict": model.predict,
            "predict soft": lambda: model.predict(soft=True),
            "clusters": lambda: model.predict_clusters(soft=True),
            "translate": lambda: model.translate(ctrl, "stim", seed=0),
            "write": lambda: model.write_to_adata(adata.copy()),
            "de pts": lambda: model.differential_expression(
                groupby="cluster", key_added="rank_genes_groups"
            ),
            "save": lambda: model.save(tmp_path / "g"),
            "correlation": lambda: model.get_feature_correlation_matrix(n_samples=2),
            "library": lambda: model.get_latent_library_size(give_mean=False),
            "likelihood": model.get_likelihood_parameters,
            "posterior predictive": lambda: model.posterior_predictive_sample(n_samples=2),
            "expression drawn": lambda: model.get_normalized_expression(n_samples=2),
            "sample in minibatches": lambda: model.sample(30, seed=0, batch_size=8),
            "elbo per cell": lambda: model.get_elbo(return_mean=False),
        },
        train=lambda: model.train(max_epochs=2, early_stopping="auto", train_size=0.8, **TRAIN),
    )


def test_query_of_a_pretrained_cgmdvae_and_its_typicality_stay_on_the_device(tracked):
    """load_query_data scores the reference's typicality record (not read before) on the
    reference's device; the query's labels, typicality and DE table."""
    adata = _counts()
    adata.obs.loc[adata.obs_names[::2], "cell_type"] = "unknown"
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    vae.train(max_epochs=2, **TRAIN)
    model = dv.model.CGMDVAE.from_zinbvae(
        vae, labels_key="cell_type", unlabeled_category="unknown", n_clusters=3
    )
    model.train(max_epochs=2, train_size=0.8, **TRAIN)
    query = adata[adata.obs["condition"] == "stim"].copy()
    query.obs["condition"] = "new"
    mapped = {}

    def load():  # scores the reference's typicality record on its device
        mapped["q"] = dv.model.CGMDVAE.load_query_data(query, model, accelerator="cpu")

    tracked(model.module, {"load_query_data": load})
    q = mapped["q"]
    from scvi.dataloaders import AnnDataLoader

    tracked(
        q.module,
        {
            "typicality": lambda: q.predict_labels(unknown_below=0.5),
            "predict, a dataloader": lambda: q.predict(
                dataloader=AnnDataLoader(q.adata_manager, batch_size=32)
            ),
            "write": lambda: q.write_to_adata(unknown_below=0.5),
            "de pts": lambda: q.differential_expression(
                groupby="cluster", key_added="rank_genes_groups"
            ),
        },
        train=lambda: q.train(max_epochs=1, **TRAIN),
    )


def test_zinbvae_de_and_configs_stay_on_the_device(tracked):
    from scvi.train import TrainerConfig, TrainingPlanConfig

    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    tracked(
        vae.module,
        {
            "de pts": lambda: vae.differential_expression(
                groupby="cluster", key_added="rank_genes_groups"
            ),
            "de against a group": lambda: vae.differential_expression(
                groupby="cluster", group1="0", group2="1", key_added="rank_genes_groups"
            ),
        },
        train=lambda: vae.train(
            plan_config=TrainingPlanConfig(lr=2e-3, weight_decay=1e-4),
            trainer_config=TrainerConfig(max_epochs=2, early_stopping=True),
            train_size=0.8,
            **TRAIN,
        ),
    )


def test_archetypes_of_an_automatic_count_stay_on_the_device(tracked):
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes="auto")
    tracked(
        model.module,
        {"weights": model.get_archetype_weights, "write": lambda: model.write_to_adata(mix.copy())},
        train=lambda: model.train(max_epochs=2, **TRAIN),
    )
