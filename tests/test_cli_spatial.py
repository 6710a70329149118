"""``deltavae fit`` for the spatial models: nmfdeconv (with --reference), archetypes
(--n-archetypes) and imputer; their results, reports, plots and early input errors."""

import functools
import warnings

import anndata as ad
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import deltavae as dv  # noqa: E402
import deltavae._cli_commands as cli_commands  # noqa: E402
from deltavae._cli_files import plots_folder  # noqa: E402
from deltavae.cli import main  # noqa: E402
from deltavae.metrics import deconvolution_scores  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Pseudo-spots on a grid (with their true proportions) and the held-out reference."""
    cells = dv.datasets.synthetic_counts(
        n_cells=400, n_genes=50, n_clusters=3, n_conditions=1, seed=0
    )
    spots, ref = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=100, cells_per_spot=(2, 6), grid=True, seed=1
    )
    del spots.uns["pseudo_spots"]
    folder = tmp_path_factory.mktemp("spatial")
    spots.write_h5ad(folder / "spots.h5ad")
    ref.write_h5ad(folder / "ref.h5ad")
    return folder / "spots.h5ad", folder / "ref.h5ad", spots


def _fit(spots_path, out, *options):
    return main(["fit", str(spots_path), "--out", str(out), "--threads", "1", *options])


def test_nmfdeconv_from_the_shell(files, tmp_path, capsys):
    spots_path, ref_path, spots = files
    options = ["--model", "nmfdeconv", "--reference", str(ref_path), "--labels-key", "cluster"]
    out = tmp_path / "proportions.h5ad"
    assert _fit(spots_path, out, *options, "--epochs", "40") == 0
    result = ad.read_h5ad(out)
    proportions = result.obsm["proportions"]
    np.testing.assert_allclose(proportions.sum(axis=1), 1.0, atol=1e-5)
    scores = deconvolution_scores(spots.obsm["proportions_true"], proportions)
    assert scores["pcc"].min() > 0.8, scores
    assert np.isfinite(result.obs["cell_abundance"]).all()
    assert [k for k in result.uns if k.startswith("_scvi")] == []
    printed = capsys.readouterr().out
    assert "cell types (obsm['proportions']), over 100 spots:" in printed
    assert "mean weight  largest in" in printed and "epochs trained: 40" in printed
    assert "validation not computed (no validation spots)" in printed  # not "cells"
    # The abundance in the units it has: "cells per spot" read 12.5 of the MERFISH toy's single
    # cells (MERFISH counts ten times the reference's UMIs of its genes).
    assert "reference cells' worth of counts per spot (obs['cell_abundance'])" in printed
    assert "cells per spot" not in printed
    plots = plots_folder(out)
    assert (plots / "spatial_proportions.png").stat().st_size > 1000
    assert (plots / "elbo_history.png").stat().st_size > 1000
    # Backed: the same seed gives the same proportions, written into a copy of the file.
    backed_out = tmp_path / "backed.h5ad"
    args = [*options, "--epochs", "40", "--backed", "--no-plots"]
    assert _fit(spots_path, backed_out, *args) == 0
    written = ad.read_h5ad(backed_out).obsm["proportions"]
    assert list(written.columns) == list(proportions.columns)  # the cell types' names kept
    np.testing.assert_allclose(written.to_numpy(), proportions.to_numpy(), atol=1e-5)


def test_archetypes_from_the_shell(files, tmp_path, capsys):
    spots_path, _, _ = files
    out = tmp_path / "archetypes.h5ad"
    options = ["--model", "archetypes", "--n-archetypes", "3", "--epochs", "40"]
    assert _fit(spots_path, out, *options) == 0
    result = ad.read_h5ad(out)
    weights = result.obsm["archetype_weights"]
    assert weights.shape[0] == 100 and weights.shape[1] <= 3
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    printed = capsys.readouterr().out
    assert "archetypes (obsm['archetype_weights'])" in printed
    assert "archetypes fitted: 3;" in printed
    assert (plots_folder(out) / "spatial_archetype_weights.png").exists()


def test_imputer_from_the_shell(files, tmp_path, capsys):
    spots_path, ref_path, spots = files
    measured = tmp_path / "measured.h5ad"
    panel = spots[:, :40].copy()  # the last 10 genes are left to impute
    panel.var_names = [*panel.var_names[:-1], "GENE_X"]  # one the reference lacks: a note
    panel.write_h5ad(measured)
    out = tmp_path / "imputed.h5ad"
    options = ["--model", "imputer", "--reference", str(ref_path), "--labels-key", "cluster"]
    options += ["--profiles", "type"]  # one profile per cell type, as for Visium spots
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(measured, out, *options, "--epochs", "3", "--no-plots") == 0
    # The imputer's own note, as a line of the command's output, not a Python warning.
    printed = capsys.readouterr()
    assert "deltavae: warning: the spots and reference share only 39 genes" in printed.err
    assert "UserWarning" not in printed.err and ".py:" not in printed.err
    assert "Training SpatialImputer on 100 spots" in printed.out
    assert "negative ELBO per spot" in printed.out
    # The report says the scale of what it wrote, impute()'s expected counts (it said none), of
    # the last 10 genes and the one renamed GENE_X.
    assert "imputed genes (obsm['imputed'], expected counts, not normalised): 11\n" in printed.out
    assert (
        "genes shared with the reference: 39 of the spots' 40 (the others are not used)\n"
        in printed.out
    )
    # The deconvolution design writes proportions and abundance too: the report names them.
    assert "cell types (obsm['proportions']), over 100 spots:" in printed.out
    assert "reference cells' worth of counts per spot (obs['cell_abundance'])" in printed.out
    result = ad.read_h5ad(out)
    imputed = result.obsm["imputed"]
    assert imputed.shape[0] == 100 and set(spots.var_names[40:]) <= set(imputed.columns)
    assert result.obsm["proportions"].shape == (100, 3) and "cell_abundance" in result.obs


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--model", "nmfdeconv"], "needs a labelled single-cell reference: --reference"),
        (["--model", "nmfdeconv", "--reference", "absent.h5ad"], "does not exist"),
        (["--model", "imputer", "--reference", "{folder}"], "is a folder (a zarr store?)"),
        (["--model", "zinbvae", "--reference", "{ref}"], "does not take --reference"),
        (["--model", "nmfdeconv", "--reference", "{ref}", "--n-latent", "3"], "--n-latent"),
        (
            ["--model", "archetypes", "--batch-key", "b"],
            "not take --batch-key; it takes --sample-k",
        ),
        (["--model", "archetypes", "--sample-key", "b"], "--sample-key 'b' is not a column of"),
        (["--model", "nmfdeconv", "--reference", "{ref}", "--profiles", "type"], "--profiles"),
        (["--model", "nmfdeconv", "--reference", "{ref}", "--labels-key", "type"], "'type' is"),
        (["--model", "imputer", "--reference", "{ref}", "--backed"], "drop --backed"),
        (["--model", "imputer", "--reference", "{ref}", "--early-stopping"], "drop --early-st"),
        (["--model", "archetypes", "--n-archetypes", "1"], "'auto' or an integer >= 2"),
        (["--model", "archetypes", "--n-archetypes", "500"], "larger than the number of spots"),
        (["--model", "archetypes", "--n-archetypes", "3", "--max-archetypes", "5"], "drop one"),
        (["--model", "archetypes", "--max-archetypes", "2"], "must be an integer >= 3, got 2"),
        (["--model", "archetypes", "--merge-threshold", "1.5"], "a fraction in (0, 1], got 1.5"),
        (["--model", "zinbvae", "--merge-threshold", "0.5"], "does not take --merge-threshold"),
    ],
)
def test_spatial_input_errors_are_clear(files, tmp_path, capsys, options, message):
    spots_path, ref_path, _ = files
    options = [o.replace("{ref}", str(ref_path)) for o in options]
    options = [o.replace("{folder}", str(tmp_path)) for o in options]
    out = tmp_path / "never.h5ad"
    assert _fit(spots_path, out, *options) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_a_reference_with_its_counts_in_a_layer(files, tmp_path, capsys):
    spots_path, ref_path, _ = files
    ref = ad.read_h5ad(ref_path)
    ref.layers["counts"] = ref.X.copy()
    ref.X = np.log1p(np.asarray(ref.X.todense() if hasattr(ref.X, "todense") else ref.X))
    logged = tmp_path / "ref_logged.h5ad"
    ref.write_h5ad(logged)
    options = ["--model", "nmfdeconv", "--reference", str(logged), "--labels-key", "cluster"]
    options += ["--epochs", "5", "--no-plots"]
    assert _fit(spots_path, tmp_path / "a.h5ad", *options) == 2
    err = capsys.readouterr().err
    assert "--reference-layer 'counts'" in err and "reference_layer" not in err
    # A --reference-layer the reference lacks is named as the reference's, not the spots'.
    assert _fit(spots_path, tmp_path / "c.h5ad", *options, "--reference-layer", "raw") == 2
    assert "layer 'raw' is not in reference.layers" in capsys.readouterr().err
    assert _fit(spots_path, tmp_path / "b.h5ad", *options, "--reference-layer", "counts") == 0
    assert "proportions" in ad.read_h5ad(tmp_path / "b.h5ad").obsm


class _Stop(Exception):
    """Ends a command once the arguments were seen (Ctrl-C's KeyboardInterrupt is the CLI's
    own to report)."""


def test_options_reach_the_model_as_in_python(files, tmp_path, monkeypatch):
    """Without --epochs the model trains its own default (Archetypes 300; max_epochs=None
    fell to the data-size rule); --seed and --n-latent reach the imputer's from_reference."""
    spots_path, ref_path, _ = files
    seen = {}

    def stop(self, **kwargs):
        seen["train"] = kwargs
        raise _Stop

    def samples(self, **kwargs):
        seen["samples"] = list(self.adata_manager.get_state_registry("batch").categorical_mapping)
        raise _Stop

    monkeypatch.setattr(dv.model.Archetypes, "train", stop)
    with pytest.raises(_Stop):
        _fit(spots_path, tmp_path / "a.h5ad", "--model", "archetypes", "--n-archetypes", "3")
    assert "max_epochs" not in seen["train"]
    # Slides fitted together (Archetypes' sample_key) had no flag.
    slides = ad.read_h5ad(spots_path)
    slides.obs["slide"] = np.where(np.arange(slides.n_obs) < 50, "s1", "s2")
    slides.write_h5ad(tmp_path / "slides.h5ad")
    monkeypatch.setattr(dv.model.Archetypes, "train", samples)
    with pytest.raises(_Stop):
        _fit(
            tmp_path / "slides.h5ad",
            tmp_path / "s.h5ad",
            "--model",
            "archetypes",
            "--sample-key",
            "slide",
        )
    assert seen["samples"] == ["s1", "s2"]

    def spy(model_cls, adata, reference, options):
        seen["build"] = options["reference"]
        raise _Stop

    monkeypatch.setattr(cli_commands, "build_model", spy)
    options = ["--model", "imputer", "--reference", str(ref_path), "--labels-key", "cluster"]
    with pytest.raises(_Stop):
        _fit(spots_path, tmp_path / "i.h5ad", *options, "--seed", "7", "--n-latent", "4")
    assert seen["build"]["seed"] == 7 and seen["build"]["n_latent"] == 4


