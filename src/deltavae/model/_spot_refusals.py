"""scvi-tools' read-outs of a VAE of cells that a model of spots (NMFDeconv, Archetypes,
SpatialImputer) does not have, refused by name with the model's own read-out that answers
instead: an scvi-tools user calls them first, and Python's or scvi-tools' message named
none."""

from __future__ import annotations

#: Each spot model's own read-outs of expression, named where get_normalized_expression is.
_EXPRESSION_READ_OUTS = {
    "NMFDeconv": "get_signatures() gives the expected counts of one cell of each type (types "
    "x genes), get_proportions() the spots' shares of the types.",
    "Archetypes": "get_archetype_profiles() gives the archetypes' normalised expression (genes "
    "x archetypes), get_archetype_weights() the spots' weights over them.",
    "SpatialImputer": "impute() gives the spots' expected counts of the reference genes they "
    "did not measure (impute(genes=[...]) of any reference genes).",
}

#: Each spot model's representation of its spots, named where get_latent_representation is
#: (SpatialImputer's latent design has one of its own).
_LATENT_READ_OUTS = {
    "NMFDeconv": "get_proportions() gives each spot's shares of the reference's cell types "
    "(spots x types; obsm['proportions'] after write_to_adata), the representation to embed "
    "or cluster spots by (sc.pp.neighbors(adata, use_rep='proportions')).",
    "Archetypes": "get_archetype_weights() gives each spot's weights over the archetypes "
    "(spots x archetypes; obsm['archetype_weights'] after write_to_adata), the representation "
    "to embed or cluster spots by (sc.pp.neighbors(adata, use_rep='archetype_weights')).",
}

#: What compares each spot model's spots across samples, for its refused differential_abundance.
_ABUNDANCE_READ_OUTS = {
    "NMFDeconv": "Compare its cell-type shares across samples: "
    "model.get_proportions().groupby(adata.obs['sample']).mean().",
    "Archetypes": "Compare its spots' weights across samples: "
    "model.get_archetype_weights().groupby(adata.obs['sample']).mean() (technical differences "
    "between samples are in get_sample_factors()).",
    "SpatialImputer": "Compare its reference states' shares across samples (design="
    "'deconvolution', the default): model.get_proportions().groupby(adata.obs['sample'])"
    ".mean(); the latent design's spots: get_latent_representation().",
}


class SpotScviRefusals:
    """The refusals, for :class:`~deltavae.model._spots.SpotModelMixin`."""

    def get_normalized_expression(self, *args, **kwargs):
        """Not a spot model's (scvi-tools' per-cell expression of a VAE): refused, naming the
        model's own expression read-outs."""
        name = type(self).__name__
        raise NotImplementedError(
            f"get_normalized_expression is not implemented for {name}, which is not a VAE of "
            f"cells: {_EXPRESSION_READ_OUTS.get(name, '')}"
        )

    def get_latent_representation(self, *args, **kwargs):
        """Not NMFDeconv's nor Archetypes' (scvi-tools' latent of a VAE of cells, which an
        scvi-tools user calls first): refused, naming the model's representation of its
        spots (Python's own message named no method)."""
        name = type(self).__name__
        raise NotImplementedError(
            f"get_latent_representation is not implemented for {name}, which is not a VAE of "
            f"cells: {_LATENT_READ_OUTS.get(name, '')}"
        )

    def differential_abundance(self, *args, **kwargs):
        """Not a spot model's (scvi-tools' comparison across samples of the density of cells'
        latent representations, which a spot model does not have): refused, naming what
        compares the model's spots across samples."""
        name = type(self).__name__
        raise NotImplementedError(
            f"differential_abundance is not implemented for {name}: scvi-tools' method "
            "compares, across samples, the density of each cell's latent representation, "
            f"which a model of spots does not have. {_ABUNDANCE_READ_OUTS.get(name, '')} For "
            "the abundance of cells across samples, fit a VAE of cells (dv.model.ZINBVAE or "
            "CGMDVAE) and call its differential_abundance(sample_key=...)."
        )
