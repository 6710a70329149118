"""The cells given to translate and predict_perturbation: None for the model's own, missing
source conditions (model/_perturbation.py, _cgmdvae_generation.py)."""

from contextlib import nullcontext

import numpy as np
import pytest
import scvi

import deltavae as dv

SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}


@pytest.fixture(scope="module")
def model():
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=60)
    return model


def test_none_reads_the_models_own_cells(model):
    columns = list(model.adata.obs.columns)
    translated = model.translate(None, "stim", seed=0, response_weight=0)
    given = model.translate(model.adata, "stim", seed=0, response_weight=0)
    np.testing.assert_array_equal(translated.layers["counts"], given.layers["counts"])
    assert list(translated.obs_names) == list(model.adata.obs_names)
    assert set(translated.obs["condition"]) == {"stim"}
    assert list(model.adata.obs.columns) == columns  # the model's cells untouched
    with pytest.raises(ValueError, match="one source condition") as err:
        model.predict_perturbation(None, "stim", method="latent_shift")
    # The key was right ('stim' is one of its values): not told to name the column it named.
    assert "condition_key was left out" not in str(err.value)
    assert "Call once per source condition, e.g. adata[adata.obs['condition'] == 'ctrl']" in str(
        err.value
    )
    assert "method='translate', which takes cells of several" in str(err.value)
    with pytest.raises(ValueError, match="one source condition") as err:  # a mistyped target
        model.predict_perturbation(None, "stimm", method="latent_shift")
    assert "condition_key" not in str(err.value)  # no other column holds 'stimm'
    with pytest.raises(ValueError, match=r"e.g. adata\[adata.obs\['condition'\] == 'stim'\]"):
        model.predict_perturbation(None, "ctrl", method="nearest_response")  # not the target


def test_a_matrix_for_adata_is_refused_by_name(model):
    x = model.adata.X
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        model.translate(x, "stim")
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        model.predict_perturbation(x, "stim", method="nearest_response")


def test_cells_without_a_source_condition_are_named(model):
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    ctrl.obs["condition"] = ctrl.obs["condition"].astype(object)
    ctrl.obs.iloc[:2, ctrl.obs.columns.get_loc("condition")] = np.nan
    for method in ("latent_shift", "nearest_response"):
        with pytest.raises(ValueError, match=r"has 2 missing values \(NaN\)"):
            model.predict_perturbation(ctrl, "stim", method=method)


def test_a_condition_of_one_cell_is_warned_at_the_users_line():
    adata = dv.datasets.synthetic_counts(n_cells=30, n_genes=10, n_conditions=2, seed=0)
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    adata.obs.iloc[0, adata.obs.columns.get_loc("condition")] = "lonely"
    with pytest.warns(UserWarning, match="fewer than 3 cells") as record:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    # Raised as a context manager exits: it pointed into contextlib.py.
    assert [w.filename for w in record if "fewer than 3" in str(w.message)] == [__file__]


