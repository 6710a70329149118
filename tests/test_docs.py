"""The documentation builds with warnings as errors and documents every public name."""

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import deltavae as dv

DOCS = Path(__file__).resolve().parents[1] / "docs"

_SECTION = re.compile(
    r"^(Parameters|Other Parameters)\n-{3,}\n(.*?)(?=^[^\s][^\n]*\n-{3,}\n|\Z)", re.M | re.S
)


def _documented(doc: str) -> set[str] | None:
    """Names of a numpydoc docstring's parameters ("a, b" entries give both), or None."""
    sections = _SECTION.findall(inspect.cleandoc(doc))
    if not sections:
        return None
    entries = (line.partition(" : ")[0] for _, text in sections for line in text.splitlines())
    return {n.strip().lstrip("*") for e in entries if e[:1].strip() for n in e.split(",")}


def _inherited(cls, attr: str) -> bool:
    entry = cls.__dict__[attr]
    return getattr(getattr(entry, "__func__", entry), "wraps_inherited", False)


def _own_methods(cls, prefix: str, overrides_too: bool = True):
    """The public methods deltavae defines on ``cls``, as ``(name, method, docstring)``.

    Without ``overrides_too``, methods that override one of a base class from outside
    deltavae (Lightning's hooks, torch's ``forward``, a Distribution's ``expand``) are left
    out: their parameters are the base class's, documented there."""
    for attr in dir(cls):
        if attr.startswith("_"):
            continue
        # The class that defines it: a model class wraps every public method it inherits
        # too (model/_backing.py), which leaves it its owner's.
        owner = next(k for k in cls.__mro__ if attr in k.__dict__ and not _inherited(k, attr))
        if not owner.__module__.startswith("deltavae"):
            continue  # scvi-tools' own methods keep scvi-tools' docstrings
        if isinstance(inspect.getattr_static(owner, attr), property):
            continue
        foreign = (k for k in cls.__mro__ if not k.__module__.startswith("deltavae"))
        if not overrides_too and any(attr in k.__dict__ for k in foreign):
            continue
        method = getattr(cls, attr)
        if callable(method) and not inspect.isclass(method):
            yield f"{prefix}.{attr}", method, inspect.getdoc(method)


#: The methods scvi-tools' training plans and read-outs (and Pyro) call on a module, with the
#: arguments of scvi-tools' ``BaseModuleClass`` protocol, documented there.
_MODULE_PROTOCOL = {"inference", "generative", "loss", "sample", "model", "guide", "on_load"}


def _public_callables():
    for name in dv.model.__all__:
        cls = getattr(dv.model, name)
        yield f"model.{name}", cls.__init__, inspect.getdoc(cls)
        yield from _own_methods(cls, f"model.{name}")
    for name in dv.module.__all__:
        cls = getattr(dv.module, name)
        yield f"module.{name}", cls.__init__, inspect.getdoc(cls)
        for entry in _own_methods(cls, f"module.{name}", overrides_too=False):
            if entry[0].rpartition(".")[2] not in _MODULE_PROTOCOL:
                yield entry
    # The building blocks' pages (class_own.rst) show the members deltavae defines.
    for module in (dv.train, dv.nn, dv.distributions):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__init__ is not BaseException.__init__:
                prefix = f"{module.__name__}.{name}"
                yield prefix, obj.__init__, inspect.getdoc(obj)
                yield from _own_methods(obj, prefix, overrides_too=False)
            elif inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj, obj.__doc__
    for module in (dv.pl, dv.metrics, dv.datasets):
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name), getattr(module, name).__doc__
    for func in (dv.read_lazy, dv.write_results_to_store, dv.set_threads, dv.default_threads):
        yield func.__qualname__, func, func.__doc__


