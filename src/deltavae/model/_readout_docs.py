"""scvi-tools' docstrings of the read-outs deltavae's models take from it, completed where
they leave a parameter out and with a note where deltavae's answer differs on purpose."""

from __future__ import annotations

import inspect
import textwrap

_INDENT = " " * 8  # scvi-tools' docstrings are methods' (numpydoc, indented 8 spaces)


def with_silent(doc: str) -> str:
    """scvi-tools' docstring with its ``silent`` parameter described: scvi-tools 1.4 leaves
    the placeholder ``%(de_silent)s`` unfilled in some, and leaves ``silent`` out of
    ``posterior_predictive_sample``'s."""
    silent = "silent\n            If True, disables the progress bar."
    if "%(de_silent)s" in doc:
        return doc.replace("%(de_silent)s", silent)
    if "        silent\n" in doc or "        dataloader\n" not in doc:
        return doc
    return doc.replace("        dataloader\n", f"        {silent}\n        dataloader\n", 1)


def with_batch_size_default(doc: str, method) -> str:
    """scvi-tools' docstring of ``method`` with its ``batch_size``'s real default: scvi-tools
    1.4 says "Defaults to `scvi.settings.batch_size`" for ``get_feature_correlation_matrix``,
    whose signature's default (``batch_size=64``) is what it uses."""
    default = inspect.signature(method).parameters["batch_size"].default
    if default is None:  # None: scvi.settings.batch_size, as said
        return doc
    said = "Defaults to `scvi.settings.batch_size`."
    return doc.replace(said, f"Default {default} (not ``scvi.settings.batch_size``).", 1)


def with_note(doc: str, note: str) -> str:
    """``doc`` with the paragraph ``note`` at the end of its Notes section (one is added where
    it has none).

    Examples
    --------
    >>> doc = "Sum.\\n\\n        Returns\\n        -------\\n        A number.\\n"
    >>> print(with_note(doc, "Exact."))
    Sum.
    <BLANKLINE>
            Returns
            -------
            A number.
    <BLANKLINE>
            Notes
            -----
            Exact.
    <BLANKLINE>
    """
    width = 88 - len(_INDENT)
    text = textwrap.fill(" ".join(note.split()), width, break_on_hyphens=False)
    paragraph = textwrap.indent(text, _INDENT)
    doc = doc.rstrip()
    if f"\n{_INDENT}Notes\n{_INDENT}-----\n" not in doc:
        doc += f"\n\n{_INDENT}Notes\n{_INDENT}-----"
        return f"{doc}\n{paragraph}\n{_INDENT}"
    return f"{doc}\n\n{paragraph}\n{_INDENT}"


GENE_LIST_ORDER = """The genes of ``gene_list`` come in the order of the list (scvi-tools keeps
the model's order), so that the columns of an array are the genes asked for, in order; a
string is one gene; a gene the model does not have is refused (scvi-tools dropped it without a
word). ``gene_list`` is read with ``dataloader=`` too (scvi-tools returns every gene there)."""

DRAWS_AT_FLOOR = """For ``likelihood="normal"`` (CGMDVAE) the draws are clipped at 0 where
neither the training data nor ``adata`` hold a value below 0 (log-normalized data), as
``sample`` and ``translate`` clip theirs; data with negative values (arcsinh, CLR, scaled) are
drawn as is."""

ZINB_TOTALS = """For ``likelihood="zinb"`` the drawn cells' totals come under their library
sizes by the share of counts the dropout zeroes: the library is the negative binomial's total
(its mean is the library times ``scale``, which sums to 1 over the genes) and the dropout takes
counts away on top of it, as in scvi-tools' SCVI, whose draws fall as far under (500 Kang
IFN-beta cells x 200 genes: 6-11% under the real cells' mean total after 30 epochs, for SCVI and
deltavae alike, 2-4% after 100, as the fit lowers the dropout). ``likelihood="nb"`` draws the
real totals (within 2%, at the observed library sizes)."""