def test_a_model_that_cannot_translate_is_not_told_to_pass_method_translate():
    adata = dv.datasets.synthetic_counts(n_cells=30, n_genes=10, n_conditions=2, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    ctrl = adata[adata.obs["condition"] == "ctrl"]
    for kw in ({"residual": True}, {"response_weight": 0.5, "method": "latent_shift"}):
        with pytest.raises(ValueError, match="which ZINBVAE cannot do") as err:
            vae.predict_perturbation(ctrl, "stim", **kw)
        assert "Pass method='translate'" not in str(err.value)  # refused by ZINBVAE
    plain = adata.copy()
    dv.model.CGMDVAE.setup_anndata(plain)  # no condition covariate to translate on
    g = dv.model.CGMDVAE(plain, n_clusters=2, **SMALL)
    with pytest.raises(ValueError, match="which CGMDVAE cannot do"):
        g.predict_perturbation(ctrl, "stim", condition_key="condition", residual=False)


def test_cells_already_under_the_target_are_told(model):
    """Cells given under the target itself came back as a 'prediction' (the reconstruction,
    or the cells' own data) with nothing said."""
    stim = model.adata[model.adata.obs["condition"] == "stim"].copy()
    for method, returned in (("latent_shift", "reconstruction"), ("nearest_response", "own data")):
        with pytest.warns(
            UserWarning,
            match=rf"already under condition='stim', the target: .*{returned}.* \['ctrl'\]",
        ):
            pred = model.predict_perturbation(stim, "stim", method=method, seed=0)
        assert pred.n_obs == stim.n_obs


def test_a_mistyped_target_is_not_blamed_on_the_condition_key(model):
    """'stimulated' for 'stim' was answered with 'condition_key was left out, ... name the
    column of the conditions, e.g. condition_key='condition'', the column it had read."""
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    for method in ("latent_shift", "nearest_response"):
        with pytest.raises(
            ValueError, match=r"'stimulated' was never seen .*\['ctrl', 'stim'\]\.$"
        ):
            model.predict_perturbation(ctrl, "stimulated", method=method)
    ctrl.obs["state"] = "stimulated"  # another column holds it: that one is named
    with pytest.raises(
        ValueError, match=r"condition_key='state' \('stimulated' is a value of it\)"
    ):
        model.predict_perturbation(ctrl, "stimulated", method="latent_shift")


def test_cells_without_the_condition_column_are_told_what_to_add(model):
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    del ctrl.obs["condition"]
    add = r"add each cell's source condition \(one of \['ctrl', 'stim'\]\), e.g. adata.obs\["
    add += r"'condition'\] = 'ctrl'"
    for method in ("latent_shift", "nearest_response"):
        with pytest.raises(KeyError, match=add):
            model.predict_perturbation(ctrl, "stim", method=method)


def test_a_model_without_condition_covariates_asks_for_the_column():
    adata = dv.datasets.synthetic_counts(n_cells=30, n_genes=10, n_conditions=2, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.warns(dv.train.NotConvergedWarning):
        vae.train(max_epochs=1)
    ctrl = adata[adata.obs["condition"] == "ctrl"]
    with pytest.raises(ValueError, match=r"Pass condition_key, the obs column of the conditions"):
        vae.predict_perturbation(ctrl, "stim", balance_key="cluster")


def test_a_decoded_translation_averaged_with_responses_says_so():
    """translate(residual=False, response_weight=0.5) of a normal model averages the decoded
    mean with the observed responses, but uns['prediction']['X'] said only "the model's
    data's own scale" (the averaging was named with residual=True alone)."""
    from anndata import AnnData

    from deltavae.model._latent_shift import describe_prediction

    class Normal:
        module = type("Module", (), {"likelihood": "normal"})

    out = AnnData(np.zeros((1, 1)))
    describe_prediction(out, Normal(), "translate", "stim", residual=False, blended=True)
    said = out.uns["prediction"]["X"]
    assert "decoded under the target" in said and "averaged with the observed responses" in said
    describe_prediction(out, Normal(), "translate", "stim", residual=True, blended=True)
    said = out.uns["prediction"]["X"]
    assert "observed data plus" in said and said.endswith("averaged with the observed responses")
    describe_prediction(out, Normal(), "latent_shift", "stim")
    assert out.uns["prediction"]["X"] == "the model's data's own scale"


def test_predictions_keep_the_source_condition_and_the_cells_obsm(model, tmp_path):
    """The outputs held the target alone in obs['condition'] (the source of cells of several
    conditions was lost), dropped the cells' obsm (sc.pl.umap(pred) failed, scGen keeps it)
    and recorded a dict target as str(dict), which an .h5ad file gave back as a string."""
    import anndata as ad

    cells = model.adata.copy()
    cells.obsm["X_umap"] = np.arange(2 * cells.n_obs, dtype=float).reshape(-1, 2)
    cells.uns["condition_colors"] = ["#d62728", "#2ca02c"]  # the user's: ctrl red, stim green
    mixed = model.translate(cells, {"condition": "stim"}, seed=0, response_weight=0)
    ctrl = cells[cells.obs["condition"] == "ctrl"].copy()
    shifted = model.predict_perturbation(ctrl, {"condition": "stim"}, method="latent_shift")
    nearest = model.predict_perturbation(ctrl, "stim", method="nearest_response")
    for pred, given in ((mixed, cells), (shifted, ctrl), (nearest, ctrl)):
        source = pred.obs["condition_source"]
        assert source.astype(str).tolist() == given.obs["condition"].astype(str).tolist()
        assert (pred.obs["condition"] == "stim").all()
        # One set of categories, the model's, for both columns (colours and order agree).
        assert list(source.cat.categories) == list(pred.obs["condition"].cat.categories)
        assert list(pred.obs.columns[:3]) == ["cluster", "condition", "condition_source"]
        assert pred.obs["cell_type"].tolist() == given.obs["cell_type"].tolist()
        np.testing.assert_array_equal(pred.obsm["X_umap"], given.obsm["X_umap"])
        assert not [k for k in pred.obsm if k.startswith("_scvi")]
    assert set(mixed.obs["condition_source"]) == {"ctrl", "stim"}
    # The user's colours, not scanpy's by position (which drew stim in ctrl's colour); control
    # cells alone (anndata drops stim's colour with its category) take the training AnnData's.
    assert list(mixed.uns["condition_colors"]) == ["#d62728", "#2ca02c"]
    assert list(mixed.uns["condition_source_colors"]) == ["#d62728", "#2ca02c"]
    assert "condition_colors" not in shifted.uns  # no colour of stim anywhere: scanpy's
    model.adata.uns["condition_colors"] = ["#d62728", "#2ca02c"]
    try:
        again = model.predict_perturbation(ctrl, "stim", method="latent_shift")
    finally:
        del model.adata.uns["condition_colors"]
    assert list(again.uns["condition_colors"]) == ["#d62728", "#2ca02c"]
    assert nearest.uns["prediction"]["target"] == "stim"
    for pred in (mixed, shifted):
        assert pred.uns["prediction"]["target"] == {"condition": "stim"}
    mixed.write_h5ad(tmp_path / "pred.h5ad")
    back = ad.read_h5ad(tmp_path / "pred.h5ad")
    assert back.uns["prediction"]["target"] == {"condition": "stim"}
    assert back.obs["condition_source"].tolist() == mixed.obs["condition_source"].tolist()
    np.testing.assert_array_equal(back.obsm["X_umap"], cells.obsm["X_umap"])


def test_a_transposed_frame_is_told_its_rows_and_columns_may_be_swapped():
    import pandas as pd

    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(6)]
    pred = pd.DataFrame(rng.random((4, 6)), [f"p{i}" for i in range(4)], genes)
    stim = pd.DataFrame(rng.random((9, 6)), [f"s{i}" for i in range(9)], genes)
    with pytest.raises(ValueError, match=r"predicted has 6 rows, .* pass predicted\.T, cells"):
        dv.metrics.mean_expression_r2(pred.T, stim)
    with pytest.raises(ValueError, match=r"observed has 6 rows, .* pass observed\.T, cells"):
        dv.metrics.mean_expression_r2(pred, stim.T.to_numpy())
    with pytest.raises(ValueError, match=r"control has 6 rows, .* pass control\.T"):
        dv.metrics.mean_expression_r2(pred, stim, control=stim.T)
    # No shape to swap: no transposition said, but which genes differ (named frames).
    with pytest.raises(ValueError, match=r"different genes \(1 in one only, e.g. \['g5'\]\)"):
        dv.metrics.mean_expression_r2(pred.iloc[:, :5], stim)
    with pytest.raises(ValueError, match=r"must match\.$"):  # arrays: no names to compare
        dv.metrics.mean_expression_r2(pred.iloc[:, :5].to_numpy(), stim.to_numpy())


def test_a_column_of_the_source_name_replaced_with_other_values_is_warned_about(model):
    """The cells' own obs['condition_source'] (here a lab) was replaced by the source condition
    in the prediction without a word; a prediction's own record is continued silently."""
    import warnings

    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    ctrl.obs["condition_source"] = "lab A"
    calls = {
        "translate": lambda c: model.translate(c, "stim", seed=0),
        "latent_shift": lambda c: model.predict_perturbation(c, "stim", method="latent_shift"),
        "nearest": lambda c: model.predict_perturbation(c, "stim", method="nearest_response"),
    }
    for name, call in calls.items():
        with pytest.warns(UserWarning, match=r"obs\['condition_source'\] \(e.g. 'lab A'\)") as rec:
            pred = call(ctrl)
        assert sum("condition_source" in str(w.message) for w in rec) == 1, name
        assert set(pred.obs["condition_source"]) == {"ctrl"}
        assert set(ctrl.obs["condition_source"]) == {"lab A"}  # the user's cells unchanged
    with pytest.warns(UserWarning, match="condition_source"):
        again = model.translate(ctrl, "stim", seed=0, response_weight=0)
    again.X = again.layers["counts"].copy()  # a prediction predicted on: its record goes on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = model.translate(again, "ctrl", seed=0, response_weight=0)
        same = ctrl.copy()
        same.obs["condition_source"] = same.obs["condition"]  # values it would hold anyway
        model.translate(same, "stim", seed=0, response_weight=0)
    assert set(back.obs["condition_source"]) == {"stim"}


def test_a_misspelt_balance_or_condition_key_is_given_the_column_meant(model):
    """balance_key='celltype' and condition_key='Condition' were refused without naming the
    column meant ('cell_type', 'condition'), as other misspelt columns are."""
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    for method in ("latent_shift", "nearest_response"):
        with pytest.raises(KeyError, match=r"balance_key='celltype' .*did you mean 'cell_type'"):
            model.predict_perturbation(ctrl, "stim", method=method, balance_key="celltype")
        with pytest.raises(KeyError, match=r"'Condition' .*did you mean 'condition'\?") as err:
            model.predict_perturbation(ctrl, "stim", method=method, condition_key="Condition")
        assert "_scvi" not in str(err.value)  # scvi-tools' bookkeeping is no choice


def test_a_gene_list_name_held_with_an_identifier_appended_is_named(model):
    """gene_list=['gene'] of genes named gene_0, gene_1, ... (muscat's CD79A for
    CD79A_ENSG00000105369) was told to use the same identifiers, naming none."""
    with pytest.raises(ValueError, match=r"'gene' is 'gene_0' or 'gene_1' here: pass those"):
        model.get_normalized_expression(gene_list=["gene", "gene_2"])


def test_a_target_condition_in_other_case_or_a_misspelt_key_is_given_the_one_meant(model):
    """translate(ctrl, 'STIM'), sample(condition='STIM') and {'conditon': 'stim'} listed the
    conditions or keys seen without saying which one was meant, as misspelt columns do."""
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    calls = [
        lambda: model.translate(ctrl, "STIM"),
        lambda: model.sample(3, condition="STIM"),
        lambda: model.predict_perturbation(ctrl, "STIM", method="latent_shift"),
        lambda: model.predict_perturbation(ctrl, "STIM", method="nearest_response"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"never seen in training.*[dD]id you mean 'stim'\?"):
            call()
    with pytest.raises(ValueError, match=r"not a condition key .*did you mean 'condition'\?"):
        model.translate(ctrl, {"conditon": "stim"})


def test_nearest_response_seeds_its_whole_counts_alone(model):
    """predict_perturbation(method="nearest_response", seed=0) took a seed its docstring gave
    to translate and latent_shift only. Its X draws nothing, the same whatever the seed (one
    call loops over the methods); the seed gives its whole counts (layers["counts"])."""
    doc = " ".join(dv.model.CGMDVAE.predict_perturbation.__doc__.split())
    assert "``nearest_response``'s ``X`` draws nothing" in doc
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    preds = [
        model.predict_perturbation(ctrl, "stim", method="nearest_response", seed=seed)
        for seed in (None, 0, 1, 0)
    ]
    np.testing.assert_array_equal(preds[0].X, preds[1].X)
    np.testing.assert_array_equal(preds[0].X, preds[2].X)
    np.testing.assert_array_equal(preds[1].layers["counts"], preds[3].layers["counts"])
    with pytest.raises(ValueError, match="seed must be an integer"):  # checked all the same
        model.predict_perturbation(ctrl, "stim", method="nearest_response", seed="0")


def test_nearest_response_of_a_labelled_model_loaded_without_its_labels_says_its_groups(
    model, tmp_path
):
    """A model trained with labels, loaded onto an AnnData without the labels column, reads
    every cell as unlabelled: nearest_response (and translate's observed responses) grouped
    the cells by predicted clusters instead of the labels, said only at load. The call says
    which groups it used, once for the AnnData; the model with its labels says nothing."""
    import warnings

    model.save(tmp_path / "m")
    cells = model.adata.copy()
    cells.obs = cells.obs[["condition"]].copy()  # no labels column, no setup columns
    with pytest.warns(UserWarning, match="lacks 'cell_type'"):
        loaded = dv.model.CGMDVAE.load(tmp_path / "m", cells)
    ctrl = cells[cells.obs["condition"] == "ctrl"].copy()
    told = r"trained with the labels of obs\['cell_type'\], but .* no labelled cell .* predicted"
    with pytest.warns(UserWarning, match=told + r".*balance_key"):
        loaded.predict_perturbation(ctrl, "stim", method="nearest_response")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once for this AnnData
        loaded.predict_perturbation(ctrl, "stim", method="nearest_response")
        loaded.translate(ctrl, "stim", seed=0)
        model.predict_perturbation(ctrl, "stim", method="nearest_response")  # labels: silent


def test_perturbation_arguments_of_the_wrong_kind_or_misspelt_are_named(model):
    """A list target was read as the text "['stim']" ("never seen in training; did you mean
    'stim'?", where translate said "is several values"); balance_key=['cell_type'] failed in
    pandas ("unhashable type: 'list'"); method='nearest' was not offered its closest name."""
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    for target in (["stim"], {"condition": ["stim"]}):
        with pytest.raises(ValueError, match=r"is several values: .* give one value"):
            model.predict_perturbation(ctrl, target, method="nearest_response")
    with pytest.raises(TypeError, match=r"balance_key must be the name of one obs column"):
        model.predict_perturbation(ctrl, "stim", method="latent_shift", balance_key=["cell_type"])
    with pytest.raises(TypeError, match=r"condition_key must be the name of one obs column"):
        model.predict_perturbation(ctrl, "stim", method="latent_shift", condition_key=["x"])
    with pytest.raises(ValueError, match=r"got 'nearest'; did you mean 'nearest_response'\?"):
        model.predict_perturbation(ctrl, "stim", method="nearest")


def test_training_cells_without_a_condition_are_no_condition_of_their_own():
    """A ZINBVAE's (no condition covariate) condition_key column with missing values in the
    training cells read them as a condition 'nan' (or 'None'): listed among the conditions
    seen, offered as the value to add, and a target whose 'prediction' was the mean of the
    cells of unknown condition."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=10, n_conditions=2, seed=0)
    adata.obs["state"] = adata.obs["condition"].astype(object)
    adata.obs.iloc[:6, adata.obs.columns.get_loc("state")] = np.nan
    adata.obs.iloc[6:9, adata.obs.columns.get_loc("state")] = None
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.warns(dv.train.NotConvergedWarning):
        vae.train(max_epochs=1)
    ctrl = adata[adata.obs["state"] == "ctrl"].copy()
    for method in ("latent_shift", "nearest_response"):
        for missing in ("nan", "None"):
            with pytest.raises(
                ValueError, match=r"never seen in training; conditions seen: \['ctrl', 'stim'\]"
            ):
                vae.predict_perturbation(
                    ctrl, missing, condition_key="state", method=method, balance_key="cluster"
                )
        # Groups of 3-7 cells a condition: nearest_response's responses are said to be thin.
        thin = pytest.warns(UserWarning, match="5 training cells or fewer")
        with thin if method == "nearest_response" else nullcontext():
            pred = vae.predict_perturbation(
                ctrl, "stim", condition_key="state", method=method, balance_key="cluster", seed=0
            )
        assert set(pred.obs["state"]) == {"stim"}
    del ctrl.obs["state"]
    with pytest.raises(KeyError, match=r"\(one of \['ctrl', 'stim'\]\)"):
        vae.predict_perturbation(ctrl, "stim", condition_key="state")


def test_every_key_a_prediction_holds_is_in_predict_perturbations_docstring(model):
    """nearest_response's obsm['response_weights'] and uns['response_groups'], and
    translate's uns['response_weight'], were documented on private functions alone, not on
    the method a user calls (whose tutorial reads them)."""
    doc = dv.model.CGMDVAE.predict_perturbation.__doc__
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    given = set(ctrl.obsm)
    for method in ("translate", "latent_shift", "nearest_response"):
        pred = model.predict_perturbation(ctrl, "stim", method=method, seed=0)
        keys = [f'layers["{k}"]' for k in pred.layers]
        keys += [f'obsm["{k}"]' for k in set(pred.obsm) - given]
        keys += [f'uns["{k}"]' for k in pred.uns if not k.endswith("_colors")]
        missing = [k for k in keys if k not in doc]
        assert not missing, f"{method}: {missing} not in predict_perturbation's docstring"


def test_a_target_of_none_is_refused_as_naming_no_condition(model):
    """target_condition=None was read as the text 'None': "Condition condition='None' was
    never seen in training", as though a condition named 'None' were mistyped."""
    ctrl = model.adata[model.adata.obs["condition"] == "ctrl"].copy()
    for method in ("latent_shift", "nearest_response"):
        for target in (None, np.nan, {"condition": None}):
            with pytest.raises(ValueError, match="names no condition to predict") as err:
                model.predict_perturbation(ctrl, target, method=method)
            assert "'None'" not in str(err.value) and "'nan'" not in str(err.value)


def test_responses_read_from_a_handful_of_cells_are_said_once():
    """A type with 2 training cells under the target: nearest_response (and translate's
    average with it) gave its cells the difference of 2 cells' mean from 85's, most of it
    noise (on such data the predicted change's R² against the true one was -3 to -5, worse
    than predicting no change), and said nothing."""
    import warnings

    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=2, n_conditions=2, seed=0, marker_fold=10.0
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    thin = (adata.obs["cell_type"] == "0") & (adata.obs["condition"] == "stim")
    adata = adata[~thin | (thin.cumsum() <= 2)].copy()  # 2 stimulated cells of type 0
    scvi.settings.seed = 0
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, **SMALL)
    model.train(max_epochs=2, batch_size=100)
    ctrl = adata.obs["condition"] == "ctrl"
    zero, one = adata[ctrl & (adata.obs["cell_type"] == "0")].copy(), adata[ctrl].copy()
    one = one[one.obs["cell_type"] == "1"].copy()
    for call, advice in [
        (lambda c: model.predict_perturbation(c, "stim", method="nearest_response"), "method="),
        (lambda c: model.translate(c, "stim"), "response_weight=0 predicts them from the model's"),
    ]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(zero)
        notes = [str(w.message) for w in caught if "fewer under a condition" in str(w.message)]
        assert len(notes) == 1, notes
        assert f"of the {zero.n_obs} cells take most" in notes[0]
        assert "'0' (" in notes[0] and "2 under 'stim')" in notes[0] and advice in notes[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            call(one)  # type 1's response is read from its own cells under both: quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.translate(zero, "stim", response_weight=0)  # the model alone reads no response
