"""One problem, one warning: a run that went unstable is said to have done so once, with what
else shows it (read-outs far off, types run off) as evidence in that warning, and the notes that
read a healthy run's results (factors that lead no spot) keep quiet after it."""

import pytest

import deltavae as dv
from deltavae.train import NotConvergedWarning

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _spots():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=4
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=60, cells_per_spot=(1, 4), seed=0)


def _small_zinbvae():
    """A ZINBVAE of 100 synthetic cells x 30 genes, 2 latent dimensions, 8 hidden units."""
    adata = dv.datasets.synthetic_counts(
        n_cells=100, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    return dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)


def test_a_run_unstable_in_training_and_in_its_read_outs_is_told_once():
    """ZINBVAE at lr=0.5, every cell training (100 cells, 10 epochs): "The training ELBO ended
    far above its best ... Train again with a lower learning rate", then a second warning,
    "the model's read-outs (in eval mode) reconstruct its training cells far worse ... Train
    again with a lower learning rate": two warnings of one problem, each with its advice."""
    model = _small_zinbvae()
    one = (
        r"^The training ELBO ended far above its best: .* Training went unstable \(a learning "
        r"rate too high for this model and data\), and the model ends worse than it was earlier "
        r"in the run\. Its read-outs \(in eval mode\) are off too: they reconstruct its "
        r"training cells far worse than training did, a reconstruction error of [\d.e+]+ per "
        r"cell against a negative ELBO of [\d.e+]+ in the last epoch \(BatchNorm's running "
        r"statistics ran off\)\. Train again with a lower learning rate than this run's "
        r"lr=0\.5, on a model built anew\.$"
    )
    with pytest.warns(NotConvergedWarning, match=one) as said:
        model.train(max_epochs=10, lr=0.5, train_size=1.0, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]  # nothing else, of any kind
    assert model.convergence_.startswith("The training ELBO ended far above its best")
    assert model._went_unstable


def test_a_reference_free_deconvolution_unstable_at_a_huge_rate_is_told_once():
    """Reference-free NMFDeconv at lr=5 (60 spots, 50 epochs): "ended far above its best ...
    Train again with a lower learning rate", "2 of 3 types have no share ... Train again with
    the default rate" and "2 of the 3 factors are the largest proportion of fewer than 2% of
    the spots ... Fit fewer, e.g. n_components=1": three warnings of one problem, the last
    advising fewer factors for factors the rate ran off."""
    spots, _ = _spots()
    dv.model.NMFDeconv.setup_anndata(spots)
    model = dv.model.NMFDeconv(spots, n_components=3)
    one = (
        r"^The training ELBO ended far above its best: .* Training went unstable .* Its "
        r"proportions show it: 2 of 3 types have no share \(under 0\.001\) in any spot "
        r"\(\['factor_1', 'factor_2'\]; the rest share the spots as \{'factor_0': 1\.0\}\), "
        r"their shares run off to the floor, where they learn no more\. Train again with a "
        r"lower learning rate than this run's lr=5, on a model built anew\.$"
    )
    with pytest.warns(NotConvergedWarning, match=one) as said:
        model.train(max_epochs=50, lr=5.0, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]  # nothing else, of any kind


def test_types_run_off_while_still_improving_are_not_told_to_train_longer():
    """NMFDeconv from a reference at lr=1 (200 times its default, 20 epochs): "still improving
    ... Train longer: pass a max_epochs above this run's 20", then "2 of 3 types have no share
    ... learn no more. Train again with the default rate": more epochs at that rate would not
    bring the types back, and two warnings contradicted each other."""
    spots, reference = _spots()
    model = dv.model.NMFDeconv.from_reference(spots, reference=reference, labels_key="cluster")
    one = (
        r"^2 of 3 types have no share \(under 0\.001\) in any spot after training: \['0', "
        r"'1'\]; .* Train again with the default rate \(lr=0\.005\) on a model built anew; if "
        r"the types stay absent, the spots hold none of them\.$"
    )
    with pytest.warns(NotConvergedWarning, match=one) as said:
        model.train(max_epochs=20, lr=1.0, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]  # nothing else, of any kind
    assert model.convergence_ == "2 of 3 types ran off to no share."


