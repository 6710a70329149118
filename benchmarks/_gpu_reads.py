"""gpu_check.py's phase 5, read-outs beyond each model's main result: those that keep every
minibatch's values on the device and bring them to the host together (deltavae.model._gathered:
normalized expression, likelihood parameters, library sizes, marginal likelihood, differential
expression's group means, differential abundance, the spot models' abundance, weights, latents
and chunked imputation), the labelled CGMDVAE's labels and moved latents by the vote over
conditions and SpatialImputer's imputation of spots changed in place, read on the device and
again on the CPU copy, which must agree within the devices' tolerance.

``get_normalized_expression`` (its importance-weighted draws of cells too),
``get_likelihood_parameters``, ``get_latent_library_size`` (``give_mean=False``),
``get_marginal_ll`` (its importance draws of the guide's latents) and through the first
differential expression draw z (and a latent library, CGMDVAE's w) on the
CPU, cell after cell, from torch's CPU generator, and ``get_feature_correlation_matrix`` its
gamma draws too: they are read at one seed (:func:`_seeded`), so that both devices draw the
same latents and what differs is the read-out's own code (its gathering, joining and layout).
``posterior_predictive_sample`` draws every number on the CPU
from torch's CPU generator, so one seed gives the same counts on both devices (compared by
their per-gene and per-cell totals, :func:`_seeded_predictive`).
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

# The count models read here (each a scvi-tools RNASeqMixin): the main ones, the one with a
# batch (several transform_batch) and the one with a latent library and a dispersion per batch.
RNA_MODELS = ("ZINBVAE/pbmc", "CGMDVAE/kang", "ZINBVAE/kang-ref", "ZINBVAE/gene-batch")


def _seeded(read):
    """``read`` at torch's seed 0: the latents it draws on the CPU from torch's CPU generator
    are the same on every device."""

    def call(model):
        import torch

        torch.manual_seed(0)
        return read(model)

    return call


#: The label's end of a read whose latents are drawn on the CPU at one seed.
SEEDED_Z = ", z drawn on the CPU (seeded)"


def _batches(model) -> list | None:
    """The model's batch categories where it has several (``transform_batch`` of each)."""
    from scvi import REGISTRY_KEYS

    try:
        mapping = model.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
    except KeyError:
        return None
    categories = list(getattr(mapping, "categorical_mapping", []))
    return categories if len(categories) > 1 else None


def _rna_reads(model) -> dict:
    genes = list(model.adata.var_names[:50])
    batches = _batches(model)
    every = {"transform_batch": batches} if batches else {}
    label = "get_normalized_expression(1e4, 50 genes" + (", every batch)" if batches else ")")
    reads = {
        label: lambda m: m.get_normalized_expression(
            library_size=1e4, gene_list=genes, batch_size=128, **every
        ),
        "get_likelihood_parameters()": lambda m: m.get_likelihood_parameters(batch_size=128),
        "get_latent_library_size(give_mean=False)": lambda m: m.get_latent_library_size(
            give_mean=False, batch_size=128
        ),
        "get_marginal_ll(2 draws, return_mean=False)": lambda m: m.get_marginal_ll(
            n_mc_samples=2, return_mean=False, batch_size=128
        ),
        "get_feature_correlation_matrix(2 draws, gammas too)": lambda m: (
            m.get_feature_correlation_matrix(n_samples=2, batch_size=128).to_numpy()
        ),
    }
    reads = {f"{k}{SEEDED_Z}": _seeded(f) for k, f in reads.items()}
    reads[SEEDED_PPC] = _seeded_predictive
    if getattr(model, "label_conditions_", None):
        reads["predict_labels(soft, a label taken from one condition: the vote)"] = _voted_labels
        if getattr(model, "condition_keys", None):
            reads["get_latent_representation(condition=, moved by the vote)"] = _voted_moves
    if type(model).__name__ == "ZINBVAE" and batches is None:  # a N(0, I) prior: weighed
        reads[f"get_normalized_expression(importance weights, 100 cells){SEEDED_Z}"] = (
            _importance_weighted
        )
    if "cell_type" in model.adata.obs:  # latent means: nothing drawn
        reads["differential_abundance(cell_type)"] = _abundance
        reads[f"differential_expression(cell_type, first type){SEEDED_Z}"] = _seeded(
            _expression_change
        )
    return reads


@contextmanager
def _one_label_struck(model):
    """Inside, one label's training cells under one combination of conditions struck from the
    model's record (``label_conditions_``): the cells of that combination are labelled, and
    moved, by the vote over conditions (``model/_label_votes.py``) on the device; the
    combination's first condition value is yielded."""
    seen = dict(model.label_conditions_)
    trained = [combo for combo, n in seen.items() if n > 0]
    struck = next(c for c in trained if any(o[0] == c[0] and o != c for o in trained))
    model.label_conditions_ = {**seen, struck: 0}
    try:
        yield struck[1]
    finally:
        model.label_conditions_ = seen


def _voted_labels(model):
    """``predict_labels(soft=True)``, a label struck from one combination's record."""
    with _one_label_struck(model):
        return model.predict_labels(soft=True, batch_size=128).to_numpy()


def _voted_moves(model):
    """``get_latent_representation(condition=...)`` of every cell, moved to another value of
    the first condition key than the struck combination's, a label struck from it: the cells
    of that combination are moved by the voted q(y | z, c), the others by their own."""
    with _one_label_struck(model) as struck:
        key = model.condition_keys[0]
        values = [str(v) for v in model._cat_state().mappings[key]]
        to = next(v for v in values if v != str(struck))
        return model.get_latent_representation(condition={key: to}, batch_size=128)


