"""What each model takes instead of the setup arguments it does not take: scvi-tools 1.4's
and the other models' (``SETUP_INSTEAD``, the hint of ``check_setup_target``'s "unexpected
argument" error), and scanpy's and other tools' (``SETUP_FOREIGN``, refused by
``_init_keywords.setup_hints`` before the call)."""

_CONDITIONS_INSTEAD = (
    "its covariates are conditions: condition_key='donor' (a list for several, e.g. "
    "condition_key=['condition', 'donor'])"
)
_CONDITION = "condition_key: the condition or batch, a list for several"
_UNLABELLED_SPOTS = (
    "Archetypes learns without labels (NMFDeconv.from_reference and "
    "SpatialImputer.from_reference read a reference's cell types)"
)
_ONE_SLIDE = "Archetypes' one covariate is each spot's slide (or batch): sample_key='slide'"
_NO_BATCH = "{model} takes no batch or covariate (Archetypes takes each spot's slide as sample_key)"
_REFERENCE_TYPES = (
    "{model} reads the reference's cell types: {model}.from_reference(spots, reference, "
    "labels_key=...)"
)
#: What a model takes instead of scvi-tools' setup arguments it does not, by model.
SETUP_INSTEAD = {
    "ZINBVAE": {
        "labels_key": "ZINBVAE learns without labels; CGMDVAE takes labels_key (supervised or "
        "semi-supervised clusters)",
        "condition_key": "ZINBVAE calls the condition or batch batch_key",
        "continuous_covariate_keys": "ZINBVAE takes no continuous covariates; regress them "
        "out beforehand, or use scvi.model.SCVI",
    },
    "CGMDVAE": {
        "batch_key": _CONDITIONS_INSTEAD,
        "categorical_covariate_keys": _CONDITIONS_INSTEAD,
        "continuous_covariate_keys": "CGMDVAE takes no continuous covariates",
        "size_factor_key": "CGMDVAE reads each cell's library size from its counts",
    },
    "Archetypes": {
        "batch_key": "Archetypes calls each spot's slide (or batch) sample_key",
        "categorical_covariate_keys": _ONE_SLIDE,
        "labels_key": _UNLABELLED_SPOTS,
        "unlabeled_category": _UNLABELLED_SPOTS,
        "condition_key": "Archetypes calls each spot's slide (or batch) sample_key",
    },
    **{
        spot_model: {
            "labels_key": _REFERENCE_TYPES.format(model=spot_model),
            "unlabeled_category": _REFERENCE_TYPES.format(model=spot_model),
            **dict.fromkeys(
                ("batch_key", "categorical_covariate_keys", "condition_key", "sample_key"),
                _NO_BATCH.format(model=spot_model),
            ),
        }
        for spot_model in ("NMFDeconv", "SpatialImputer")
    },
}
for _model in ("Archetypes", "NMFDeconv", "SpatialImputer"):
    SETUP_INSTEAD[_model]["continuous_covariate_keys"] = f"{_model} takes no continuous covariates"
    SETUP_INSTEAD[_model]["size_factor_key"] = (
        f"{_model} takes no size factors: each spot's depth comes from its own counts"
    )
SETUP_INSTEAD["ZINBVAE"]["sample_key"] = "ZINBVAE calls the batch or sample batch_key"
SETUP_INSTEAD["CGMDVAE"]["sample_key"] = _CONDITIONS_INSTEAD
SETUP_INSTEAD["ZINBVAE"]["unlabeled_category"] = (
    "ZINBVAE learns without labels; CGMDVAE takes labels_key and unlabeled_category "
    "(supervised or semi-supervised clusters)"
)

#: scanpy's and other tools' keywords for what a model's setup_anndata names otherwise, by
#: model (``_renamed.foreign_keywords``): refused with ours, never read as aliases.
#: How a model's training is seeded, for the refusals of a seed where none is taken.
SEEDED_BY_SCVI = (
    "its training is seeded by scvi.settings.seed, scvi-tools' way; set it before building "
    "the model (e.g. scvi.settings.seed = 0)"
)
_SETUP_SEEDED = (
    f"setup_anndata registers the data only, and a model takes no seed: {SEEDED_BY_SCVI}"
)
_SEEDS = {"random_state": _SETUP_SEEDED, "seed": _SETUP_SEEDED}
_SLIDE = "sample_key: each spot's slide or batch"
SETUP_FOREIGN = {
    "ZINBVAE": {
        **_SEEDS,
        "groupby": "batch_key: each cell's batch or condition; ZINBVAE learns without cell "
        "labels, CGMDVAE takes them as labels_key=",
        "key": "batch_key",
        "batch": "batch_key",
        "covariates": "categorical_covariate_keys: a list of obs columns, besides batch_key=",
    },
    "CGMDVAE": {
        **_SEEDS,
        "groupby": "labels_key: known cell labels; a condition such as stimulation, batch or "
        "donor is condition_key=",
        "key": _CONDITION,
        "batch": _CONDITION,
        "covariates": _CONDITION,
    },
    "Archetypes": {
        **_SEEDS,
        **dict.fromkeys(("groupby", "key", "batch"), _SLIDE),
        "covariates": _ONE_SLIDE,
    },
    **{
        spot_model: {
            **_SEEDS,
            "groupby": _REFERENCE_TYPES.format(model=spot_model),
            **dict.fromkeys(("key", "batch", "covariates"), _NO_BATCH.format(model=spot_model)),
        }
        for spot_model in ("NMFDeconv", "SpatialImputer")
    },
}


def drop_scvi_defaults(kwargs: dict, model: str) -> None:
    """Remove from ``kwargs`` (``setup_anndata``'s extra keywords) the scvi-tools setup
    arguments ``model`` does not take that were given at scvi-tools' default, ``None`` (or no
    keys, ``[]``): scvi-tools registers nothing for them, so code written for SCVI that spells
    its defaults out (``labels_key=None, continuous_covariate_keys=None``) runs as SCVI's
    does. A value that would register a field is still refused, with its hint above.

    Examples
    --------
    >>> given = {"labels_key": None, "continuous_covariate_keys": ["pct_mito"]}
    >>> drop_scvi_defaults(given, "ZINBVAE")
    >>> given
    {'continuous_covariate_keys': ['pct_mito']}
    """
    for key in [k for k in kwargs if k in SETUP_INSTEAD.get(model, {})]:
        value = kwargs[key]
        if value is None or (isinstance(value, list | tuple) and len(value) == 0):
            del kwargs[key]