DRAWN_ON_THE_CPU = """Every number (z, a latent library, the counts or values) is drawn
on the CPU, cell after cell, from generators seeded by torch's CPU generator: one
``scvi.settings.seed`` gives the same draws on a GPU as on the CPU, and for any ``batch_size``
(scvi-tools draws on the model's device, minibatch by minibatch)."""


def drawn_on_cpu(draws: str) -> str:
    """The note of a read-out whose random ``draws`` (a phrase) are made on the CPU, cell
    after cell, where scvi-tools makes them on the model's device.

    Examples
    --------
    >>> drawn_on_cpu("z (one draw of q(z | x) per cell)").split(",")[0]
    'Its draws of z (one draw of q(z | x) per cell) are made on the CPU'
    """
    return (
        f"Its draws of {draws} are made on the CPU, cell after cell, from generators seeded by "
        "torch's CPU generator: one ``scvi.settings.seed`` gives the same values on a GPU as "
        "on the CPU, and for any ``batch_size`` (scvi-tools draws them on the model's device, "
        "minibatch by minibatch, and a GPU gave other values; a mean over many draws agrees "
        "with scvi-tools' within its Monte Carlo error)."
    )


#: ``posterior_predictive_sample``'s note on its draws.
PREDICTIVE_DRAWS = DRAWN_ON_THE_CPU + " " + DRAWS_AT_FLOOR + " " + ZINB_TOTALS

#: Notes of the read-outs that draw their latents on the CPU (see :func:`drawn_on_cpu`).
NORMALIZED_DRAWS = drawn_on_cpu(
    "z (one draw of q(z | x) per cell and sample, also for ``n_samples=1``: scvi-tools decodes"
    " a draw, not the mean; and a latent library, where a ZINBVAE learns one)"
) + (
    ' With ``weights="importance"`` the weights are those of these z (scvi-tools\''
    " ``get_importance_weights``, its marginal likelihoods' draws on the CPU too)."
)
DE_DRAWS = drawn_on_cpu(
    "z (``get_normalized_expression`` of each compared cell, thousands of draws per group;"
    " the cells drawn for them come from numpy's generator, which the seed sets on any"
    " device)"
) + (' With ``weights="importance"`` they are weighted by their importance, also on the CPU.')
PARAMETER_DRAWS = drawn_on_cpu(
    "z (one per cell and sample, also for ``n_samples=1``; and a latent library, where a"
    " ZINBVAE learns one)"
)
LIBRARY_DRAWS = drawn_on_cpu(
    "a latent library size (``give_mean=False`` of a ``use_observed_lib_size=False`` model;"
    " an observed library is read as it is)"
)
LATENT_DRAWS = drawn_on_cpu("z for ``give_mean=False`` (the means draw nothing)")
CORRELATION_DRAWS = drawn_on_cpu(
    "z (and a latent library, where a ZINBVAE learns one) and of the gamma variables of the"
    " denoised counts (each ``transform_batch`` by generators of its own)"
)

ELBO_DRAWS = drawn_on_cpu(
    "the guide's latents (one draw of q per cell: z, and a latent library where a ZINBVAE"
    " learns one, a CGMDVAE's w)"
)
IMPORTANCE_DRAWS = drawn_on_cpu(
    "the guide's latents (``n_mc_samples`` importance draws per cell of z, a latent library"
    " where a ZINBVAE learns one, a CGMDVAE's w; each pass of ``n_mc_samples_per_pass`` from"
    " generators of its own, so one seed with another ``n_mc_samples_per_pass`` draws other"
    " samples, an estimate as good)"
)


DRAWS_OVERALL = """``n_samples_overall`` returns an ``np.ndarray`` (``n_samples_overall`` x
genes): draws of randomly chosen cells, not one row per cell (scvi-tools' DataFrame of them
failed). ``indices`` is read as every read-out reads it: a boolean Series indexed by cell names
selects those cells, by name."""