def test_docstrings_name_every_parameter_and_no_other():
    """Every parameter of the public models, plots and metrics is documented, under its own
    name, and the docstrings document no parameter the function does not take."""
    wrong = []
    for name, func, doc in _public_callables():
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.name not in ("self", "cls")
            # For scvi-tools' load and load_query_data only; any other keyword is refused.
            and not (name.endswith(".setup_anndata") and p.kind is p.VAR_KEYWORD)
        ]
        doc = doc or ""  # no docstring: every parameter is undocumented, not a TypeError
        documented = _documented(doc)
        if documented is None:  # prose (a one-line method): its named parameters named
            variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            missing = [p.name for p in params if p.kind not in variadic and p.name not in doc]
            stale = []
        else:
            missing = [p.name for p in params if p.name not in documented]
            stale = sorted(documented - {p.name for p in params})
        if missing or stale:
            wrong.append(f"{name}: undocumented {missing}, not parameters {stale}")
    assert not wrong, "\n".join(wrong)


def test_public_properties_and_methods_have_docstrings():
    """The parameter check above skips properties (``CGMDVAE.cluster_names``, ``history``,
    ``Archetypes.merge_threshold``) and passes a method of no parameters whatever its
    docstring: every property and method deltavae defines on a public class has its own
    docstring (overrides of torch's and Lightning's hooks in module/nn/train keep theirs)."""
    bare = []
    for sub in ("model", "module", "train", "nn", "distributions"):
        for name in getattr(dv, sub).__all__:
            cls = getattr(getattr(dv, sub), name)
            if not inspect.isclass(cls):
                continue
            for attr in dir(cls):
                owners = [k for k in cls.__mro__ if attr in k.__dict__ and not _inherited(k, attr)]
                if attr.startswith("_") or not owners[0].__module__.startswith("deltavae"):
                    continue
                entry = inspect.getattr_static(owners[0], attr)
                entry = getattr(entry, "__func__", entry)  # a classmethod's or staticmethod's
                own = sub == "model" or not any(  # module/nn: torch's hooks keep torch's words
                    attr in k.__dict__
                    for k in cls.__mro__
                    if not k.__module__.startswith("deltavae")
                )
                if own and (isinstance(entry, property) or inspect.isfunction(entry)):
                    if not (entry.__doc__ or "").strip():
                        bare.append(f"{sub}.{name}.{attr}")
    assert not bare, f"no docstring: {bare}"


def test_property_docstrings_do_not_start_with_a_type():
    """napoleon reads a property docstring's first ``words: more`` as ``:type: words``: the
    page of ``CGMDVAE.label_names`` showed "Type: Known labels (empty when unsupervised), as
    strings" under a description cut to "the read-outs ...". The annotation gives the type."""
    napoleon = pytest.importorskip("sphinx.ext.napoleon", reason='pip install ".[docs]"')
    from sphinx.ext.napoleon.docstring import NumpyDocstring

    config = napoleon.Config(napoleon_use_rtype=False, napoleon_custom_sections=["Returns"])
    typed = []
    for sub in ("model", "module", "train", "nn", "distributions"):
        for name in getattr(dv, sub).__all__:
            cls = getattr(getattr(dv, sub), name)
            for attr in dir(cls) if inspect.isclass(cls) else ():
                owner = next((k for k in cls.__mro__ if attr in k.__dict__), None)
                entry = inspect.getattr_static(cls, attr, None)
                if attr.startswith("_") or not isinstance(entry, property):
                    continue
                if not owner.__module__.startswith("deltavae"):
                    continue
                doc = str(
                    NumpyDocstring(inspect.getdoc(entry) or "", config, what="property", name=attr)
                )
                typed += [
                    f"{sub}.{name}.{attr}: {line}"
                    for line in doc.splitlines()
                    if line.startswith(":type:")
                ]
    assert not typed, "\n".join(typed)


def _entries(doc: str) -> dict[str, str]:
    """Each documented parameter's text ("a, b" entries give both the same text)."""
    entries: dict[str, str] = {}
    names: list[str] = []
    for _, text in _SECTION.findall(inspect.cleandoc(doc)):
        for line in text.splitlines():
            if line[:1].strip():
                names = [n.strip().lstrip("*") for n in line.partition(" : ")[0].split(",")]
                entries.update(dict.fromkeys(names, ""))
            for name in names:
                entries[name] += line + "\n"
    return entries


