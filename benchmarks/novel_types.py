"""Cells of a type the reference never saw, in CGMDVAE label transfer: how well a per-cell score
tells them from the known types (``predict_labels``' ``typicality`` and ``unknown_below``).

Kang's eight control donors (kang_ifnb_8donors, 1,287 genes): reference = donors 1015, 1256
and 1488 without the held-out type (``--held-out``, NK cells by default), query = donors 1244
and 1016 with every type, unlabelled (drawn with numpy seed ``seed``: ``--n-ref`` / ``--n-query``
cells). The reference is a ``CGMDVAE(condition_key="donor", labels_key="cell_type")`` trained
``--epochs`` epochs (``--train-size`` of its cells train, the rest validate); the query is
mapped with ``load_query_data`` (its donors are new categories) and trained ``--query-epochs``.
Scores of each query cell, higher = more like the reference's training cells, each turned into
the share of the reference's training cells scoring lower:

* ``density``: log p(z, w | c) at the posterior means, N(w; 0, I) times the mixture of
  p(z | w, y, c) over y weighted by E[d] (the prior's density); ``density_z`` without the w term;
* ``recon``: log p(x | z, c) at the mean of z (its own library), ``recon_umi`` per UMI;
* ``deviance_umi``: minus the NB deviance per UMI at the mean of z;
* ``knn``: minus the mean distance in z to the 15 nearest reference training cells;
* ``min(a, b)``: the smaller of two scores' shares; ``product(a, b)`` their product (Fisher's
  combination of the two shares, ranked alike);
* ``typicality (predict_labels)``: the column itself, the share of the reference's validation
  cells whose ``min(deviance_umi, density)`` is lower, the two ranked among its cells outside the
  test split (:mod:`deltavae.model._typicality`; every cell outside it where fewer than 200
  validate);
* ``confidence``: ``predict_labels``' (the baseline);
* with ``--records``, the same typicality against records built from other reference cells
  (``outside-test``: everything from the training and validation cells, as before 2026-12-06;
  ``validation``: everything from the validation cells, which gave no gradient; ``train``:
  from the training cells; ``mapped``: the two scores ranked among the cells outside the test
  split, their smaller rank among the validation cells' smaller ranks, as ``predict_labels``
  does), each printed as
  ``typicality [record: NAME]`` with its own threshold lines.

Printed: AUROC of each (known against held-out query cells), the accuracy of the labels on the
known cells, and for the typicality at each of 0.01, 0.05, 0.1 and 0.2 the share of held-out and
of known cells under it and the accuracy on the known cells left above it.

Run from the repository root (one thread; about 70 CPU seconds a run)::

    DELTAVAE_DATA=/work/shared/data python benchmarks/novel_types.py \
        --seeds 0 1 --held-out "NK cells" "B cells"
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402
from _common import Timer  # noqa: E402
from _env import announce  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

import deltavae as dv  # noqa: E402
from deltavae._rng import forked_generators  # noqa: E402
from deltavae.model._condition_counts import not_test_positions  # noqa: E402
from deltavae.model._typicality import (  # noqa: E402
    _smaller_share,
    fit_scores,
    record_typicality,
    settle_record,
    typicality,
)

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
REF_DONORS = ["1015", "1256", "1488"]
QUERY_DONORS = ["1244", "1016"]
THRESHOLDS = (0.01, 0.05, 0.1, 0.2)


def log_density(module, z, w, cat_covs) -> torch.Tensor:
    """log p(z, w | c) at ``z`` and ``w``: N(w; 0, I) times the mixture of p(z | w, y, c) over y
    weighted by E[d] = alpha / sum alpha."""
    log_pz = module.prior_distribution(w, cat_covs).log_prob(z.unsqueeze(-2))  # (cells, K)
    log_pi = torch.log(module.alpha / module.alpha.sum())
    mixture = torch.logsumexp(log_pz + log_pi, dim=-1)
    return mixture + torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)


@torch.inference_mode()
def _scores(model, adata) -> dict[str, np.ndarray]:
    """Per cell: z, the two densities (with and without the w term), the reconstruction
    log-likelihood at the mean of z (all, per UMI) and the NB deviance per UMI (minus)."""
    from scvi import REGISTRY_KEYS

    from deltavae.distributions import count_log_prob

    module = model.module
    module.eval()
    out = {k: [] for k in ("z", "density", "density_z", "recon", "recon_umi", "deviance_umi")}
    for tensors in model._make_data_loader(model._validate_anndata(adata), batch_size=512):
        inf = module.inference(**module._get_inference_input(tensors), draw=False)
        z, w, cats = inf["qz"].loc, inf["qw"].loc, tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)
        x = tensors[REGISTRY_KEYS.X_KEY]
        both = log_density(module, z, w, cats)
        w_term = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
        params = module.decode(z, cats, inf["library"])
        recon = module.observation.log_prob(params, x)
        umis = x.sum(-1).clamp(min=1.0)
        fit = count_log_prob(x, params["mu"], params["theta"], None).sum(-1)
        saturated = count_log_prob(x, x.clamp(min=1e-8), params["theta"], None).sum(-1)
        values = (z, both, both - w_term, recon, recon / umis, -(saturated - fit) / umis)
        for key, value in zip(out, values, strict=True):
            out[key].append(value)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _share_lower(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of ``reference`` scores under each of ``values`` (a typicality)."""
    return np.searchsorted(np.sort(reference), values, side="left") / len(reference)