ON_THE_CPU = """Results come on the CPU: a mean as a float (``np.float64``, with
``.item()`` as scvi-tools' 0-d tensor), the values per cell as a CPU tensor (scvi-tools returns
tensors on the module's device)."""

RECONSTRUCTION_SIGN = (
    """Against scvi-tools' note above, the value is each cell's negative
log-likelihood ``-log p(x | z)`` (as scvi-tools computes it too): lower is better. """
    + ON_THE_CPU
)

MARGINAL_MEAN = """``return_mean=True`` gives the mean over the cells, as ``np.float64``: scvi-tools
averaged the minibatches' means, so a short last minibatch weighed as much as a full one and
the result moved with ``batch_size``. Per cell (``return_mean=False``): a CPU tensor."""

AGGREGATED_ON_DEVICE = """The mixture lives on the model's device, as scvi-tools' does: give
``log_prob`` values there (``torch.as_tensor(z, device=model.device)``) and bring draws back
with ``.cpu()``. Each component's scale is the square root of the cell's q(z) variance
(scvi-tools 1.4 took the variance itself as the scale). An empty ``indices`` is refused, as
by every read-out (scvi-tools read it as every cell): pass ``None`` for every cell."""


OBSERVED_LIBRARY = """A model that reads each cell's observed library size (every CGMDVAE; a
ZINBVAE with ``use_observed_lib_size=True``, the default, or with a ``size_factor_key``) learns
no library size to give the mean of: ``give_mean=True`` (the default) is refused, the error
naming what to read instead, and ``give_mean=False`` returns the library the model reads,
cells x 1 (each cell's total counts, or its size factor)."""


ABUNDANCE_WRITTEN = """Returns None: the log densities are written to
``adata.obsm["da_log_probs"]``, a DataFrame of cells x samples (a column per value of
``sample_key``, named as a string, in order of appearance), of ``adata`` as given (default the
model's AnnData; a query model's: its query), not of the copy the model reads; a view
(``adata[mask]``) is refused. ``sample_key`` is required, and a cell without a sample (NaN)
is refused. A sample of more than ``num_cells_posterior`` cells takes that many at random,
seeded by ``scvi.settings.seed`` (0 while unset: two calls give one table). A sample of
fewer than 3 cells (or ``num_cells_posterior`` below 3) is warned of: its column reads one or
two cells' posteriors, not a sample's."""


COUNTS_ONLY = """For a count likelihood only (``"zinb"``, ``"nb"``): a CGMDVAE of likelihood
``"normal"`` or ``"bernoulli"`` refuses it (``NotImplementedError``), its decoded values being
the data themselves; ``translate(...).X`` or ``sample(...).layers["expected"]`` give its
expectation."""


def with_latent_draws(doc: str) -> str:
    """scvi-tools' ``get_latent_representation`` docstring with ``give_mean`` and
    ``mc_samples`` as they work: scvi-tools 1.4 says ``give_mean=False`` "returns an estimate
    of the mean using ``mc_samples`` Monte Carlo samples", and that ``mc_samples`` is not used
    with ``give_mean=True``, where its code returns one draw of q(z | x) per cell for
    ``give_mean=False`` (any ``mc_samples``) and reads ``mc_samples`` only with
    ``give_mean=True`` for a logistic-normal latent, which no deltavae model has."""
    said = (
        "If ``False``, returns an\n            estimate of the mean using ``mc_samples`` Monte "
        "Carlo samples."
    )
    mc = (
        "Number of Monte Carlo samples to use for the estimator for distributions with no\n"
        "            closed-form mean (e.g., the logistic normal distribution). Not used if "
        "``give_mean`` is\n            ``True`` or if ``return_dist`` is ``True``."
    )
    draws = "If ``False``, one draw\n            from q(z | x) per cell (not a mean)."
    unused = "Not used: q(z | x) is Gaussian, its mean needs no sampling (as in scvi-tools)."
    return doc.replace(said, draws, 1).replace(mc, unused, 1)
