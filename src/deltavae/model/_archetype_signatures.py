"""``Archetypes.match_signatures``: the signatures' genes read in the model's gene names or
in a column of their symbols, scored against the archetype profiles and matched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._archetype_checks import signature_genes
from ._archetype_results import signature_scores, signature_table

_CP10K = 1e4


def match_signatures(model, signatures, variant_ratio: float, gene_symbols) -> pd.DataFrame:
    """The body of :meth:`deltavae.model.Archetypes.match_signatures`: its table, kept with
    the profiles it was made of (``signature_map_``, ``signature_profiles_``, saved)."""
    genes = signature_genes(model.adata, gene_symbols)  # before the profiles are read
    profiles = model.get_archetype_profiles()
    sig_names, scores = signature_scores(
        np.log1p(profiles.to_numpy() * _CP10K), genes, signatures, model.adata.var
    )
    table = signature_table(scores, sig_names, profiles.columns, variant_ratio)
    # The map is written while these profiles hold (saved); both set once it is made.
    model.signature_profiles_, model.signature_map_ = profiles, table
    return table