# "Defaults to `x`", "default ``x``", "(default 45;": the default a parameter's text states.
# Not "scVI's default is ``False``", another tool's.
_STATED_DEFAULT = re.compile(
    r"(?<!'s )\b[Dd]efaults?(?: to| is|:)? +(?:``?(?P<code>[^`\n]+)``?|(?P<word>[^\s,;()]+))"
)
# "``"leiden"`` (default)", "``None`` (the default)": a literal the text names the default.
_NAMED_DEFAULT = re.compile(r"``(?P<code>[^`\n]+)``\s*\((?:the )?default\b")


def test_docstrings_state_the_real_defaults():
    """A default stated in a parameter's text is the signature's: a literal (``True``,
    ``0.25``, ``"uniform"``) equal to it, and no setting's name (scvi-tools' text for
    ``get_feature_correlation_matrix`` said ``scvi.settings.batch_size``; it is 64)."""
    wrong = []
    for name, func, doc in _public_callables():
        entries = _entries(doc or "")
        for p in inspect.signature(func).parameters.values():
            if p.name not in entries or p.default is p.empty or p.default is None:
                continue  # None: a default worked out at the call, said in words
            for match in _STATED_DEFAULT.finditer(entries[p.name]):
                stated = (match["code"] or match["word"]).rstrip(".")
                try:
                    value = ast.literal_eval(stated)
                except (ValueError, SyntaxError):
                    if match["code"] and isinstance(p.default, (bool, int, float, str)):
                        wrong.append(f"{name}({p.name}={p.default!r}): documented as {stated}")
                    continue  # words: "default all of them up to 2,048"
                if value != p.default:
                    wrong.append(f"{name}({p.name}={p.default!r}): documented as {stated}")
    assert not wrong, "\n".join(wrong)


def test_values_named_the_default_are_the_defaults():
    """A literal a parameter's text calls the default, ``"x"`` (the default) or ``None``
    (default), is the signature's, None included (the check above reads "default x" and
    leaves None defaults to words): a default changed in the signature, or a choice renamed,
    left its old value named the default."""
    wrong = []
    for name, func, doc in _public_callables():
        entries = _entries(doc or "")
        for p in inspect.signature(func).parameters.values():
            if p.name not in entries or p.default is p.empty:
                continue
            for match in _NAMED_DEFAULT.finditer(" ".join(entries[p.name].split())):
                try:
                    value = ast.literal_eval(match["code"])
                except (ValueError, SyntaxError):
                    continue  # code, not a value: ``condition_in_prior=True`` (the default)
                if value != p.default or type(value) is not type(p.default):
                    wrong.append(f"{name}({p.name}={p.default!r}): {match[0]}")
    assert not wrong, "\n".join(wrong)


_SUBPACKAGES = ("model", "train", "pl", "datasets", "metrics", "module", "nn", "distributions")


def test_api_page_lists_every_public_name_and_no_other():
    """docs/api/index.md's autosummary entries are the public API: every name of the
    subpackages' ``__all__`` and the top-level functions, each of which exists (the slow
    docs build checks the pages; this reads the list in a few milliseconds)."""
    if not (DOCS / "api" / "index.md").is_file():
        pytest.skip("docs/ is not next to the tests (installed package)")
    text = (DOCS / "api" / "index.md").read_text()
    listed = set(re.findall(r"^ {3}(\w+(?:\.\w+)?)$", text, re.M))
    public = {
        f"{module}.{name}"
        for module in _SUBPACKAGES
        for name in getattr(dv, module).__all__
        # not the constants (LIKELIHOODS), named in their functions' pages
        if callable(getattr(getattr(dv, module), name))
    }
    public |= {n for n in dv.__all__ if n != "__version__" and n not in _SUBPACKAGES}
    assert not public - listed, f"missing from docs/api/index.md: {sorted(public - listed)}"
    assert not listed - public, f"not public names: {sorted(listed - public)}"


