"""Archetypes: reference-free archetypal analysis of spatial spots on raw counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data.fields import CategoricalObsField
from scvi.model.base import BaseModelClass

from ..module import ArchetypesModule
from ..module._gene_order import in_name_order
from . import _archetype_results as results
from ._archetype_checks import MergeSettings, check_count, check_new_spots
from ._archetype_merging import ArchetypeMergingMixin
from ._archetype_samples import sample_factor_table, samples_named, warn_unused_samples
from ._archetype_signatures import match_signatures
from ._backed import writes_backed
from ._base import DeltaModelMixin
from ._candidates import archetype_start, candidate_samples, restore_candidate_samples
from ._init_keywords import keyword_hints, setup_hints
from ._load_state import saved_state
from ._obs_checks import check_obs_keys
from ._spots import (
    SpotModelMixin,
    second_argument_was,
    spot_rate,
)
from ._validation import check_model_arguments, check_setup_target

_CP10K = 1e4
_SAMPLE = REGISTRY_KEYS.BATCH_KEY
# Arguments that must be positive integers.
_SIZES = ("max_archetypes", "n_pcs", "n_hidden", "n_layers", "max_candidates", "smooth_neighbors")
_SIZES += ("min_spots",)


class Archetypes(
    ArchetypeMergingMixin, MergeSettings, SpotModelMixin, DeltaModelMixin, BaseModelClass
):
    """Archetypal analysis of spots on raw counts: Y = W B X with an NB likelihood.

    Every archetype is a convex combination of spots (B) and every spot a convex combination
    of archetypes (W, from an amortised encoder, so new spots can be mapped). The number of
    archetypes can be chosen by the elbow of the explained variance of classical archetypal
    analysis, which also gives the starting B. Archetypes combine a fixed set of candidate
    spots: every spot when there are at most ``max_candidates``, else ``max_candidates`` spots
    chosen on a first pass (``candidate_spots``), so that B
    and memory stay bounded however many spots train (in memory or from disk,
    :func:`deltavae.read_lazy`). After training, archetypes whose profiles
    point the same way (cosine similarity of their deviations from the mean spot above
    ``merge_threshold``) are merged, and so is an archetype that fewer than ``min_spots``
    spots weigh most (into its most similar archetype), each with a warning naming them;
    every result refers to the merged archetypes. Classical archetypal analysis runs on spots
    averaged over their ``smooth_neighbors`` nearest neighbours, so that an archetype needs
    several spots behind it: on the raw spots one outlying spot (a doublet, a dropout-heavy
    spot) becomes an archetype of its own.

    Parameters
    ----------
    adata
        Spots with raw counts, registered with :meth:`setup_anndata`.
    n_archetypes
        Number of archetypes, or ``"auto"`` for the explained-variance elbow over
        2 to ``max_archetypes``: the first number whose next archetype explains less than 7%
        of the variance that 2 archetypes leave unexplained (a stopping rule, so the choice
        does not move with ``max_archetypes`` once the range passes it).
    max_archetypes
        Largest number tried by ``"auto"``; at most the spots over ``min_spots`` (each
        archetype must be the largest weight of ``min_spots`` spots to stand). Where every
        number up to it still adds 7%, ``"auto"`` chooses it (``elbow_["stopped"]`` false,
        said in the log and by :func:`deltavae.pl.archetype_elbow`): try a larger one.
    merge_threshold
        Similarity above which archetypes merge (1 never merges). It and ``min_spots`` can be
        set after training (``model.merge_threshold = 0.8``) and are saved with the model.
    n_pcs
        Principal components in which classical archetypal analysis runs.
    n_hidden
        Units per hidden layer of the encoder.
    n_layers
        Hidden layers of the encoder.
    dropout_rate
        Dropout rate of the encoder's hidden layers.
    prior_concentration
        Dirichlet concentration of the weights' prior.
    max_candidates
        Most spots archetypes are combinations of (B's columns).
    smooth_neighbors
        Neighbours (in the PCA embedding) each candidate spot is averaged with before
        classical archetypal analysis; 1 uses the spots as they are.
    min_spots
        Fewest spots that must weigh an archetype most for it to stand on its own.

    Examples
    --------
    >>> import deltavae as dv
    >>> spots = dv.datasets.convex_mixtures(n_spots=300, n_archetypes=4)
    >>> dv.model.Archetypes.setup_anndata(spots)
    >>> a = dv.model.Archetypes(spots, n_archetypes="auto")
    >>> a.train(max_epochs=200)  # doctest: +SKIP
    >>> a.write_to_adata(spots)  # doctest: +SKIP
    """

    _per_spot_parameter = ("B_logits", 1)  # loads onto its fitted spots only
    _writes_own_genes = True  # varm: write_to_adata NaN-fills the genes it did not read

    _module_cls = ArchetypesModule
    _results_of_fitted_spots = True  # write_to_adata: NaN rows for spots left out of the fit
    weights_key = "archetype_weights"
    profiles_key = "archetype_profiles"
    anchor_key = "archetype_anchor"
    dominant_key = "archetype_dominant"
    markers_key = "archetype_markers"
    uns_key = "archetypes"

    @keyword_hints(n_comps="n_pcs: the principal components archetypal analysis runs in")
    def __init__(
        self,
        adata: AnnData,
        n_archetypes: int | str = "auto",
        max_archetypes: int = 10,
        merge_threshold: float = 0.9,
        n_pcs: int = 30,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        prior_concentration: float = 1.0,
        max_candidates: int = 2000,
        smooth_neighbors: int = 10,
        min_spots: int = 5,
    ):
        super().__init__(adata)
        check_model_arguments(
            {name: value for name, value in locals().items() if name in _SIZES},
            dropout_rate=dropout_rate,
            positive={"prior_concentration": prior_concentration},
        )
        self.merge_threshold, self.min_spots = merge_threshold, min_spots  # checked, saved
        rows, profiles, mean_profile, init_B, self.elbow_ = archetype_start(
            self, n_archetypes, max_archetypes, n_pcs, max_candidates, smooth_neighbors
        )  # a load skips it: the saved parameters replace the start
        self.candidate_rows_ = rows
        n_archetypes = self.n_archetypes_raw_ = int(init_B.shape[0])
        saved = saved_state(self)  # a model saved before its encoder read counts per 10,000
        cp10k_input = saved is None or "reads_cp10k" in saved
        self.module = self._module_cls(
            candidate_profiles=torch.as_tensor(profiles, dtype=torch.float32),
            init_B=torch.as_tensor(init_B, dtype=torch.float32),
            mean_profile=torch.as_tensor(mean_profile, dtype=torch.float32),
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            prior_concentration=prior_concentration,
            n_samples=self.summary_stats.get("n_batch", 1),
            candidate_samples=None if rows is None else candidate_samples(self, rows),
            cp10k_input=cp10k_input,
        )
        in_name_order(self.module.encoder, adata.var_names)  # any order of the genes: one start
        self.signature_map_, self._cache = None, {}
        summary = (
            f"Archetypes: {n_archetypes} raw archetypes (alike ones merge: archetype_names()), "
            f"{adata.n_obs} spots ({len(profiles)} candidates), {adata.n_vars} genes"
        )  # and the merge threshold as it is now (MergeSettings.summary_string)
        self._finish_init(summary, locals())

    @classmethod
    @setup_hints("Archetypes")
    def setup_anndata(
        cls, adata: AnnData, layer: str | None = None, sample_key: str | None = None, **kwargs
    ) -> None:
        """Register the spots' raw counts and, for several slides fitted together, their sample.

        Parameters
        ----------
        adata
            Spots x genes with raw counts, in memory or opened with :func:`deltavae.read_lazy`.
        layer
            Layer with the counts; ``None`` for ``adata.X``.
        sample_key
            obs column naming each spot's sample (slide). The samples share the archetypes;
            each gets a technical factor per gene (:meth:`get_sample_factors`).

        Examples
        --------
        >>> dv.model.Archetypes.setup_anndata(spots, sample_key="slide")  # doctest: +SKIP
        """
        args = cls._get_setup_method_args(**locals())
        check_setup_target(adata, kwargs, cls.__name__)  # before adata.obs is read
        check_obs_keys(adata, {"sample_key": sample_key})
        warn_unused_samples(adata, sample_key)
        samples = [] if sample_key is None else [CategoricalObsField(_SAMPLE, sample_key)]
        with samples_named(adata, sample_key):
            cls._register_spots(adata, layer, args, extra_fields=samples, **kwargs)

    def get_sample_factors(self) -> pd.DataFrame:
        """Each sample's technical factor of each gene (genes x samples; 1 is no change; their
        log averages 0 over the samples; NaN for a category of ``sample_key`` without spots).
        Registered with one sample, every factor is 1.

        Examples
        --------
        >>> a.get_sample_factors().head()  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        return sample_factor_table(self)

    def train(self, max_epochs: int = 300, lr: float | None = None, **kwargs):
        """Train by SVI, with the training loop every deltavae model shares.

        Parameters
        ----------
        max_epochs
            Passes through the spots.
        lr
            Adam learning rate; default 5e-3 (or ``plan_kwargs``' ``lr``).
        **kwargs
            Passed to the shared training loop, :meth:`deltavae.model.ZINBVAE.train`
            (``batch_size``, ``accelerator``, Lightning trainer arguments ...).

        Examples
        --------
        >>> a.train(max_epochs=200, early_stopping=True)  # doctest: +SKIP
        """
        self._cache = {}
        lr = spot_rate(lr, kwargs, 5e-3, self.module)
        return super().train(max_epochs=max_epochs, lr=lr, **kwargs)

    def _after_load(self) -> None:
        super()._after_load()
        restore_candidate_samples(self)  # __init__ chose candidates under today's seed

    def _match_genes(self, adata: AnnData) -> AnnData:
        return check_new_spots(adata, self._training_genes(), getattr(self, "registry_", None))

    def get_archetype_profiles(self) -> pd.DataFrame:
        """Normalised expression of each (merged) archetype: genes x archetypes.

        Merged archetypes average their members' profiles, weighted by the members' total
        weight over the training spots. Each column sums to 1.

        Examples
        --------
        >>> a.get_archetype_profiles().idxmax()  # doctest: +SKIP
        """
        raw = self._raw_profiles()
        groups, _ = self._merge()
        weights, empty = self._raw_weights(None, None, empty=True)
        usage = weights[~empty].sum(axis=0) + 1e-12  # spots without counts left out
        merged = np.zeros((groups.max() + 1, raw.shape[1]))
        np.add.at(merged, groups, usage[:, None] * raw)
        merged /= merged.sum(axis=1, keepdims=True)
        return pd.DataFrame(merged.T, index=self.adata.var_names, columns=self.archetype_names())

    def get_anchors(self, n_anchors: int = 20) -> pd.Series:
        """The spots nearest each archetype: its ``n_anchors`` largest weights.

        A spot anchors at most one archetype (the one it weighs most); anchors need a weight
        above 1/2, so an archetype may have fewer. One that no spot weighs above 1/2 (a short
        fit) is anchored by the spots it weighs most (``attrs["anchored_below_half"]``); one
        that no spot weighs most has none (``attrs["no_spots"]``, warned by name).

        Parameters
        ----------
        n_anchors
            Anchors per archetype.

        Returns
        -------
        pandas.Series
            Categorical, the archetype a spot anchors, NaN elsewhere. Spots without counts
            anchor none (warned): ``attrs["empty_spots"]`` names them.

        Examples
        --------
        >>> a.get_anchors(10).value_counts()  # doctest: +SKIP
        """
        check_count("get_anchors", "n_anchors", n_anchors, "spots kept per archetype")
        return results.read_anchors(self, n_anchors)

    def get_markers(self, n_genes: int = 100) -> dict:
        """Marker genes of each archetype in scanpy's ``rank_genes_groups`` layout.

        Genes are ranked by ``score = (e_k - e_rest) / sqrt(e_mean + 1)``, with ``e`` the
        archetype profiles in counts per 10,000, ``e_rest`` the mean of the other archetypes
        and ``e_mean`` of all. ``logfoldchanges`` are ``log2((e_k + 1) / (e_rest + 1))``. These
        are profile contrasts, not tests: ``pvals`` and ``pvals_adj`` are NaN.

        Parameters
        ----------
        n_genes
            Genes kept per archetype.

        Returns
        -------
        dict
            ``params``, ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj``
            (record arrays with one field per archetype), as ``sc.tl.rank_genes_groups``
            writes them; after :meth:`write_to_adata`, ``sc.pl.rank_genes_groups(adata,
            key="archetype_markers")`` draws them.

        Examples
        --------
        >>> a.get_markers(20)["names"]["A0"][:5]  # doctest: +SKIP
        """
        check_count("get_markers", "n_genes", n_genes, "genes kept per archetype")
        profiles = self.get_archetype_profiles() * _CP10K
        return results.rank_genes_layout(profiles, n_genes, self.dominant_key)

    # ------------------------------------------------------------------------- signatures
    def match_signatures(
        self,
        signatures: Mapping[str, Sequence[str]],
        variant_ratio: float = 0.5,
        gene_symbols: str | None = None,
    ) -> pd.DataFrame:
        """Match archetypes one-to-one to known gene signatures; say which of the rest are
        variants of a matched signature and rank the others as novel.

        A signature's score for an archetype is the mean, over its genes, of the archetype's
        log expression standardised across archetypes: each gene weighs the same, however
        highly expressed, so a gene of the signature that is lowest in the type's archetype in
        these data pulls the score there down as much as a marker raises it (compare
        :meth:`get_markers`, or score the genes one by one). Signatures and archetypes are paired
        by stable matching; pairs with a score of 0 or below are not kept. An unmatched
        archetype whose best score reaches ``variant_ratio`` times the score of the archetype
        matched to that signature is a ``"variant"`` of it (a second T-cell state scores
        high on the T signature too, and is not novel). The rest are ``"novel"`` states,
        ranked by their distance to the nearest signature (the negative of their best
        score): rank 1 is the least like any signature.

        Parameters
        ----------
        signatures
            ``{name: [genes]}``. Absent genes, and signatures with none, are dropped (warned).
        variant_ratio
            Fraction of the matched archetype's score an unmatched archetype needs on the
            same signature to count as its variant.
        gene_symbols
            Column of ``model.adata.var`` naming the signatures' genes (as scanpy's
            ``gene_symbols``: symbols where ``var_names`` are Ensembl IDs); default var_names.

        Returns
        -------
        pandas.DataFrame
            One row per archetype: ``signature`` (matched or varied-on name, or NaN),
            ``score`` (of the match, or the best score when unmatched), ``status``
            (``"matched"``, ``"variant"`` or ``"novel"``), ``novel_rank`` (NaN unless
            novel) and ``weak`` (see below). Also kept for :meth:`write_to_adata`
            (``uns["archetypes"]["signature_map"]``). Signatures that matched no archetype
            (more signatures than archetypes, or none scoring above 0) are warned about, with
            their best archetype and the gene without which their best score rises most (an
            "anti-marker" below 0 there), and listed in ``attrs["unmatched_signatures"]``.
            A ``"matched"`` or ``"variant"`` row is weak, its genes telling its archetype
            from the others no more than random genes do, where its own score is below the
            median best score of random sets of as many of the model's genes (drawn with a
            fixed seed; a state the data lack gets its best archetype at a score near 0), or
            where its signature holds half of the model's genes or more (random sets of
            that size are mostly its own genes: a signature of every gene would match
            whichever archetype expresses most genes most). Weak rows are warned about,
            marked ``True`` in ``weak`` (their status left as it is) and their signatures
            listed in ``attrs["weak_matches"]``.

        Examples
        --------
        >>> a.match_signatures({"B": ["MS4A1", "CD79A"], "T": ["CD3E", "CD3D"]})  # doctest: +SKIP
        """
        return match_signatures(self, signatures, variant_ratio, gene_symbols)

    # ------------------------------------------------------------------------- output
    @writes_backed
    @second_argument_was("n_anchors")
    def write_to_adata(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        key_added: str | None = None,
        *,
        n_anchors: int = 20,
    ) -> list[str]:
        """Write weights, profiles, anchors, dominant archetype, markers and a summary.

        Parameters
        ----------
        adata
            The training spots and genes, in any order; other spots besides get NaN rows
            (warned), other genes (the whole of ``adata[:, hvg]``) NaN profiles; default the
            model's AnnData (of a loaded model, the one given to :meth:`load`).
        batch_size
            Spots per minibatch (as every model's ``write_to_adata``). Before, the second
            argument was ``n_anchors``: a second positional argument is still read as
            ``n_anchors``, with a FutureWarning; pass it by name.
        key_added
            Prefix of every key written (``key_added="k4"``: ``obsm/k4_archetype_weights``,
            ...), so that fits with other settings sit side by side; default none.
        n_anchors
            Anchors per archetype (see :meth:`get_anchors`).

        Returns
        -------
        The keys written: ``obsm/archetype_weights`` (a DataFrame, spots x archetypes),
        ``varm/archetype_profiles`` (an array, genes x archetypes, its columns named in
        ``uns["archetypes"]["names"]``), ``obs/archetype_anchor``, ``obs/archetype_dominant``
        (categorical over the archetypes some spot weighs most, in their order: one that no spot
        does is left out, warned and listed in ``no_spots``, as CGMDVAE leaves out its empty
        clusters, since ``sc.tl.rank_genes_groups`` refuses an empty group;
        ``.cat.set_categories(uns["archetypes"]["names"])`` adds it), ``uns/archetype_markers``
        and ``uns/archetypes`` (``names``, ``n_archetypes_raw``,
        ``merge_threshold``, ``min_spots``, ``merge_groups``, ``merge_tree`` (scipy linkage of
        the raw archetypes), ``n_empty_spots`` (spots without counts: NaN weights, dominant
        and anchor), ``no_spots`` (archetypes no spot weighs most: no anchors, warned),
        ``elbow`` when chosen, ``signature_map``, ``unmatched_signatures`` and
        ``weak_matches``).

        Examples
        --------
        >>> a.write_to_adata(spots)  # doctest: +SKIP
        >>> a.write_to_adata(spots, n_anchors=10, key_added="k4")  # doctest: +SKIP
        """
        return results.write(self, adata, batch_size, key_added, n_anchors)
