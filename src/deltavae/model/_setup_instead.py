"""What each model takes instead of the scvi-tools setup arguments it does not take: the hint
of ``check_setup_target``'s "unexpected argument" error."""

_CONDITIONS_INSTEAD = (
    "its covariates are conditions: condition_key='donor' (a list for several, e.g. "
    "condition_key=['condition', 'donor'])"
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
    },
    **{
        spot_model: {
            "labels_key": f"{spot_model} reads the reference's cell types: "
            f"{spot_model}.from_reference(spots, reference, labels_key=...)",
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
