"""A model's advice written for the ``deltavae`` command line: the Python arguments it names
(``max_epochs``, ``train_size=1.0`` ...) as the flags that set them (``--epochs``,
``--train-size 1.0``), advice no flag can follow left out or said another way, and a change
to make in the data (``adata.obs['t'] = ...``) as a ``python -c`` command that writes a
corrected copy of the command's file (:func:`advice_files`); scvi-tools' CSC advice and the
imputer's on uncounted genes as such commands too."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from contextvars import ContextVar

from deltavae._cli_genes import genes_by_name
from deltavae.model._count_advice import drop_empty

#: A model's advice names its Python arguments; printed by the CLI, it names the flags.
_FLAGS = (
    # First, before max_epochs is rewritten.
    # The CLI sets no warm-up: it is a share of the epochs, so more epochs lengthen both.
    (
        r"Train longer \(a larger max_epochs\), or pass n_epochs_kl_warmup=None to train on "
        r"the full ELBO from the start",
        "Train longer (--epochs)",
    ),
    (r"\(n_epochs_kl_warmup='auto': ([^)]*) of max_epochs", r"(\1 of --epochs"),
    # A failed run writes nothing and each run builds its model anew: what a Python user's
    # model object keeps, and the advice to build one anew, say nothing to a shell user.
    (r"The model keeps (?:its|the last) parameters [^.(]*(?:\([^)]*\))?\. ", ""),
    (
        r",? on a model built anew if this one diverges again \(the parameters kept may be too "
        r"far off to train on\)",
        "",
    ),
    (r",? on a model built anew\b", ""),
    (r", or call train again to continue this model\)", ")"),
    # Archetypes merged as alike: the flag, not the attribute of a model object.
    (
        r"higher merge_threshold \(model\.merge_threshold = 1 never merges\)",
        "higher --merge-threshold (1 never merges)",
    ),
    # CGMDVAE's mixture start, which no flag skips: the flags that fit it.
    (
        r"Use fewer clusters, train on more cells \(([^)]*)\), or skip the start with "
        r"mixture_init_epoch=None",
        r"Use fewer clusters (--n-clusters) or train on more cells (\1)",
    ),
    (r"^likelihood must be\b", "--likelihood must be"),
    (r"\badata\.X is empty \(None\); pass the layer", "adata.X is empty (None); pass --layer"),
    (
        r"\breference\.X is empty \(None\); pass the layer",
        "the reference's X is empty; pass --reference-layer",
    ),
    (r"\ba max_epochs\b", "--epochs"),
    (r"\bmax_epochs\b", "--epochs"),
    (r"\bearly_stopping=True\b", "--early-stopping"),
    (r"\brestore_best=True kept\b", "--early-stopping kept"),  # it passes restore_best=True
    (r"\bn_clusters=(\d+)", r"--n-clusters \1"),
    (r"\bunlabeled_category=('[^']*'|-?\d+) to setup_anndata", r"--unlabeled-category \1"),
    (r"\bunlabeled_category=('[^']*'|-?\d+)", r"--unlabeled-category \1"),
    (r"\bunlabeled_category\b", "--unlabeled-category"),
    (r"\breference_layer=('[^']*')", r"--reference-layer \1"),
    (r"\bis reference_layer the layer\b", "is --reference-layer the layer"),
    # CGMDVAE of one condition: translating and mapping query data are Python's, not a flag's.
    (r", and translate has no other condition to move cells into", ""),
    (
        r"; a condition mapped onto the model later \(load_query_data\) is learned from its "
        r"query alone, and translate predicts little of the change into it",
        "",
    ),
    (r"set up the cells of all of them together", "fit the cells of all of them in one file"),
    # The changes to the data that follow are made in a copy of the file, not before a call.
    (r" before setup_anndata(?=[:,])", ""),
    (r", then call setup_anndata again\b", ""),  # the command sets its copy up
    (
        r"Check the names \(model\.predict\(\)\)",
        "Check the names (obs['cgmdvae_cluster'] of --out)",
    ),
    # The spot models name the spots as their argument and a threshold no flag sets.
    (r"^spots (?=\(\d+ genes|and reference share)", "the spots "),
    (r" are needed \(min_shared_genes\)", " are needed"),
    # The imputer's reference genes no cell counts: the results a fit writes leave them out.
    (
        r"to leave them out of impute\(\), drop them from the reference before from_reference",
        "to leave them out of obsm['imputed'], drop them from the reference",
    ),
    (r"\blayer=('[^']*') to \w+\.setup_anndata, then build the \w+ again", r"--layer \1"),
    (r"(?<![\w.])layer=('[^']*')", r"--layer \1"),
    (r"\bCGMDVAE\(\.\.\., likelihood='(\w+)'\)", r"--model cgmdvae --likelihood \1"),
    (r"(?<![\w.])likelihood='(\w+)'", r"--likelihood \1"),
    (r"\b(batch|condition|sample|labels)_key=", r"--\1-key "),
    (r"\b(batch|condition|sample|labels)_key\b", r"--\1-key"),
    (r"\bn_clusters\b", "--n-clusters"),
    (r"\bclassifier_weight=", "--classifier-weight "),
    (r"\bclassifier_weight\b", "--classifier-weight"),
    (r"\bcondition_alignment=", "--condition-alignment "),
    (r"\bcondition_alignment\b", "--condition-alignment"),
    (r"\bn_archetypes=", "--n-archetypes "),
    (r"\bn_archetypes\b", "--n-archetypes"),
    (r"settings\.batch_size or batch_size in model\.train", "--batch-size"),
    # Archetypes anchored below 1/2: the attrs of a Python read-out no shell user holds.
    (r" get_anchors\(\.\.\.\)\.attrs\['anchored_below_half'\] lists (?:it|them)\.", ""),
    (r"\bmerge_threshold=", "--merge-threshold "),
    (r"\bmerge_threshold\b", "--merge-threshold"),
    (r"\bmax_archetypes=", "--max-archetypes "),
    (r"\bmax_archetypes\b", "--max-archetypes"),
    (r"\bmin_spots=", "--min-spots "),
    (r"\bmin_spots\b", "--min-spots"),
    (r"\btrain_size=", "--train-size "),
    (r"\btrain_size < 1\b", "--train-size below 1"),
    (r"\btrain\(lr=([^)]+)\)", r"--lr \1"),
    (r"\bthis run used lr=", "this run used --lr "),
    (r"\bthis run's lr=", "this run's --lr "),
    (r"\(lr=([^)]+)\)", r"(--lr \1)"),
    (r"with the default rate first", "without --lr first"),
    (r"\bthe model's default lr=", "the model's default --lr "),
    (r"this run's NotConvergedWarning says", "the warning on this run's training says"),
    (r"\baccelerator='(\w+)'", r"--accelerator \1"),
    (
        r"raise early_stopping_patience(?: \(this run's: \d+\))? or train without "
        r"early stopping",
        "train every epoch (--no-early-stopping; cgmdvae stops early unless given it)",
    ),
    # set_threads' refusal and warning, of --threads.
    (
        r"^n=(\d+) threads on the (\d+) CPUs this process may use; pass at most (\d+) \(or "
        r"None for the default\)",
        r"--threads \1 on the \2 CPUs this process may use: pass at most \3 (or leave "
        r"--threads out for the default)",
    ),
    (r"\bset_threads\((\d+)\)", r"--threads \1"),
    # Last: the bare names the patterns above leave.
    (r"\bbatch_size=(\d+)", r"--batch-size \1"),
    (r"\b(batch|train)_size\b", r"--\1-size"),
)


def _as_flags(note: str) -> str:
    """A model's note with the training arguments it names written as ``deltavae`` flags.

    Examples
    --------
    >>> _as_flags("pass a max_epochs above this run's 5, with early_stopping=True to stop")
    "pass --epochs above this run's 5, with --early-stopping to stop"
    >>> _as_flags("Train longer (a larger max_epochs), or pass n_epochs_kl_warmup=None to train "
    ...           "on the full ELBO from the start.")
    'Train longer (--epochs).'
    >>> _as_flags("Train longer for them to catch up (a max_epochs above this run's 20, or "
    ...           "call train again to continue this model).")
    "Train longer for them to catch up (--epochs above this run's 20)."
    >>> _as_flags("condition_alignment must be a number of 0 or more, or 'auto'; got 'x'.")
    "--condition-alignment must be a number of 0 or more, or 'auto'; got 'x'."
    >>> _as_flags("Train longer (a larger max_epochs). get_anchors(...).attrs["
    ...           "'anchored_below_half'] lists it.")
    'Train longer (a larger --epochs).'
    >>> _as_flags("If they hold fewer, n_clusters=4 fits them.")
    'If they hold fewer, --n-clusters 4 fits them.'
    >>> _as_flags("pass unlabeled_category='unknown' to setup_anndata.")
    "pass --unlabeled-category 'unknown'."
    >>> _as_flags("'Unknown' unless unlabeled_category names another")
    "'Unknown' unless --unlabeled-category names another"
    >>> _as_flags("Cytometry fits CGMDVAE(..., likelihood='normal').")
    'Cytometry fits --model cgmdvae --likelihood normal.'
    >>> _as_flags("counts, which likelihood='normal' reads as real values")
    'counts, which --likelihood normal reads as real values'
    >>> _as_flags("Pass the layer with the raw counts, e.g. reference_layer='counts'.")
    "Pass the layer with the raw counts, e.g. --reference-layer 'counts'."
    >>> _as_flags("adata.X is empty (None); pass the layer with the data: ['counts'].")
    "adata.X is empty (None); pass --layer with the data: ['counts']."
    >>> _as_flags("batch_key='nope' is not a column of adata.obs")
    "--batch-key 'nope' is not a column of adata.obs"
    >>> _as_flags("condition_key 'one' holds one value; n_clusters must be at least 2")
    "--condition-key 'one' holds one value; --n-clusters must be at least 2"
    >>> _as_flags("got batch_size=1. Use batch_size >= 2 or a larger train_size (now 0.5)")
    'got --batch-size 1. Use --batch-size >= 2 or a larger --train-size (now 0.5)'
    >>> _as_flags("Use fewer clusters, train on more cells (train_size=1.0), or skip the start "
    ...           "with mixture_init_epoch=None.")
    'Use fewer clusters (--n-clusters) or train on more cells (--train-size 1.0).'
    >>> _as_flags("likelihood must be 'zinb' or 'nb', got 'normal'.")
    "--likelihood must be 'zinb' or 'nb', got 'normal'."
    >>> _as_flags("no counts for 3 of them: is reference_layer the layer of its raw counts?")
    'no counts for 3 of them: is --reference-layer the layer of its raw counts?'
    >>> _as_flags("spots (8 genes) and reference (40 genes) share 8 genes; at "
    ...           "least 10 are needed (min_shared_genes).")
    'the spots (8 genes) and reference (40 genes) share 8 genes; at least 10 are needed.'
    >>> _as_flags("n_archetypes=500 is larger than the spots")
    '--n-archetypes 500 is larger than the spots'
    >>> _as_flags("Fit fewer archetypes (n_archetypes), or keep them apart with a higher "
    ...           "merge_threshold (model.merge_threshold = 1 never merges); uns[...] records")
    'Fit fewer archetypes (--n-archetypes), or keep them apart with a higher --merge-threshold
    (1 never merges); uns[...] records'
    >>> _as_flags("set_threads(4) is more than the 2 CPUs this process may use: the threads "
    ...           "wait on each other and training slows; set_threads(2) uses them all.")
    '--threads 4 is more than the 2 CPUs this process may use: the threads wait on each other
    and training slows; --threads 2 uses them all.'
    >>> _as_flags("n=100 threads on the 2 CPUs this process may use; pass at most 2 (or None "
    ...           "for the default).")
    '--threads 100 on the 2 CPUs this process may use: pass at most 2 (or leave --threads out
    for the default).'
    >>> _as_flags("a lower learning rate, e.g. train(lr=0.0001) (this run used lr=0.001).")
    'a lower learning rate, e.g. --lr 0.0001 (this run used --lr 0.001).'
    >>> _as_flags("Training diverged: the loss became nan at epoch 0, step 1 of 3. The model keeps "
    ...           "its parameters from before this training run (the first updates already "
    ...           "diverged). Train again with a lower learning rate, e.g. train(lr=0.0001) "
    ...           "(this run used lr=0.001), on a model built anew if this one diverges again "
    ...           "(the parameters kept may be too far off to train on).")
    'Training diverged: the loss became nan at epoch 0, step 1 of 3. Train again with a lower
    learning rate, e.g. --lr 0.0001 (this run used --lr 0.001).'
    >>> _as_flags("Train again with a lower learning rate than this run's lr=0.1, on a model "
    ...           "built anew.")
    "Train again with a lower learning rate than this run's --lr 0.1."
    >>> _as_flags("Its rate (lr=0.5) is ...: train again with the default rate first.")
    'Its rate (--lr 0.5) is ...: train again without --lr first.'
    >>> _as_flags("Train again with a lower learning rate than this run's lr=0.1.")
    "Train again with a lower learning rate than this run's --lr 0.1."
    """
    for pattern, flag in _FLAGS:
        note = re.sub(pattern, flag, note)
    advised = _FILES.get()
    if advised is None or advised.files["reference"] is None:  # else: whose names?
        note = re.sub(*_REPEATED, note)
    elif advised.reference_layer is not None:  # scanpy's filters read X, not the counts
        for step, rows in (("filter_cells", True), ("filter_genes", False)):
            drop = drop_empty("reference", advised.reference_layer, rows=rows)
            note = note.replace(f"sc.pp.{step}(reference, min_counts=1)", drop)
    return _as_commands(genes_by_name(note))


#: anndata's warning of repeated names, at each read of a file that has them: the call, as
#: a command on INPUT (:func:`_as_commands`) where it is the command's only file.
_REPEATED = (
    r"(Observation|Variable) names are not unique\. To make them unique, call "
    r"`\.(obs|var)_names_make_unique`\.",
    r"\1 names are not unique; make them unique: adata.\2_names_make_unique().",
)


class _Advised:
    """The files of a running command that a model's advice changes (INPUT, ``adata``, and
    ``--reference``), and the changes advised to each so far, in order: each ``(name,
    statements)``, by the name its statements give the AnnData; the --reference-layer."""

    def __init__(self, input=None, reference=None, reference_layer: str | None = None):
        self.files = {"adata": input, "reference": reference}
        self.reference_layer = reference_layer
        self.changes: dict[str, list[tuple[str, str]]] = {"adata": [], "reference": []}


#: The running command's :class:`_Advised` (:func:`advice_files`).
_FILES: ContextVar[_Advised | None] = ContextVar("deltavae_cli_files", default=None)
#: Where the command has no such file.
_PLACEHOLDERS = {"adata": "INPUT.h5ad", "reference": "REFERENCE.h5ad"}


@contextlib.contextmanager
def advice_files(input: str | None, reference: str | None = None, reference_layer=None):
    """Within (one run of a command): the files :func:`_as_flags` writes a change to the data
    against (the placeholders ``INPUT.h5ad`` and ``REFERENCE.h5ad`` where a command has
    none), and the reference's counts layer its advice drops empty cells and genes on. Each
    change's command also makes those advised before it in the run, to the same copy, which
    the next change would otherwise write over."""
    token = _FILES.set(_Advised(input, reference, reference_layer))
    try:
        yield
    finally:
        _FILES.reset(token)


#: The names a model's advice gives the data it changes, and the command's file that holds
#: them: INPUT's cells or spots, or the --reference.
_DATA = {"adata": "adata", "spots": "adata", "reference": "reference"}
_NAME = "(" + "|".join(_DATA) + ")"
#: A statement of a model's advice that changes the data it was given: an assignment to the
#: AnnData or a part of it (``adata.obs['t'] = ...``, ``reference = reference[...].copy()``),
#: scanpy's in-place steps (``sc.pp.filter_cells(adata, min_counts=1)``) and unique names.
_CHANGE = re.compile(
    rf"(?<![\w.]){_NAME}(?:\.\w+)?(?:\[(?:'[^']*'|\"[^\"]*\")\])? = "
    rf"|(?<![\w.])sc\.pp\.\w+\({_NAME}[,)]"
    rf"|(?<![\w.]){_NAME}\.(?:obs|var)_names_make_unique\(\)"
)
#: A command given already (by this Python, or as ``python``), in double quotes or in
#: shlex's single quotes.
_COMMAND = re.compile(
    rf"(?:{re.escape(shlex.quote(sys.executable))}|python) -c "
    r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'(?:\"'\"'[^']*')*)"
)
#: What joins the statements of one change: they make one command.
_THEN = ("; ", ", then ")
#: What comes between two changes of one message that are each other's alternatives.
_OR = re.compile(r"\bor\b")


def _as_commands(note: str) -> str:
    """``note`` with each change to the data (:data:`_CHANGE`), which a shell user cannot make
    in a session they do not have, as a ``python -c`` command that reads the command's file,
    makes it and writes a copy (the file itself is kept), then the run on that copy. A change
    after another to the same file in the run (in this note or an earlier one) is made in one
    command with them, unless the note gives it as their alternative ("..., or ...").

    Examples
    --------
    >>> print(_as_commands("mark them: adata.obs['t'] = adata.obs['t'].fillna('U'), or drop them."))
    mark them: ... -c "import anndata; adata = anndata.read_h5ad('INPUT.h5ad');
    adata.obs['t'] = adata.obs['t'].fillna('U'); adata.write_h5ad('INPUT_fixed.h5ad')", then
    run deltavae fit on 'INPUT_fixed.h5ad', or drop them.
    >>> with advice_files("in.h5ad", "cells.h5ad"):
    ...     print(_as_commands("Drop them first: sc.pp.filter_cells(reference, min_counts=1)."))
    Drop them first: ... -c "import anndata, scanpy as sc; reference =
    anndata.read_h5ad('cells.h5ad'); sc.pp.filter_cells(reference, min_counts=1);
    reference.write_h5ad('cells_fixed.h5ad')", then pass --reference 'cells_fixed.h5ad'.
    >>> with advice_files("in.h5ad"):
    ...     print(_as_commands("Drop them: sc.pp.filter_cells(adata, min_counts=1). Mark "
    ...                        "them: adata.obs['t'] = 'U'."))
    Drop them: ... -c "import anndata, scanpy as sc; adata = anndata.read_h5ad('in.h5ad');
    sc.pp.filter_cells(adata, min_counts=1); adata.write_h5ad('in_fixed.h5ad')", then run
    deltavae fit on 'in_fixed.h5ad'. Mark them: ... -c "import anndata, scanpy as sc; adata =
    anndata.read_h5ad('in.h5ad'); sc.pp.filter_cells(adata, min_counts=1); adata.obs['t'] =
    'U'; adata.write_h5ad('in_fixed.h5ad')" (with the change advised before), then run
    deltavae fit on 'in_fixed.h5ad'.
    >>> note = "drop it: adata = adata[adata.obs['t'] != 'x$'].copy()."
    >>> _as_commands(_as_commands(note)) == _as_commands(note)
    True
    """
    advised = _FILES.get() or _Advised()
    start, last = 0, {}  # each file's last change in this note: its end and those before it
    while (found := _CHANGE.search(note, start)) is not None:
        given = next((c for c in _COMMAND.finditer(note, start) if c.start() < found.start()), None)
        if given is not None:  # a command given already: its statements stay as they are
            start = given.end()
            continue
        first, name = found.start(), _changed(found)
        statements = []
        while found is not None and _changed(found) == name:  # one change, step by step
            end = _statement_end(note, found.end() if found[1] else found.start())
            statements.append(note[found.start() : end])
            then = next((sep for sep in _THEN if note.startswith(sep, end)), None)
            found = None if then is None else _CHANGE.match(note, end + len(then))
        data, change = _DATA[name], (name, "; ".join(statements))
        changes = advised.changes[data]
        if change in changes:  # the same advice again (a warning given twice)
            before = changes[: changes.index(change)]
        elif data in last and _OR.search(note, last[data][0], first):  # "X, or Y": not both
            before = last[data][1]
        else:
            before = list(changes)
            changes.append(change)
        command = _change_command(data, [*before, change], advised.files[data])
        note = note[:first] + command + note[end:]
        start = first + len(command)
        last[data] = (start, before)
    return note


def _changed(found: re.Match) -> str:
    """The name of the AnnData a statement found by :data:`_CHANGE` changes."""
    return next(group for group in found.groups() if group)


def _statement_end(text: str, start: int) -> int:
    """Where the Python expression from ``start`` ends: at a space, comma or semicolon
    outside brackets and quotes, a closing bracket it did not open, or a full stop that
    begins no attribute."""
    depth, quote, i = 0, None, start
    while i < len(text):
        c = text[i]
        if quote is not None:
            i += 2 if c == "\\" else 1
            quote = None if c == quote else quote
            continue
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (c.isspace() or c in ",;"):
            return i
        elif depth == 0 and c == "." and not text[i + 1 : i + 2].isidentifier():
            return i
        i += 1
    return i


def _change_command(data: str, changes: list[tuple[str, str]], path: str | None) -> str:
    """``changes``, each ``(name, statements)`` on the AnnData of ``data`` by that name, as
    one command run on its file ``path`` (its placeholder where ``None``), which writes the
    changed copy beside it."""
    path = path or _PLACEHOLDERS[data]
    kind = "zarr" if os.path.isdir(path) or path.rstrip("/").endswith(".zarr") else "h5ad"
    stem, suffix = os.path.splitext(path.rstrip("/"))
    copy = f"{stem}_fixed{suffix or '.' + kind}"
    name = changes[0][0]
    code = f"{name} = anndata.read_{kind}({path!r})"
    for other, statements in changes:
        if other != name:  # spots and adata: one AnnData by two names
            code, name = f"{code}; {other} = {name}", other
        code = f"{code}; {statements}"
    imports = ", ".join(
        ["anndata"] + [f"{module} as {alias}" for module, alias in _ALIASES if alias + "." in code]
    )
    code = f"import {imports}; {code}; {name}.write_{kind}({copy!r})"
    also = len(changes) - 1
    said = f" (with the {'change' if also == 1 else f'{also} changes'} advised before)"
    then = f"run deltavae fit on {copy!r}" if data == "adata" else f"pass --reference {copy!r}"
    return f"{python_command(code)}{said if also else ''}, then {then}"


def python_command(code: str) -> str:
    """The Python running this command, which has anndata and scanpy, with ``-c code`` for a
    shell: ``code`` in double quotes, as the command's other advice gives them, unless the
    shell would read something there (a $ or ! in a name), then as shlex quotes it. Not
    ``python``: the one on PATH may lack anndata, or be none (deltavae installed by pipx or
    into a virtual environment not activated).

    Examples
    --------
    >>> command = python_command("import anndata; anndata.read_zarr('a$.zarr')")
    >>> command.startswith(shlex.quote(sys.executable))
    True
    >>> print(command[len(shlex.quote(sys.executable)) :])
     -c 'import anndata; anndata.read_zarr('"'"'a$.zarr'"'"')'
    """
    plain = not set(code) & set('"$`\\!')
    return f"{_interpreter()} -c " + (f'"{code}"' if plain else shlex.quote(code))


def _interpreter() -> str:
    """This Python, as a shell names it (``python`` where Python cannot tell its path)."""
    return shlex.quote(sys.executable) if sys.executable else "python"


#: Modules the advice names by their usual aliases.
_ALIASES = (("numpy", "np"), ("pandas", "pd"), ("scanpy", "sc"))


#: scvi-tools' advice for counts in a CSC matrix, which names no file and no flag.
_CSC_ADVICE = "Training will be faster when sparse matrix is formatted as CSR"

#: The spatial models' advice for spots' genes no spot counts, in Python.
_UNCOUNTED_ADVICE = ", and impute() gives them only when named in genes=. To impute them"


def _uncounted_advice(message: str, path: str, layer: str | None) -> str:
    """The imputer's note on genes no spot counts, with what a shell user does: its results
    (``obsm['imputed']``) leave them out, and dropping them from the file imputes them.

    Examples
    --------
    >>> note = ("2 of the spots' 9 genes are 0 in every spot (e.g. ['g0', 'g1']): ..., so the "
    ...         "model leaves them out of the fit" + _UNCOUNTED_ADVICE + " as unmeasured, drop "
    ...         "them from the spots first: sc.pp.filter_genes(spots, min_cells=1).")
    >>> print(_uncounted_advice(note, "s.h5ad", "counts"))
    2 of the spots' 9 genes are 0 in every spot (e.g. ['g0', 'g1']): ..., so the model leaves
    them out of the fit, and obsm['imputed'] leaves them out. To impute them as unmeasured,
    drop them from the file, then fit on the new one: ... -c "import anndata, numpy as np;
    a = anndata.read_h5ad('s.h5ad'); c = a.layers['counts'];
    a = a[:, np.asarray((c > 0).sum(0)).ravel() > 0].copy(); a.write_h5ad('s_counted.h5ad')"
    """
    slot = "a.X" if layer is None else f"a.layers[{layer!r}]"
    stem = path[: -len(".h5ad")] if path.endswith(".h5ad") else path.rstrip("/")
    new = f"{stem}_counted.h5ad"
    return message[: message.index(_UNCOUNTED_ADVICE)] + (
        ", and obsm['imputed'] leaves them out. To impute them as unmeasured, drop them from "
        "the file, then fit on the new one: "
        + python_command(
            f"import anndata, numpy as np; a = anndata.read_h5ad({path!r}); c = {slot}; "
            f"a = a[:, np.asarray((c > 0).sum(0)).ravel() > 0].copy(); a.write_h5ad({new!r})"
        )
    )


def _csc_advice(path: str, layer: str | None) -> str:
    """What to do, in a shell, with counts stored column by column (CSC).

    Examples
    --------
    >>> print(_csc_advice("c.h5ad", "counts"))
    The counts (layer 'counts' of 'c.h5ad') are a CSC sparse matrix, which minibatches read
    slower than CSR (rows): convert the file once, then train on it: ... -c "import anndata;
    a = anndata.read_h5ad('c.h5ad'); a.layers['counts'] = a.layers['counts'].tocsr();
    a.write_h5ad('c.h5ad')"
    """
    what, slot = ("X", "a.X") if layer is None else (f"layer {layer!r}", f"a.layers[{layer!r}]")
    return (
        f"The counts ({what} of {path!r}) are a CSC sparse matrix, which minibatches read "
        "slower than CSR (rows): convert the file once, then train on it: "
        + python_command(
            f"import anndata; a = anndata.read_h5ad({path!r}); {slot} = {slot}.tocsr(); "
            f"a.write_h5ad({path!r})"
        )
    )