def test_min_spots_and_n_markers_reach_the_models(files, tmp_path, capsys, monkeypatch):
    """The archetypes merge note advised min_spots, which had no flag; nmfdeconv's marker
    genes per type could not be set from the shell."""
    spots_path, ref_path, _ = files
    out = tmp_path / "arch.h5ad"
    options = ["--model", "archetypes", "--n-archetypes", "3", "--epochs", "5", "--no-plots"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert _fit(spots_path, out, *options, "--min-spots", "90") == 0
    printed = capsys.readouterr()
    assert ad.read_h5ad(out).obsm["archetype_weights"].shape[1] == 2  # merged down to two
    assert "--min-spots 90 spots" in printed.out + printed.err and "min_spots=" not in printed.err

    seen = {}
    build = dv.model.NMFDeconv.from_reference.__func__

    @functools.wraps(build)  # the options are checked against its signature
    def recording(cls, adata, **kwargs):
        seen.update(kwargs)
        return build(cls, adata, **kwargs)

    monkeypatch.setattr(dv.model.NMFDeconv, "from_reference", classmethod(recording))
    options = ["--model", "nmfdeconv", "--reference", str(ref_path), "--labels-key", "cluster"]
    options += ["--epochs", "2", "--no-plots"]
    for value, expected in (("5", 5), ("all", None)):
        assert _fit(spots_path, tmp_path / f"n{value}.h5ad", *options, "--n-markers", value) == 0
        assert seen.pop("n_markers") == expected
    assert _fit(spots_path, tmp_path / "bad.h5ad", *options, "--n-markers", "0") == 2
    assert "must be a positive integer or 'all'" in capsys.readouterr().err
    # Its default trains on every spot: --early-stopping alone is refused before reading.
    assert _fit(spots_path, tmp_path / "e.h5ad", *options, "--early-stopping") == 2
    printed = capsys.readouterr()
    assert "(--train-size 1.0, the default of --model nmfdeconv)" in printed.err
    assert "Training" not in printed.out
    # NMFDeconv's encoder can hold spots out and stop on them (the CLI had refused both).
    held = ["--train-size", "0.8", "--early-stopping"]
    assert _fit(spots_path, tmp_path / "t.h5ad", *options, *held) == 0
    imputer = ["--model", "imputer", *options[2:], "--train-size", "0.8"]
    assert _fit(spots_path, tmp_path / "i.h5ad", *imputer) == 2
    assert "fits on every spot, holding none out: drop --train-size" in capsys.readouterr().err
    zinb = ["--model", "zinbvae", "--n-markers", "5", "--no-plots"]
    assert _fit(spots_path, tmp_path / "z.h5ad", *zinb) == 2
    assert "zinbvae does not take --n-markers" in capsys.readouterr().err


def test_spots_without_counts_are_warned_about_once(files, tmp_path, capsys):
    """Setup's "3 spots in adata.X are all zeros" and the results' "3 of 100 spots have no
    counts" both reached stderr in one run: the same spots, warned about twice."""
    spots_path, _, spots = files
    zeros = spots.copy()
    zeros.X = zeros.X.toarray() if hasattr(zeros.X, "toarray") else zeros.X.copy()
    zeros.X[:3] = 0
    zeros.write_h5ad(tmp_path / "zeros.h5ad")
    options = ["--model", "archetypes", "--n-archetypes", "2", "--epochs", "2", "--no-plots"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(tmp_path / "zeros.h5ad", tmp_path / "a.h5ad", *options) == 0
    err = capsys.readouterr().err
    assert err.count("deltavae: warning: ") == 1, err
    assert "3 of 100 spots have no counts" in err


def test_reference_keys_are_checked_before_anything_is_read(files, tmp_path, capsys, monkeypatch):
    """A mistyped --labels-key or --reference-layer was found once the whole reference was
    read into memory."""
    spots_path, ref_path, _ = files

    def unread(*args, **kwargs):
        raise AssertionError("a file was read")

    monkeypatch.setattr(ad, "read_h5ad", unread)
    options = ["--model", "nmfdeconv", "--reference", str(ref_path)]
    for extra, message in (
        (["--labels-key", "type"], "--labels-key 'type' is not a column of the reference's obs"),
        (["--labels-key", "cluster", "--reference-layer", "raw"], "'raw' is not in reference."),
    ):
        assert _fit(spots_path, tmp_path / "n.h5ad", *options, *extra) == 2
        assert message in capsys.readouterr().err
    # The labelled cells given as INPUT and the spots as --reference (Tangram's order):
    # "not a column of the reference's obs" alone did not say which file was which.
    swapped = ["--model", "imputer", "--reference", str(spots_path), "--labels-key", "cluster"]
    assert _fit(ref_path, tmp_path / "n.h5ad", *swapped) == 2
    assert "INPUT's obs holds 'cluster': INPUT is the spots" in capsys.readouterr().err


def test_archetypes_merged_as_alike_are_a_note_in_flag_terms(files, tmp_path, capsys, monkeypatch):
    """The warning that archetypes merged as alike reached the shell as a Python warning,
    advising model.merge_threshold, which no flag set: the Python API's merge_threshold and
    max_archetypes had no flag (auto tried at most 10 archetypes, merged at 0.9)."""
    from deltavae.model._archetype_results import _warn_alike

    spots_path, _, spots = files
    fresh = dv.model.Archetypes._fresh_merge

    def alike(model):  # as a fit whose archetypes 0 and 1 came out alike
        _warn_alike(np.array([0, 0, 1]), model.merge_threshold)
        return fresh(model)

    monkeypatch.setattr(dv.model.Archetypes, "_fresh_merge", alike)
    out, saved = tmp_path / "a.h5ad", tmp_path / "model"
    options = ["--model", "archetypes", "--max-archetypes", "3", "--merge-threshold", "0.95"]
    options += ["--epochs", "2", "--no-plots", "--min-spots", "1", "--save-model", str(saved)]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert _fit(spots_path, out, *options) == 0
    printed = capsys.readouterr()
    assert "raw archetypes (0, 1) point the same way" in printed.out
    assert "above --merge-threshold 0.95)" in printed.out
    assert "or keep them apart with a higher --merge-threshold (1 never merges); uns" in printed.out
    assert "merge_threshold" not in printed.out + printed.err
    assert "; after merging (--merge-threshold 0.95, --min-spots 1): " in printed.out
    summary = ad.read_h5ad(out).uns["archetypes"]
    assert summary["merge_threshold"] == 0.95 and list(summary["elbow"]["n_archetypes"]) == [2, 3]
    loaded = dv.model.Archetypes.load(str(saved), adata=spots.copy())
    assert (loaded.merge_threshold, loaded.min_spots) == (0.95, 1)


def test_help_defaults_are_the_python_defaults():
    """What ``deltavae fit --help`` gives as a model's default is its Python default."""
    import inspect

    from deltavae.cli import build_parser

    fit = next(a for a in build_parser()._actions if a.dest == "command").choices["fit"]
    helps = {
        action.dest: " ".join(fit._get_formatter()._expand_help(action).split())
        for action in fit._actions
    }
    model = dv.model
    cases = {
        "n_archetypes": (model.Archetypes, "n_archetypes", "[model's default: {}]"),
        "max_archetypes": (model.Archetypes, "max_archetypes", "[{}]"),
        "merge_threshold": (model.Archetypes, "merge_threshold", "[{}]"),
        "min_spots": (model.Archetypes, "min_spots", "[{}]"),
        "n_markers": (model.NMFDeconv.from_reference, "n_markers", "[{}]"),
        "profiles": (model.SpatialImputer.from_reference, "profiles", "[{}]"),
        "design": (model.SpatialImputer.from_reference, "design", "[{}]"),
        "labels_key": (model.NMFDeconv.from_reference, "labels_key", "imputer: {}]"),
        "likelihood": (model.ZINBVAE, "likelihood", "[model's default: {}]"),
        "train_size": (model.ZINBVAE.train, "train_size", "[the model's default: {};"),
        "batch_size": (model.ZINBVAE.train, "batch_size", "[the model's default: {} for"),
    }
    for dest, (function, name, shown) in cases.items():
        default = inspect.signature(function).parameters[name].default
        assert shown.format(default) in helps[dest], (dest, default, helps[dest])
    assert "zinbvae 10;" in helps["n_latent"]
    assert inspect.signature(model.ZINBVAE).parameters["n_latent"].default == 10
    assert "archetypes 300;" in helps["epochs"]
    # The imputer refuses both (it fits every spot): the help said 0.9 was its default.
    assert "(imputer always does: it takes neither this nor" in helps["train_size"]
    assert "from the first epoch, with --train-size below 1; not imputer" in helps["early_stopping"]
    assert inspect.signature(model.Archetypes.train).parameters["max_epochs"].default == 300


def test_spots_without_coordinates_are_told_why_no_tissue_plot(files, tmp_path, capsys):
    """Spots without obsm['spatial'] got only the ELBO plot, without a word on why."""
    spots_path, ref_path, spots = files
    flat = spots.copy()
    del flat.obsm["spatial"]
    flat.write_h5ad(tmp_path / "flat.h5ad")
    options = ["--model", "nmfdeconv", "--reference", str(ref_path), "--labels-key", "cluster"]
    assert _fit(tmp_path / "flat.h5ad", tmp_path / "p.h5ad", *options, "--epochs", "2") == 0
    assert (
        f"plots in {plots_folder(tmp_path / 'p.h5ad')}: elbo_history.png (no "
        "spatial_proportions.png: the spots have no coordinates, obsm['spatial'] or "
        "obsm['X_spatial'])"
    ) in capsys.readouterr().out


def test_spots_with_coordinates_in_x_spatial_are_drawn(files, tmp_path, capsys):
    """Coordinates in obsm['X_spatial'] (scanpy's embedding name, which dv.pl.spatial_proportions
    reads) got no tissue plot, with a note that the spots had no coordinates."""
    spots_path, ref_path, spots = files
    moved = spots.copy()
    moved.obsm["X_spatial"] = moved.obsm.pop("spatial")
    moved.write_h5ad(tmp_path / "moved.h5ad")
    options = ["--model", "nmfdeconv", "--reference", str(ref_path), "--labels-key", "cluster"]
    assert _fit(tmp_path / "moved.h5ad", tmp_path / "p.h5ad", *options, "--epochs", "2") == 0
    printed = capsys.readouterr().out
    assert "no coordinates" not in printed
    assert f"plots in {plots_folder(tmp_path / 'p.h5ad')}: elbo_history.png, " in printed
    assert (plots_folder(tmp_path / "p.h5ad") / "spatial_proportions.png").stat().st_size > 1000