# About 25 s on 2 CPU cores; `.ci/run` runs it in its second stage, `python -m pytest -m slow`.
@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "myst_nb", "sphinx_book_theme"):
        pytest.importorskip(
            module, reason=f'building the docs needs {module}: pip install ".[docs]"'
        )
    if not (DOCS / "conf.py").is_file():
        pytest.skip("docs/ is not next to the tests (installed package)")
    out = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    # Every public class and function has its own API page.
    for module in _SUBPACKAGES:
        for name in getattr(dv, module).__all__:
            # Not the constants (LIKELIHOODS), listed in their functions' pages; isupper()
            # also skipped ZINBVAE and CGMDVAE.
            if not callable(getattr(getattr(dv, module), name)):
                continue
            page = out / "api" / "generated" / f"deltavae.{module}.{name}.html"
            assert page.is_file(), f"deltavae.{module}.{name} is missing from docs/api/index.md"
    cgmdvae = (out / "api" / "generated" / "deltavae.model.CGMDVAE.html").read_text()
    for method in ("train", "predict_clusters", "sample", "translate", "load_query_data"):
        assert f'id="deltavae.model.CGMDVAE.{method}"' in cgmdvae
    # Methods inherited from scvi-tools' mixins are listed and documented on the model's page.
    zinbvae = (out / "api" / "generated" / "deltavae.model.ZINBVAE.html").read_text()
    for method in (
        "get_latent_representation",
        "get_normalized_expression",
        "differential_expression",
        "get_reconstruction_error",
    ):
        assert f'id="deltavae.model.ZINBVAE.{method}"' in zinbvae
        assert f'href="#deltavae.model.ZINBVAE.{method}"' in zinbvae
    # The building blocks' pages show what deltavae's own bases and mixins add too
    # (class_own.rst left out every inherited member, CGMDVAEModule.translate included).
    page = out / "api" / "generated" / "deltavae.module.CGMDVAEModule.html"
    for method in ("translate", "generate", "sample", "marginal_ll", "encode"):
        assert f'id="deltavae.module.CGMDVAEModule.{method}"' in page.read_text(), method
    plan = (out / "api" / "generated" / "deltavae.train.DeltaTrainingPlan.html").read_text()
    assert 'id="deltavae.train.DeltaTrainingPlan.stop_if_diverged"' in plan
    assert 'id="deltavae.train.DeltaTrainingPlan.on_train_start"' not in plan  # Lightning's
    # n_latent_w has its own text (napoleon gives "a, b" entries the same text twice).
    assert "n_latent_w</strong> (<em>int</em>) – Dimensions of w," in cgmdvae
    # The tutorials are rendered from their committed outputs, figures included.
    for notebook in sorted((DOCS.parent / "tutorials").glob("*.ipynb")):
        html = (out / "tutorials" / f"{notebook.stem}.html").read_text()
        assert html.count("<img") >= 3, notebook.name
    for page in ("zinbvae", "cgmdvae", "deconvolution"):
        assert (out / "math" / f"{page}.html").is_file()
    assert (out / "architecture.html").is_file()
    assert "d\\_term" in (out / "math" / "cgmdvae.html").read_text()


def test_docs_say_what_transform_batch_and_read_lazy_results_take():
    """A CGMDVAE of two condition keys takes transform_batch values of the first only (its
    message said so, its docs not); read_lazy's docs named write_results_to_store only where
    the read-only warning named reopening the file 'r+' only: both name both."""
    for method in ("get_normalized_expression", "differential_expression"):
        doc = " ".join(getattr(dv.model.CGMDVAE, method).__doc__.split())
        assert "takes values of the first key only (``condition_key[0]``" in doc, method
    lazy = " ".join(dv.read_lazy.__doc__.split())
    assert "write_results_to_store" in lazy and 'adata.file.open(filemode="r+")' in lazy


def test_installation_page_lists_each_extra_s_packages():
    """docs/installation.md's table of extras names every package pyproject.toml puts in
    each (its ``test`` row named four of seven: no ``nbformat``, ``dask[array]``,
    ``sphinx-book-theme``)."""
    import tomllib

    page, pyproject = DOCS / "installation.md", DOCS.parent / "pyproject.toml"
    if not (page.is_file() and pyproject.is_file()):
        pytest.skip("docs/ is not next to the tests (installed package)")
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", page.read_text(), re.M))
    assert set(rows) == set(extras)
    missing = [
        f"{extra}: {name}"
        for extra, requirements in extras.items()
        for name in (re.split(r"[<>=!~ ;]", r)[0] for r in requirements)
        if f"`{name}`" not in rows[extra]
    ]
    assert not missing, missing


