"""Start the CGMDVAE's mixture from k-means on the latent space after a short warm-up.

A Gaussian-mixture VAE trained from a random start tends to merge components, or to let one
component explain everything while w absorbs the clusters. As in VaDE and its successors, we
train briefly (KL weight still low, so z is informative), cluster the posterior means of z
(each condition's mean removed, so that clusters are shared across conditions), put one prior
component on each cluster and fit q(y | z) to the assignment. Labelled cells keep their
label's component.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from scvi import REGISTRY_KEYS
from sklearn.cluster import KMeans

from ..module._cgmdvae import initialize_mixture

logger = logging.getLogger(__name__)

_MAX_CELLS = 20_000


def _condition_centred(z: torch.Tensor, cats: torch.Tensor | None) -> np.ndarray:
    """z with each condition's mean moved onto the overall mean, as a numpy array.

    Early in training z still separates the conditions (a strong treatment moves every cell
    type), and k-means on it would spend clusters on condition x cell type. Clustered after
    centring, the groups are shared across conditions; the components start at the mean of
    their members in both conditions, and p(z | w, y, c) learns each condition's shift.
    Each combination of the condition covariates is one group.
    """
    z = z.cpu().numpy()
    if cats is None:
        return z
    _, group = np.unique(cats.cpu().numpy(), axis=0, return_inverse=True)
    group = group.ravel()
    centred = z.copy()
    overall = z.mean(0)
    for g in np.unique(group):
        member = group == g
        centred[member] += overall - z[member].mean(0)
    return centred


class MixtureInitialization(Callback):
    """Lightning callback: k-means initialisation of the mixture at the start of an epoch.

    Parameters
    ----------
    epoch
        Epoch at whose start the mixture is initialised.
    seed
        Seed of k-means and of the cell subsample (at most 20,000 cells are used).

    Notes
    -----
    Under DDP, rank 0 runs k-means on its share of the cells and broadcasts the initialised
    module to the other processes, which must start from the same mixture.

    Examples
    --------
    >>> g.train(max_epochs=100, callbacks=[MixtureInitialization(epoch=5)])  # doctest: +SKIP
    """

    def __init__(self, epoch: int = 5, seed: int = 0):
        super().__init__()
        self.epoch = epoch
        self.seed = seed

    @torch.no_grad()
    def _collect(self, trainer, module):
        zs, zvars, cats, labels = [], [], [], []
        for tensors in trainer.datamodule.train_dataloader():
            tensors = {k: v.to(module.device) for k, v in tensors.items()}
            cat = tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)
            qz, _ = module.encode(tensors[REGISTRY_KEYS.X_KEY], cat)
            zs.append(qz.loc)
            zvars.append(qz.variance)
            if cat is not None:
                cats.append(cat)
            labels.append(tensors[REGISTRY_KEYS.LABELS_KEY])
            if sum(len(z) for z in zs) >= _MAX_CELLS:
                break
        y_obs = module.observed_clusters(torch.cat(labels))
        cats = torch.cat(cats) if cats else None
        return torch.cat(zs), torch.cat(zvars), cats, y_obs

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch != self.epoch:
            return
        module = pl_module.module
        if trainer.is_global_zero:
            was_training = module.training
            module.eval()
            z, z_var, cats, y_obs = self._collect(trainer, module)
            assignments = self._assign(_condition_centred(z, cats), y_obs, module.n_clusters)
            module.train(was_training)
            assignments = torch.as_tensor(assignments, dtype=torch.long, device=z.device)
            initialize_mixture(module, z, assignments, cats, z_var=z_var)
            logger.info(
                "Initialised %d mixture components from k-means at epoch %d.",
                module.n_clusters,
                self.epoch,
            )
        if trainer.world_size > 1:
            # DDP only keeps replicas equal by averaging gradients: every process must start
            # from rank 0's mixture.
            state = trainer.strategy.broadcast(module.state_dict(), src=0)
            module.load_state_dict(state)

    def _assign(self, z: np.ndarray, y_obs, k: int) -> np.ndarray:
        if y_obs is None:
            return KMeans(k, n_init=10, random_state=self.seed).fit_predict(z)
        y = y_obs.cpu().numpy()
        labelled = y >= 0
        n_known = int(y[labelled].max()) + 1 if labelled.any() else 0
        centers = [z[y == j].mean(0) for j in range(n_known) if (y == j).any()]
        if len(centers) < n_known:
            centers = []
        rng = np.random.default_rng(self.seed)
        pool = z[~labelled] if (~labelled).any() else z
        extra = pool[rng.choice(len(pool), size=k - len(centers), replace=False)]
        init = np.vstack([*centers, extra]) if centers else extra
        assignments = KMeans(k, init=init, n_init=1).fit_predict(z)
        # Labelled cells keep their own component.
        assignments[labelled] = y[labelled]
        return assignments
