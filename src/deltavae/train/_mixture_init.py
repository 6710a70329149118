"""Start the CGMDVAE's mixture from a clustering of the latent space after a short warm-up.

A Gaussian-mixture VAE trained from a random start tends to merge components, or to let one
component explain everything while w absorbs the clusters. As in VaDE and its successors, we
train briefly (KL weight still low, so z is informative), cluster the posterior means of z
(each condition's mean removed, so that clusters are shared across conditions), put one prior
component on each cluster and fit q(y | z) to the assignment. Labelled cells keep their
label's component.

The groups of an autoencoder's latent space are rarely convex: k-means on z cuts curved
groups apart and joins touching ones. By default the clustering runs on UMAP's fuzzy
k-nearest-neighbour graph of z (as N2D does for autoencoder features), clustered by Leiden
into one group per component, which keeps each group connected; the components are then
fitted to those groups in z itself. With condition
covariates, every cell's neighbours come in equal shares from every condition, so that
clusters are shared by the conditions.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from scipy import sparse
from scvi import REGISTRY_KEYS
from sklearn.cluster import KMeans

from .._checks import check_seed, short_repr
from .._renamed import foreign_keywords
from .._threads import keep_torch_threads
from ..module._cgmdvae import _prior_scale
from ._data import all_training_cells
from ._graph_clusters import exactly_k, fuzzy_graph, leiden_k, match_labels
from ._label_space import _condition_centred, labelled_start, sparse_rows, vote_seeds
from ._label_space import data_components as data_components  # the refit's, as before

logger = logging.getLogger(__name__)

_MAX_CELLS = 20_000
METHODS = ("leiden", "umap", "spectral", "kmeans")
# UMAP for clustering, not display: dense clumps (min_dist=0) in a few more dimensions than 2,
# over 15 neighbours (UMAP's default; 20 and 50 merged touching digits on MNIST more often).
_UMAP_NEIGHBORS, _UMAP_MAX_DIMS = 15, 10
# UMAP's own threshold for exact nearest neighbours (approximate, pynndescent, above it).
_UMAP_EXACT_BELOW = 4096


def _condition_groups(cats: torch.Tensor | None) -> np.ndarray | None:
    """One group per combination of the condition covariates (None without covariates)."""
    if cats is None:
        return None
    _, group = np.unique(cats.cpu().numpy(), axis=0, return_inverse=True)
    return group.ravel()


def _cluster_factors(z, z_var, assignments, k: int, full: bool):
    """Each cluster's mean of z and the Cholesky factor of its covariance (full, or its
    diagonal) plus its cells' mean posterior variance ``z_var`` (None: 0), variances at least
    1e-2; uncorrelated where the factor fails (fewer cells than dimensions). A cluster of
    fewer than two cells gets the data's mean and spread. Returns ``(centers, tril, filled)``,
    ``filled`` marking the clusters of two cells or more.

    Covariance D U U^T D with U unit lower-triangular has the Cholesky factor L = D U: the
    component's scales are L's diagonal and U^-1 = L^-1 D.
    """
    spread = z.var(0) if len(z) > 1 else torch.ones_like(z[0])
    noise = z_var if z_var is not None else torch.zeros_like(z)
    centers, covariances, filled = [], [], []
    for j in range(k):
        member = assignments == j
        filled.append(bool(member.sum() > 1))
        if filled[-1]:
            zj = z[member]
            centers.append(zj.mean(0))
            cov = torch.atleast_2d(torch.cov(zj.T)) if full else torch.diag(zj.var(0))
            covariances.append(cov + torch.diag(noise[member].mean(0)))
        else:  # an empty component: broad, centred on the data
            centers.append(z.mean(0))
            covariances.append(torch.diag(spread + noise.mean(0)))
    centers, covariances = torch.stack(centers), torch.stack(covariances)
    variances = covariances.diagonal(dim1=-2, dim2=-1)
    covariances = covariances + torch.diag_embed(variances.clamp(min=1e-2) - variances)
    tril, failed = torch.linalg.cholesky_ex(covariances)
    if bool(failed.any()):
        diagonal = torch.diag_embed(covariances.diagonal(dim1=-2, dim2=-1).sqrt())
        tril = torch.where((failed > 0).view(-1, 1, 1), diagonal, tril)
    return centers, tril, filled


def initialize_mixture(
    module,
    z: torch.Tensor,
    assignments: torch.Tensor,
    cat_covs: torch.Tensor | None,
    z_var: torch.Tensor | None = None,
    n_steps: int = 200,
) -> None:
    """Place the K prior components of a :class:`~deltavae.module.CGMDVAEModule` on given
    clusters of z and fit q(y | z) to them (Adam on the cluster head).

    ``z`` holds posterior means and ``z_var`` (optional) posterior variances: a component's
    variance is the spread of its cells' means plus their average posterior variance, so the
    components cover the samples of z the ELBO is evaluated at, not only their means.
    """
    k = module.n_clusters
    full = module.prior.covariance == "full"
    centers, tril, _ = _cluster_factors(z, z_var, assignments, k, full)
    scales = tril.diagonal(dim1=-2, dim2=-1)
    with torch.no_grad():
        # Components start at the cluster centres and depend on (w, c) only weakly; training
        # takes it from there.
        module.prior.mean.weight.mul_(0.1)
        module.prior.mean.bias.copy_(centers.reshape(-1))
        module.prior.log_var.weight.mul_(0.1)
        module.prior.log_var.bias.copy_((2 * scales.log()).reshape(-1))
        if full:
            unmix = torch.linalg.solve_triangular(tril, torch.diag_embed(scales), upper=False)
            module.prior.unmix_lower.copy_(torch.tril(unmix, diagonal=-1))
    fit_cluster_head(module, z, assignments, cat_covs, n_steps)


def fit_cluster_head(module, z, assignments, cat_covs=None, n_steps: int = 200) -> None:
    """Fit q(y | z, c), the module's cluster head, to ``assignments`` (Adam, cross-entropy)."""
    head = module.cluster_head
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    was_training = head.training
    head.train()
    with torch.enable_grad():
        for _ in range(n_steps):
            optimizer.zero_grad()
            logits, _ = module.cluster_posterior(z, cat_covs)
            F.cross_entropy(logits, assignments).backward()
            optimizer.step()
    head.train(was_training)