def test_plots_return_type_names_the_figure_of_return_fig():
    """Every plot documents that ``return_fig=True`` returns the Figure (``embedding`` hands
    it to scanpy), and its page's "Return type" is read from the annotation: it said
    ``Axes | None`` beside that text."""
    import typing

    from matplotlib.figure import Figure

    wrong = []
    for name in dv.pl.__all__:
        func = getattr(dv.pl, name)
        if "return_fig" not in func.__doc__:
            continue  # cluster_entropy: a number per cell, not a plot
        hint = typing.get_type_hints(func)["return"]
        if Figure not in typing.get_args(hint):
            wrong.append(f"{name} -> {hint}")
    assert not wrong, wrong


#: Entries of several names whose text says the same of each (napoleon repeats it under each).
_SHARED_ENTRIES = {
    "output_dir_path, overwrite, **kwargs",  # scvi-tools' arguments; nothing is written
    "accelerator, device",
    "adata, indices, batch_size",  # as for get_proportions
    "spots, reference, labels_key, layer",  # as from_reference's
    "n_latent, n_hidden, n_layers, dropout_rate",  # network sizes
    "n_spots, n_genes",  # size of the count matrix
    "n_cells, n_genes",
    "n_cells, n_features",
}


def test_each_user_facing_parameter_has_its_own_entry():
    """napoleon gives an ``a, b, c`` entry's whole text to each name: the pages of
    ``spatial_proportions`` and ``cluster_probabilities`` described ``bw`` as "the image's
    opacity, the image in grey, and the view", ``perturbation_scatter``'s ``ylabel`` as "Axis
    labels and title", NMFDeconv's ``n_layers`` as "Units per hidden layer and hidden layers
    of the encoder" and ``train``'s ``validation_size`` as "Fractions of cells that train and
    that validate". The models', plots' and datasets' parameters have entries of their own,
    but for entries whose text says the same of each name."""
    shared = []
    for name, _, doc in _public_callables():
        if not name.startswith(("model.", "deltavae.pl.", "deltavae.datasets.")):
            continue  # the building blocks (module, nn, train, distributions) and metrics
        for _, text in _SECTION.findall(inspect.cleandoc(doc or "")):
            shared += [
                f"{name}: {line}"
                for line in text.splitlines()
                if line[:1].strip()
                and "," in line.partition(" : ")[0]
                and line.partition(" : ")[0] not in _SHARED_ENTRIES
            ]
    assert not shared, "\n".join(sorted(set(shared)))


def test_docstrings_list_the_parameters_in_the_signature_s_order():
    """napoleon lists a page's parameters in its docstring's order: ``CGMDVAE.
    get_latent_representation``'s page put ``representation`` and ``condition`` (keywords
    only, after ``dataloader``) third and fifth, where the signature has ``give_mean`` and
    ``mc_samples``; six plots listed ``return_fig`` before ``title`` and ``figsize``, and
    ``DeltaTrainingPlan`` its KL warm-up last. Each entry (an "a, b" entry at its first
    name) comes in the signature's order. scvi-tools' own docstrings (methods it defines,
    kept as they are) are not checked."""
    wrong = []
    for name, func, doc in _public_callables():
        if getattr(inspect.unwrap(func), "__module__", "").startswith("scvi"):
            continue
        order = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
        firsts = [
            line.partition(" : ")[0].split(",")[0].strip().lstrip("*")
            for _, text in _SECTION.findall(inspect.cleandoc(doc or ""))
            for line in text.splitlines()
            if line[:1].strip()
        ]
        listed = [n for n in firsts if n in order]
        if listed != sorted(listed, key=order.index):
            wrong.append(f"{name}: {listed} (signature {order})")
    assert not wrong, "\n".join(wrong)
