"""What :meth:`~deltavae.model.Archetypes.get_anchors` (and ``write_to_adata``) says of
archetypes whose anchors are not what anchors are meant to be: spots that are mostly that
archetype."""

from __future__ import annotations

import pandas as pd

from ._validation import warn_user


def warn_anchor_notes(out: pd.Series, weights: pd.DataFrame) -> None:
    """Warn of the archetypes ``out.attrs`` lists (see
    :func:`~deltavae.model._archetype_results.anchors`): those no spot weighs most (no
    anchors), and those anchored below 1/2, whose anchors (the spots they weigh most) are
    mixtures, not pure examples: after a short fit the weights have not yet reached the
    spots' corners. The second was listed in ``attrs`` alone, in silence."""
    if unled := out.attrs["no_spots"]:
        it = "them" if len(unled) > 1 else "it"
        warn_user(
            f"archetype {', '.join(unled)} has no anchors and is the dominant archetype of no "
            f"spot: no spot weighs {it} most. Merging stops at 2 archetypes, so {it} stands "
            "without spots behind it: the spots may hold one state with a few outliers (or the "
            "fit is short: train longer). get_anchors(...).attrs['no_spots'] and, after "
            "write_to_adata, uns['archetypes']['no_spots'] list it; write_to_adata leaves it out "
            "of the categories of obs['archetype_dominant'] and obs['archetype_anchor'] (scanpy's "
            "rank_genes_groups refuses a group without spots), as CGMDVAE's empty clusters."
        )
    if below := out.attrs["anchored_below_half"]:
        top = ", ".join(f"{name} {weights[name].max():.2f}" for name in below[:5])
        one = len(below) == 1
        it, each = ("it", "it") if one else ("them", "each")
        warn_user(
            f"archetype{'' if one else 's'} {', '.join(below)} weigh{'s' if one else ''} no "
            f"spot above 1/2 (largest weight: {top}): the anchors are the spots {each} weighs "
            f"most, mixtures rather than examples of {it}. Train longer (a larger max_epochs; "
            "the fit's convergence verdict says whether it ended early); weights that stay "
            "below 1/2 mean no spot in these data is mostly that archetype. "
            f"get_anchors(...).attrs['anchored_below_half'] lists {it}."
        )
