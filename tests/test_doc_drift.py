"""What the documentation says of deltavae's own functions matches them: the keywords its
examples and inline code pass exist, and a method deltavae overrides does not show the
docstring of a base whose parameters it does not take."""

import ast
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import anndata
import lightning.pytorch as lightning
import scanpy as sc
import scvi
from scvi.dataloaders import DataSplitter
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import PyroTrainingPlan

import deltavae as dv
from deltavae._docs import building_block_classes

ROOT = Path(__file__).resolve().parents[1]
_SUBPACKAGES = ("model", "train", "pl", "datasets", "metrics", "module", "nn", "distributions")


def _public_callables() -> dict[str, list]:
    """Every name a user calls deltavae's code by (a class, a function, a method of a
    public class), to the callables of that name."""
    found: dict[str, list] = {}
    for sub in _SUBPACKAGES:
        module = getattr(dv, sub)
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj):
                continue
            found.setdefault(name, []).append(obj)
            for attr in dir(obj) if inspect.isclass(obj) else ():
                method = getattr(obj, attr, None)
                if not attr.startswith("_") and callable(method) and not inspect.isclass(method):
                    found.setdefault(attr, []).append(method)
    for name in ("read_lazy", "write_results_to_store", "set_threads", "default_threads"):
        found.setdefault(name, []).append(getattr(dv, name))
    return found


#: Where a callable's ``**kwargs`` go, whose keywords a call may pass too. The read-outs'
#: ``**kwargs`` and ``setup_anndata``'s take none (both refuse any keyword by name).
_PASSED_ON = {
    "train": [scvi.train.Trainer, lightning.Trainer, UnsupervisedTrainingMixin.train],
    "from_reference": [dv.model.NMFDeconv, dv.model.SpatialImputer],
    "from_zinbvae": [dv.model.CGMDVAE],
    "from_scvi_model": [dv.model.CGMDVAE.from_zinbvae, dv.model.CGMDVAE],
    "save": [BaseModelClass.save, anndata.AnnData.write_h5ad],
    "load": [BaseModelClass.load],
    "embedding": [sc.pl.embedding],
    "DeltaDataSplitter": [DataSplitter],
    "DeltaTrainingPlan": [PyroTrainingPlan],
}
#: Keywords the documentation passes on purpose to show that they are refused.
_REFUSED_ON_PURPOSE = {("CGMDVAE", "n_cluster"), ("get_elbo", "n_samples")}


def _keywords(name: str, callables: dict[str, list]) -> tuple[set[str], bool]:
    """The keywords ``name`` takes, and whether it takes any (scanpy's plots hand theirs on
    to matplotlib)."""
    names, anything = set(), False
    for func in callables[name]:
        names |= {
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.kind is not p.VAR_KEYWORD
        }
    for func in _PASSED_ON.get(name, []):
        for p in inspect.signature(func).parameters.values():
            names.add(p.name)
            anything |= p.kind is p.VAR_KEYWORD and name == "embedding"
    return names, anything


def _documented_code():
    """(where, code): every docstring example of src/deltavae, the inline code of its
    docstrings (````...````), and the ```python blocks and inline code (`...`) of README.md
    and docs/."""
    modules = [dv] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(dv.__path__, "deltavae.")
    ]
    for module in modules:
        for test in doctest.DocTestFinder().find(module):
            for example in test.examples:
                yield test.name, example.source
            for code in re.findall(r"``([^`]+)``", test.docstring or ""):
                yield test.name, code
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in (p for p in pages if p.is_file()):
        text = page.read_text()
        for code in re.findall(r"```python\n(.*?)```", text, re.S):
            yield page.name, code
        for code in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text):
            yield page.name, code


def _calls(code: str):
    """(name called, keywords given) of every call in ``code`` that parses as Python."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "attr", None) or getattr(func, "id", None)
            yield name, [k.arg for k in node.keywords if k.arg]


def test_documented_calls_pass_keywords_that_exist():
    """A keyword renamed or removed leaves examples and prose behind (``sample(label=...)``,
    ``write_to_adata(key_added=...)``, ``train(restore_best=...)``): every keyword that the
    docstring examples, the docstrings' inline code, README.md and docs/ pass to a function
    or method of deltavae's is one that a callable of that name takes, or hands on."""
    callables = _public_callables()
    wrong = set()
    for where, code in _documented_code():
        for name, keywords in _calls(code):
            if name not in callables:
                continue
            names, anything = _keywords(name, callables)
            for keyword in keywords:
                if not anything and keyword not in names:
                    if (name, keyword) not in _REFUSED_ON_PURPOSE:
                        wrong.add(f"{where}: {name}({keyword}=...)")
    assert not wrong, "\n".join(sorted(wrong))


def _overrides():
    """(name, method, base method) of every public method deltavae defines in the building
    blocks' classes over a method of torch, Lightning or Pyro."""
    for name, cls in building_block_classes():
        for attr, entry in vars(cls).items():
            func = getattr(entry, "__func__", entry)
            if attr.startswith("_") or not inspect.isfunction(func):
                continue
            base = next(
                (
                    k
                    for k in cls.__mro__[1:]
                    if not k.__module__.startswith("deltavae") and attr in vars(k)
                ),
                None,
            )
            if base is not None:
                yield f"{name}.{attr}", func, getattr(base, attr)


def _parameters(func) -> list[tuple[str, object]]:
    """Names and kinds of ``func``'s parameters (not their annotations or defaults)."""
    return [(p.name, p.kind) for p in inspect.signature(func).parameters.values()]


def test_overrides_of_another_signature_have_their_own_docstring():
    """An override without a docstring shows its base's: ``nn.GaussianHeads.forward``'s page
    read torch's "Define the computation performed at every call. Should be overridden by all
    subclasses", and ``module.ImputerLatentModule.load_state_dict``'s torch's text on
    ``strict`` and ``assign``, parameters it names ``*args``. Where its parameters differ from
    the base's, the override says what it takes and returns itself."""
    bare = []
    for name, func, base in _overrides():
        try:
            same = _parameters(func) == _parameters(base)
        except (TypeError, ValueError):  # a builtin base without a signature
            same = False
        if not same and not (func.__doc__ or "").strip():
            bare.append(name)
    assert not bare, f"override with another signature and its base's docstring: {bare}"