def test_factors_that_barely_moved_at_a_rate_far_too_low_are_not_told_to_be_fewer():
    """Reference-free NMFDeconv at lr=1e-7 (60 spots, 40 epochs): "This run's learning rate
    ... is 50,000 times below the model's default ... train again with the default rate
    first", then "2 of the 3 factors are the largest proportion of fewer than 2% of the
    spots ... Fit fewer, e.g. n_components=1": the factors had barely moved from their start
    (each a third of every spot), and the second warning advised a model of one factor."""
    spots, _ = _spots()
    dv.model.NMFDeconv.setup_anndata(spots)
    model = dv.model.NMFDeconv(spots, n_components=3)
    one = r"^This run's learning rate \(lr=1e-07\) is 50,000 times below the model's default"
    with pytest.warns(NotConvergedWarning, match=one) as said:
        model.train(max_epochs=40, lr=1e-7, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]  # nothing else, of any kind
    # At its default rate the note on idle factors still speaks (6 factors on 3 types).
    wide = dv.model.NMFDeconv(spots, n_components=6)
    with pytest.warns(UserWarning, match=r"factors are the largest proportion of fewer than"):
        wide.train(max_epochs=40, **TRAIN)


def test_a_label_never_predicted_after_an_unconverged_run_points_to_its_verdict():
    """CGMDVAE semi-supervised at lr=0.5, every cell training (100 cells, 20 epochs): "Training
    ran 10 epochs of 1 step ... too few to converge or to judge ... Train longer ... train again
    with the default rate first", then "1 of 3 labels are never predicted ... Most likely
    training was too short. Train longer ... train again with the default rate first": the
    verdict's advice twice, in two warnings."""
    adata = dv.datasets.synthetic_counts(
        n_cells=100, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    labels = adata.obs["cluster"].astype(str).to_numpy().copy()
    labels[::3] = "unknown"
    adata.obs["label"] = labels
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
    model = dv.model.CGMDVAE(adata, n_latent=2, n_hidden=8)
    # At 500 times the default rate the verdict leads with the rate, not with training longer.
    lead = r"^This run's learning rate \(lr=0\.5\) is 500 times .* Training ran 10 epochs of 1 step"
    with pytest.warns(NotConvergedWarning, match=lead) as said:
        model.train(max_epochs=20, lr=0.5, train_size=1.0, **TRAIN)
    notes = [str(w.message) for w in said]
    assert sum("default rate first" in note for note in notes) == 1, notes
    assert not any("Train longer" in note for note in notes), notes
    (label,) = [note for note in notes if "never predicted" in note]
    told = (
        "Most likely training did not converge: this run's NotConvergedWarning says what to "
        "change. If it stays so, those cells are too like another label's"
    )
    assert told in label, label
    # Called on its own (no verdict of this run to point to) the note gives the advice itself.
    with pytest.warns(UserWarning, match=r"Most likely training was too short\. Train longer"):
        model._warn_if_clusters_empty(20)


def test_few_validation_checks_at_a_high_rate_are_told_the_rate_not_to_train_longer():
    """ZINBVAE at lr=0.05 (50 times the default; 100 cells, 4 epochs, validating every 2nd):
    "The validation ELBO was measured 2 times ... too few to converge or to judge. Train longer
    ... Or validate more often ... train again with the default rate first": the advice to train
    longer and the note that longer does not help at that rate, in one warning."""
    model = _small_zinbvae()
    lead = (
        r"^This run's learning rate \(lr=0\.05\) is 50 times the default \(0\.001\): .* "
        r"train again with the default rate first\. The validation ELBO was measured 2 times "
        r"on the full ELBO \(after the KL warm-up\): too few to converge or to judge\.$"
    )
    with pytest.warns(NotConvergedWarning, match=lead) as said:
        model.train(max_epochs=4, lr=0.05, check_val_every_n_epoch=2, **TRAIN)
    assert len(said) == 1, [str(w.message) for w in said]
    assert model.convergence_.startswith("This run's learning rate (lr=0.05)")