def _split(seed: int, held_out: str, n_ref: int, n_query: int):
    adata = dv.datasets.kang_ifnb_8donors()
    adata.obs["donor"] = adata.obs["donor"].astype(str)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    rng = np.random.default_rng(seed)
    donor, kind = adata.obs["donor"], adata.obs["cell_type"]
    ref_rows = np.flatnonzero(donor.isin(REF_DONORS) & (kind != held_out))
    query_rows = np.flatnonzero(donor.isin(QUERY_DONORS))
    ref = adata[np.sort(rng.choice(ref_rows, n_ref, replace=False))].copy()
    query = adata[np.sort(rng.choice(query_rows, n_query, replace=False))].copy()
    truth = query.obs.pop("cell_type").to_numpy()
    return ref, query, truth


def _records(model, names) -> dict[str, dict]:
    """The reference's typicality record of each of ``names`` (its cells outside the test split,
    its validation cells, its training cells); the model keeps the one its fit made."""
    settle_record(model)
    own = model.typicality_record_
    rows = {
        "outside-test": lambda: not_test_positions(model),
        "validation": lambda: model.validation_indices,
        "train": lambda: model.train_indices,
    }
    out = {}
    for name in names:
        if name == "mapped":
            out[name] = _mapped_record(model, out.get("outside-test") or own)
            continue
        record_typicality(model, np.sort(np.asarray(rows[name]())))
        settle_record(model)
        out[name] = model.typicality_record_
    model.typicality_record_ = own
    return out


def _mapped_record(model, record: dict) -> dict:
    """``record``'s score quantiles (all cells outside the test split), its last step (the
    smaller share to the typicality) from the validation cells' smaller shares."""
    with forked_generators(model.device):
        scores = fit_scores(model, model.adata, np.sort(model.validation_indices))
    quantiles = np.asarray(record["quantiles"]).T
    smaller = _smaller_share(scores.astype(float), quantiles)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return {**record, "smaller_share": [float(v) for v in np.quantile(smaller, levels)]}


def _thresholds(row, name, typical, novel, right) -> None:
    for thr in THRESHOLDS:
        flagged = typical < thr
        row[f"{name} < {thr}"] = (
            f"held-out {flagged[novel].mean():.3f}, known {flagged[~novel].mean():.3f}, "
            f"accuracy on known kept {right[~novel & ~flagged].mean():.3f}"
        )