def _expression_change(model) -> dict:
    """DE of the first cell type against the rest: the groups' mean expression (``scale1``,
    ``scale2``), its cells drawn with numpy's global generator from one seed (the state put
    back after). The probabilities and Bayes factors count pairs of draws, which a last digit
    may reorder: not compared."""
    import numpy as np

    first = str(model.adata.obs["cell_type"].astype("category").cat.categories[0])
    state = np.random.get_state()  # noqa: NPY002 - scvi-tools draws the cells with it
    try:
        np.random.seed(0)  # noqa: NPY002
        de = model.differential_expression(groupby="cell_type", group1=first, batch_size=128)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    de = de.loc[model.adata.var_names]
    return {key: de[key].to_numpy() for key in ("scale1", "scale2")}


def _importance_weighted(model):
    """``get_normalized_expression(weights="importance")`` of 100 cells, 150 draws: z drawn on
    the CPU (torch's seed), the anchors and the cells drawn by numpy's global generator (seeded,
    its state put back). The weights are of the device's likelihoods: a last digit moves a
    drawn cell only where a uniform falls that close to an edge of the weights' sums (about
    one read in a thousand)."""
    import numpy as np
    import torch

    state = np.random.get_state()  # noqa: NPY002 - scvi-tools draws with it
    try:
        np.random.seed(0)  # noqa: NPY002
        torch.manual_seed(0)
        return model.get_normalized_expression(
            indices=np.arange(100), n_samples_overall=150, weights="importance",
            gene_list=list(model.adata.var_names[:50]), batch_size=64, return_numpy=True,
            n_mc_samples=4, n_mc_samples_per_pass=4,
        )  # fmt: skip
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _abundance(model):
    model.differential_abundance(sample_key="cell_type", num_cells_posterior=200, batch_size=128)
    return model.adata.obsm.pop("da_log_probs")


#: posterior_predictive_sample draws every number on the CPU from torch's CPU generator
#: (CellDraws): one seed, the same counts on the device as on the CPU.
SEEDED_PPC = "posterior_predictive_sample(2 draws, seeded, other minibatches): totals"


#: The minibatch sizes of successive seeded reads: the device's read and the CPU's differ.
_PPC_BATCHES = itertools.cycle((64, 48))


def _seeded_predictive(model) -> dict:
    """Counts of ``posterior_predictive_sample`` at one seed, summed per gene and per cell:
    drawn on the CPU from the device's parameters, they agree with the CPU's but where a
    parameter's last digit moves a draw across a boundary (rare; one count in a total of
    thousands), where draws made on the device would differ in every entry. The minibatch
    size differs between the two reads (the draws do not depend on it)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    draws = model.posterior_predictive_sample(n_samples=2, batch_size=next(_PPC_BATCHES))
    dense = np.asarray(draws.todense(), dtype=np.float64)
    return {"per gene": dense.sum(axis=(0, 2)), "per cell": dense.sum(axis=(1, 2))}


def _spot_reads(model) -> dict:
    kind = type(model).__name__
    n = model.adata.n_obs
    if kind == "NMFDeconv":
        return {
            "get_abundance(batch_size=64)": lambda m: m.get_abundance(batch_size=64),
            SEEDED_PPC: _seeded_predictive,
        }
    if kind == "Archetypes":
        return {
            "get_archetype_weights(new spots, batch_size=16)": lambda m: m.get_archetype_weights(
                m.adata[:50].copy(), batch_size=16
            ),
            SEEDED_PPC: _seeded_predictive,
        }
    if kind != "SpatialImputer":
        return {}
    reads = {
        SEEDED_PPC: _seeded_predictive,
        "impute(a quarter of the spots at a time)": lambda m: m.impute(batch_size=max(1, n // 4)),
        "impute() of the spots subset and reordered in place": _spots_changed_in_place,
    }
    if model.design_ == "latent":
        reads["get_latent_representation(return_dist=True)"] = lambda m: dict(
            zip(("loc", "var"), m.get_latent_representation(return_dist=True), strict=True)
        )
        reads["get_latent_representation(reference=True)"] = lambda m: m.get_latent_representation(
            reference=True
        )
    else:
        reads["get_proportions(batch_size=64)"] = lambda m: m.get_proportions(batch_size=64)
    return reads


def _spots_changed_in_place(model):
    """``impute()`` (no AnnData) after the spots given to ``from_reference`` were subset and
    reordered in place (``sc.pp.filter_cells``): it follows the spots left, in their order
    (``spots_now``). The given spots are swapped for such a copy meanwhile, not changed, so
    that the later phases read them whole; a model without them (loaded) reads its own."""
    given = getattr(model, "_query_adata", None)
    if given is None:
        return model.impute(batch_size=64)
    model._query_adata = given[::-1][: given.n_obs - given.n_obs // 10].copy()
    try:
        out = model.impute(batch_size=64)
        if not out.index.equals(model._query_adata.obs_names):
            from _gpu_report import CheckFailed

            raise CheckFailed("impute() did not follow the spots changed in place")
        return out
    finally:
        model._query_adata = given


def device_reads(name: str, model) -> dict:
    """``{label: read(model)}`` of the model's gathered read-outs phase 5 compares."""
    if name in RNA_MODELS:
        return _rna_reads(model)
    return _spot_reads(model)


def same_read(on_device, on_cpu, tolerance: float) -> str:
    """Each part (a dict's values) within ``tolerance`` of the largest value, as ``_same``."""
    from _gpu_report import _same

    if isinstance(on_device, dict):
        if set(on_device) != set(on_cpu):
            from _gpu_report import CheckFailed

            raise CheckFailed(f"parts differ: {sorted(on_device)} and {sorted(on_cpu)}")
        return "; ".join(_same(on_device[k], on_cpu[k], tolerance, k) for k in on_device)
    return _same(on_device, on_cpu, tolerance, "values")