@torch.no_grad()
def refit_mixture(module, z, w, z_var, assignments, cat_covs=None, n_steps: int = 200) -> None:
    """Move a trained mixture onto new clusters of z, keeping what its prior network learned.

    Unlike ``initialize_mixture``, which restarts the prior network, each component keeps
    its dependence on w and the conditions (the condition shifts that
    ``get_latent_representation(condition=...)`` and ``move_latent`` use): ``assignments``
    are first numbered to agree most with the components' current partition (argmax of q(y |
    z, c), Hungarian algorithm), then the output biases of component j are moved so that its
    mean over cluster j's cells equals their mean of z and its scales match their covariance
    plus their mean posterior variance (``z_var``); full components also take the cluster's
    correlations. The cluster head is fitted to the clusters last (``n_steps`` Adam steps on
    them). A component with fewer than two cells is left as it is. ``z`` and ``w`` are
    posterior means, ``cat_covs`` the cells' condition codes (None without conditions):
    tensors on any device or arrays (as ``get_latent_representation`` returns them), moved to
    the module's.

    Examples
    --------
    >>> refit_mixture(module, z, w, z_var, clusters, cats)  # doctest: +SKIP
    """
    from scipy.optimize import linear_sum_assignment

    k, d = module.n_clusters, module.n_latent
    # On a GPU the module's networks refuse host tensors (a latent read back as numpy).
    device, dtype = module.prior.mean.bias.device, module.prior.mean.bias.dtype
    z, w, z_var = (
        None if v is None else torch.as_tensor(v, dtype=dtype, device=device) for v in (z, w, z_var)
    )
    assignments = torch.as_tensor(assignments, dtype=torch.long, device=device)
    if cat_covs is not None:
        cat_covs = torch.as_tensor(cat_covs, dtype=torch.long, device=device)
    logits, _ = module.cluster_posterior(z, cat_covs)
    overlap = np.zeros((k, k))
    np.add.at(overlap, (assignments.cpu().numpy(), logits.argmax(-1).cpu().numpy()), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    component = torch.empty(k, dtype=torch.long, device=z.device)
    component[torch.as_tensor(rows, device=z.device)] = torch.as_tensor(cols, device=z.device)
    assignments = component[assignments]
    prior = module.prior_distribution(w, cat_covs)
    means, scales = prior.mean, _prior_scale(prior)  # (cells, K, d)
    full = module.prior.covariance == "full"
    mean_bias = module.prior.mean.bias.view(k, d)
    log_var_bias = module.prior.log_var.bias.view(k, d)
    centers, tril, filled = _cluster_factors(z, z_var, assignments, k, full)
    target = tril.diagonal(dim1=-2, dim2=-1)
    for j in np.flatnonzero(filled):
        member = assignments == j
        mean_bias[j] += centers[j] - means[member, j].mean(0)
        log_var_bias[j] += 2 * target[j].log() - 2 * scales[member, j].log().mean(0)
        if full:
            unmix = torch.linalg.solve_triangular(tril[j], torch.diag(target[j]), upper=False)
            module.prior.unmix_lower[j] = torch.tril(unmix, diagonal=-1)
    fit_cluster_head(module, z, assignments, cat_covs, n_steps)


@torch.no_grad()
def encode_cells(module, batches, max_cells: int | None = None, keep_x: bool = False) -> dict:
    """Posterior means of z and w, z's variances, condition codes and labels of the cells in
    ``batches`` (minibatch dicts on the module's device), stopping after ``max_cells``, and
    with ``keep_x`` their data as ``"x"`` (CSR; else None). ``cats`` is None without
    conditions."""
    keys, parts = ("z", "w", "z_var", "cats", "labels"), {"x": []}
    n = 0
    for tensors in batches:
        cat, x = tensors.get(REGISTRY_KEYS.CAT_COVS_KEY), tensors[REGISTRY_KEYS.X_KEY]
        qz, qw = module.encode(x, cat)
        values = (qz.loc, qw.loc, qz.variance, cat, tensors.get(REGISTRY_KEYS.LABELS_KEY))
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                parts.setdefault(key, []).append(value)
        if keep_x:
            parts["x"].append(sparse_rows(x))
        n += len(qz.loc)
        if max_cells is not None and n >= max_cells:
            break
    found = {key: torch.cat(parts[key]) if key in parts else None for key in keys}
    return {**found, "x": sparse.vstack(parts["x"]).tocsr() if parts["x"] else None}


def check_method(method: str, argument: str = "method") -> None:
    """Refuse a mixture-start method other than :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"{argument} must be one of {METHODS}, got {method!r}.")


def _balanced_neighbours(z: np.ndarray, group: np.ndarray, n_neighbors: int):
    """k-nearest neighbours with an equal share from every condition group (as BBKNN).

    A treatment moves each cell type its own way, so centring leaves some types' treated
    cells apart from their controls; with neighbours drawn from every condition they stay one
    connected group. With a single group, the plain k nearest neighbours. Returns indices and
    distances sorted by distance (the cell first).
    """
    from sklearn.neighbors import NearestNeighbors

    groups = np.unique(group)
    per_group = max(1, n_neighbors // len(groups))
    indices, distances = [], []
    for g in groups:
        member = np.flatnonzero(group == g)
        # Brute force: exact as a tree, and 2-3x faster in z's 10-30 dimensions.
        nn = NearestNeighbors(n_neighbors=min(per_group, len(member)), algorithm="brute")
        nn.fit(z[member])
        dist, idx = nn.kneighbors(z)
        indices.append(member[idx])
        distances.append(dist)
    indices, distances = np.hstack(indices), np.hstack(distances)
    # Brute force computes |a|^2 + |b|^2 - 2ab, which leaves ~1e-8 for a cell's own distance.
    distances[indices == np.arange(len(z))[:, None]] = 0.0
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(indices, order, 1), np.take_along_axis(distances, order, 1)


def _embed(z: np.ndarray, k: int, seed: int, group: np.ndarray | None = None) -> np.ndarray:
    """UMAP embedding of z for clustering; z itself when there are too few cells for it.

    With several condition groups, the neighbour graph takes an equal share of each cell's
    neighbours from every group (:func:`_balanced_neighbours`).
    """
    if len(z) <= 2 * _UMAP_NEIGHBORS:
        return z
    from umap import UMAP

    dims = min(k, _UMAP_MAX_DIMS, z.shape[1])
    n_neighbors, knn = _UMAP_NEIGHBORS, None
    several = group is not None and len(np.unique(group)) > 1
    # Below _UMAP_EXACT_BELOW cells UMAP finds exact neighbours itself, but through all
    # pairwise distances with a Python-level metric (about 2 s for 2,500 cells); scikit-learn
    # gives the same exact neighbours (one group) in milliseconds.
    if several or len(z) < _UMAP_EXACT_BELOW:
        one = group if several else np.zeros(len(z))
        indices, distances = _balanced_neighbours(z, one, _UMAP_NEIGHBORS)
        n_neighbors, knn = indices.shape[1], (indices, distances, None)
    umap = UMAP(
        n_components=dims,
        n_neighbors=n_neighbors,
        min_dist=0.0,
        random_state=seed,
        precomputed_knn=knn or (None, None, None),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(n_jobs|random_state|precomputed).*")
        return umap.fit_transform(z)


def _spectral(z: np.ndarray, k: int, seed: int, group: np.ndarray | None = None) -> np.ndarray:
    """Spectral embedding of the kNN graph of z (k dimensions), for k-means, without UMAP.

    The graph is the one UMAP would build (:func:`_balanced_neighbours`, 15 neighbours in
    equal shares from every condition), weighted by a Gaussian kernel with a local bandwidth
    per cell (the distance to its 7th neighbour, self-tuning spectral clustering) and
    symmetrised. The leading k eigenvectors of its normalised Laplacian (LOBPCG), each row
    scaled to unit length (Ng, Jordan and Weiss), follow connected groups as UMAP's layout
    does, in about a second for 10,000 cells and with nothing to compile.
    """
    from scipy import sparse
    from sklearn.manifold import spectral_embedding

    if len(z) <= 2 * _UMAP_NEIGHBORS or k < 2:
        return z
    one = group if group is not None else np.zeros(len(z))
    indices, distances = _balanced_neighbours(z, one, _UMAP_NEIGHBORS)
    bandwidth = np.maximum(distances[:, min(7, distances.shape[1] - 1)], 1e-8)
    weights = np.exp(-(distances**2) / (bandwidth[:, None] * bandwidth[indices]))
    rows = np.repeat(np.arange(len(z)), indices.shape[1])
    graph = sparse.csr_matrix((weights.ravel(), (rows, indices.ravel())), shape=(len(z),) * 2)
    graph = graph.maximum(graph.T)
    with warnings.catch_warnings():
        # A graph in several pieces is what clustering looks for, not a failure.
        warnings.filterwarnings("ignore", message=r".*not fully connected.*")
        embedding = spectral_embedding(
            graph, n_components=k, eigen_solver="lobpcg", random_state=seed, drop_first=False
        )
    return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)


def _leiden(
    z: np.ndarray,
    k: int,
    seed: int,
    group: np.ndarray | None = None,
    data: np.ndarray | None = None,
) -> np.ndarray:
    """k clusters of z by Leiden on UMAP's fuzzy graph of the balanced neighbours.

    The same neighbours as the UMAP start (:func:`_balanced_neighbours`, 15 in equal shares
    from every condition) and the same fuzzy weights, clustered directly
    (:func:`~deltavae.train._graph_clusters.leiden_k`, then
    :func:`~deltavae.train._graph_clusters.exactly_k`): no layout to optimise. With ``data``
    (the same cells in another representation, e.g. ``data_components``) the graph joins both
    (:func:`joined_graph`).
    """
    return exactly_k(z, leiden_k(joined_graph(z, group, data), k, seed), k, seed)


def joined_graph(z: np.ndarray, group: np.ndarray | None = None, data: np.ndarray | None = None):
    """UMAP's fuzzy graph of z's balanced neighbours (:func:`_balanced_neighbours`), joined
    with that of ``data`` (the same cells in another representation; None: z's alone), CSR.

    Without condition groups the join is the fuzzy union, a + b - ab per edge (as umap-learn
    joins the graphs of two metrics): an edge only one graph sees keeps its weight. With
    groups it is the mean, which halves such an edge: z's neighbours are then drawn in equal
    shares from every group, through the prior's condition shifts, and its edges to cells the
    data do not call alike are noise there. Lymph node, ten seeds: ARI 0.678 (mean) against
    0.714 (union); Kang's 8 donors (donor groups), seeds 0-2: 0.766, 0.695, 0.721 against
    0.552, 0.706, 0.746 (mean 0.727 against 0.668; benchmarks/README.md, D12, D22).
    """
    one = group if group is not None else np.zeros(len(z))
    graph = fuzzy_graph(*_balanced_neighbours(z, one, _UMAP_NEIGHBORS))
    if data is not None:
        other = fuzzy_graph(*_balanced_neighbours(data, one, _UMAP_NEIGHBORS))
        graph = graph + other - graph.multiply(other) if group is None else (graph + other) / 2
    return graph.tocsr()


class MixtureInitialization(Callback):
    """Lightning callback: initialise the mixture from clusters of z at the start of an epoch.

    Parameters
    ----------
    epoch
        Epoch at whose start the mixture is initialised.
    seed
        Seed of the clustering and of the cell subsample (at most 20,000 cells are used), in
        [0, 2**32 - 1].
    method
        ``"leiden"`` (default): Leiden on UMAP's fuzzy graph of z's 15 nearest neighbours
        (in equal shares from every condition), its resolution searched to give one cluster
        per component (``_leiden``); a labelled model's graph joins its data's principal
        components' neighbours (``labelled_start``).
        It follows connected, curved groups as ``"umap"`` does, without optimising a layout
        (benchmarks/README.md, Numbers behind the defaults, D4).
        ``"umap"``: k-means on a UMAP embedding of the same graph (``min_dist=0``; up to 10
        dimensions).
        ``"spectral"``: k-means on a spectral embedding of the same neighbour graph
        (``_spectral``; no UMAP, no compilation, about a second on 10,000 cells).
        ``"kmeans"``: k-means on z directly (fastest, for convex groups).
        With some cells labelled, every method's clusters are named by the clusters of the
        labelled cells' neighbours (``match_labels``).

    Notes
    -----
    Under DDP, rank 0 clusters the training cells of every process (as one process does)
    and broadcasts the initialised module to the others, which must start from the same
    mixture.

    Examples
    --------
    >>> g.train(max_epochs=100, callbacks=[MixtureInitialization(epoch=5)])  # doctest: +SKIP
    """

    @foreign_keywords(random_state="seed")
    def __init__(self, epoch: int = 5, seed: int = 0, method: str = "leiden"):
        super().__init__()
        check_method(method)
        check_seed(seed)  # 2**32 or "0": scikit-learn's error at the start epoch, after training
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {short_repr(epoch)}.")
        self.epoch = epoch
        self.seed = seed
        self.method = method

    @torch.no_grad()
    def _collect(self, trainer, module):
        batches = (
            {k: v.to(module.device) for k, v in tensors.items()}
            for tensors in all_training_cells(trainer)
        )
        # Models with labels keep their data: its principal components name the clusters
        # (train/_label_space.py).
        keep_x = bool((module.label_to_cluster >= 0).any())
        cells = encode_cells(module, batches, _MAX_CELLS, keep_x)
        y_obs = module.observed_clusters(cells["labels"])
        return cells["z"], cells["z_var"], cells["cats"], y_obs, cells["x"]

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != self.epoch:
            return
        module = pl_module.module
        if trainer.is_global_zero:
            was_training = module.training
            module.eval()
            z, z_var, cats, y_obs, x = self._collect(trainer, module)
            # Clustering NaN would fail deep in scikit-learn; say that training diverged.
            pl_module.stop_if_diverged(z.sum() + z_var.sum(), 0, "latent means of the cells")
            group = _condition_groups(cats)
            points = _condition_centred(z, group)
            y = None if y_obs is None else y_obs.cpu().numpy()
            space = data = None
            if y is not None and not bool((y >= 0).all()):
                counts, k = module.observation.is_count, module.n_clusters
                space, data = labelled_start(points, x, group, self.seed, k, counts)
            assignments = self.cluster(points, module.n_clusters, group, y, data, space)
            module.train(was_training)
            assignments = torch.as_tensor(assignments, dtype=torch.long, device=z.device)
            initialize_mixture(module, z, assignments, cats, z_var=z_var)
            logger.info("Initialised %d mixture components from %s clusters at epoch %d.",
                        module.n_clusters, self.method, self.epoch)  # fmt: skip
        if trainer.world_size > 1:
            # DDP only keeps replicas equal by averaging gradients: every process must start
            # from rank 0's mixture.
            # On the CPU: pickled CUDA tensors would land on rank 0's GPU in every process.
            state = {key: value.cpu() for key, value in module.state_dict().items()}
            module.load_state_dict(trainer.strategy.broadcast(state, src=0))

    @keep_torch_threads()  # UMAP's numba too
    def cluster(
        self,
        points: np.ndarray,
        k: int,
        group: np.ndarray | None = None,
        y: np.ndarray | None = None,
        data: np.ndarray | None = None,
        space: np.ndarray | None = None,
    ) -> np.ndarray:
        """The start's ``k`` clusters of ``points`` (condition-centred z) by ``method``.

        ``group`` holds each point's condition group; ``y`` each point's component for
        labelled cells and -1 for the others (None: no labels). Labelled cells keep their
        component. ``data``: the same cells in a second representation whose neighbours join
        z's in the graph (Leiden only; the refit of count models and the start of labelled
        models pass ``data_components`` unless they separate the conditions, D15).
        ``space``: the same cells' coordinates whose neighbours of each labelled cell name
        every method's clusters (``label_space``; None: the
        labelled cells' own clusters); k-means starts each label's component at its labelled
        cells' neighbours there (``vote_seeds``), not at the
        labelled cells, whose lone cells, one per type, often lay in another type's group.
        Returns one component per point.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> points = np.vstack([rng.normal(size=(50, 2)), rng.normal(8, 1, size=(50, 2))])
        >>> clusters = MixtureInitialization().cluster(points, 2)
        >>> len(set(clusters[:50])), len(set(clusters[50:])), bool(clusters[0] != clusters[50])
        (1, 1, True)
        """
        if y is not None and bool((y >= 0).all()):
            return np.array(y, dtype=np.int64)  # each cell its label's component
        if self.method == "leiden" and len(points) > 2 * k:
            clusters = _leiden(points, k, self.seed, group, data)
        else:
            embed = {"umap": _embed, "spectral": _spectral}.get(self.method)
            found = points if embed is None else embed(points, k, self.seed, group)
            if y is None or space is None:
                clusters = KMeans(k, n_init=10, random_state=self.seed).fit_predict(found)
            else:  # started at the labelled cells' neighbours: one component per type
                init = vote_seeds(found, space, y, k, self.seed)
                clusters = KMeans(k, init=init, n_init=1).fit_predict(found)
        return clusters if y is None else match_labels(clusters, y, k, points, space)