def run(seed: int, held_out: str, args) -> dict:
    scvi.settings.seed = seed
    ref, query, truth = _split(seed, held_out, args.n_ref, args.n_query)
    with Timer() as t:
        dv.model.CGMDVAE.setup_anndata(ref, condition_key="donor", labels_key="cell_type")
        model = dv.model.CGMDVAE(ref)
        model.train(max_epochs=args.epochs, batch_size=128, train_size=args.train_size, **QUIET)
        records = _records(model, args.records)
        q = dv.model.CGMDVAE.load_query_data(query, model)
        q.train(max_epochs=args.query_epochs, batch_size=128, **QUIET)
    ref_s = _scores(model, model.adata[model.train_indices])
    query_s = _scores(q, query)
    novel = truth == held_out
    table = q.predict_labels(query)
    k = 15
    nn = NearestNeighbors(n_neighbors=k + 1).fit(ref_s["z"])
    ref_s["knn"] = -nn.kneighbors(ref_s["z"])[0][:, 1:].mean(1)
    query_s["knn"] = -nn.kneighbors(query_s["z"])[0][:, :k].mean(1)
    names = ("density", "density_z", "recon", "recon_umi", "deviance_umi", "knn")
    typ = {n: _share_lower(ref_s[n], query_s[n]) for n in names}
    typ["min(deviance_umi, knn)"] = np.minimum(typ["deviance_umi"], typ["knn"])
    typ["min(deviance_umi, density)"] = np.minimum(typ["deviance_umi"], typ["density"])
    typ["min(recon_umi, knn)"] = np.minimum(typ["recon_umi"], typ["knn"])
    typ["product(deviance_umi, density)"] = typ["deviance_umi"] * typ["density"]
    typ["product(deviance_umi, density, knn)"] = typ["product(deviance_umi, density)"] * typ["knn"]
    typ["typicality (predict_labels)"] = table["typicality"].to_numpy()
    typ["confidence"] = table["confidence"].to_numpy()
    if records:
        with forked_generators(q.device):
            query_scores = fit_scores(q, query)
        for name, record in records.items():
            held = argparse.Namespace(typicality_record_=record)
            typ[f"typicality [record: {name}]"] = typicality(held, query_scores)
    right = table["label"].astype(str).to_numpy() == truth
    row = {"accuracy_known": f"{right[~novel].mean():.3f}"}
    row["auroc"] = ", ".join(f"{n} {roc_auc_score(~novel, v):.3f}" for n, v in typ.items())
    _thresholds(row, "typicality", typ["typicality (predict_labels)"], novel, right)
    if records and len(model.validation_indices):
        # The reference's own validation cells (no gradient, its donors) against each record:
        # against "outside-test", how much the fit alone moves the typicality.
        with forked_generators(model.device):
            val_scores = fit_scores(model, model.adata, np.sort(model.validation_indices))
        for name, record in records.items():
            held = argparse.Namespace(typicality_record_=record)
            val_typical = typicality(held, val_scores)
            row[f"reference validation cells under {THRESHOLDS} [record: {name}]"] = " / ".join(
                f"{(val_typical < thr).mean():.3f}" for thr in THRESHOLDS
            )
    for name, record in records.items():
        row[f"record {name}: cells"] = record["cells"]
        _thresholds(row, f"[record: {name}]", typ[f"typicality [record: {name}]"], novel, right)
    row["novel_called"] = dict(
        zip(*np.unique(table["label"].astype(str)[novel], return_counts=True), strict=True)
    )
    row["n_novel"], row["n_known"] = int(novel.sum()), int((~novel).sum())
    row["cpu_s"] = t.cpu_seconds
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--held-out", nargs="+", default=["NK cells"])
    p.add_argument("--n-ref", type=int, default=2500)
    p.add_argument("--n-query", type=int, default=1500)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--query-epochs", type=int, default=30)
    p.add_argument("--train-size", type=float, default=0.9, help="the reference's")
    p.add_argument(
        "--records",
        nargs="*",
        default=[],
        choices=["outside-test", "validation", "train", "mapped"],
        help="also score the query against typicality records of these reference cells",
    )
    args = p.parse_args()
    announce("novel_types.py")  # its header: the versions it ran on
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for held_out in args.held_out:
        for seed in args.seeds:
            row = run(seed, held_out, args)
            print(f"held-out={held_out!r} seed={seed}", flush=True)
            for key, value in row.items():
                shown = f"{value:.3f}" if isinstance(value, float) else value
                print(f"  {key}: {shown}", flush=True)


if __name__ == "__main__":
    main()
