"""An .h5ad file or zarr store put back as it was when writing results into it fails midway.

``write_to_adata`` into an AnnData opened ``backed="r+"`` (and
:func:`~deltavae.write_results_to_store`) write each result into the file in turn, an entry
replaced by deleting the old one first: an error at the second (a full disk, an interrupt)
left the file with the first result new, the second result gone (neither the old nor the new
one), and the AnnData in memory put back as it was. Neither HDF5 nor zarr has transactions, so
here an entry about to be replaced or removed is moved aside (a rename: no data copied) into
``uns/__deltavae_undo__`` instead, and on a failure the entries written since are removed, those
moved aside moved back and the attributes (obs' ``column-order``) put back; on success those
moved aside are deleted. A process killed midway leaves them there, in ``uns``, readable.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from pathlib import Path

from anndata.io import write_elem

_UNDO = "__deltavae_undo__"
_CURRENT: contextvars.ContextVar[_Journal | None] = contextvars.ContextVar(
    "deltavae_file_journal", default=None
)


def _attrs(node) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in node.attrs.items()}


def _is_group(node) -> bool:
    return hasattr(node, "keys") and not hasattr(node, "shape")


def _move(root, source: str, dest: str) -> None:
    """Rename ``source`` to ``dest`` under ``root``: h5py's link move; zarr's ``move`` is not
    implemented (zarr 3), so a local store's folder is renamed (its members are the folders
    in it, in zarr 2 and 3 alike)."""
    try:
        root.move(source, dest)
    except NotImplementedError:
        folder = Path(str(root.store.root)) / root.path
        (folder / source).rename(folder / dest)


class _Journal:
    """What a write changed in the file or store under ``root``, to undo it."""

    def __init__(self, root):
        self.root = root
        self.members = {"": list(root)}  # the root's, then each group's below it
        self.attrs = {"": _attrs(root)}
        for name in self.members[""]:
            if _is_group(root[name]):
                self.members[name], self.attrs[name] = list(root[name]), _attrs(root[name])
        self.moved: list[tuple[str, str, str]] = []  # (group, name, where it was moved)
        self.undo: str | None = None  # the group in uns holding what was moved aside
        self.made_uns = False

    def move_aside(self, group, name: str) -> None:
        if self.undo is None:
            if "uns" not in self.root:
                write_elem(self.root, "uns", {})
                self.made_uns = True
            taken = _UNDO in self.root["uns"]  # left by a process killed midway: kept
            undo = _UNDO + (f"_{uuid.uuid4().hex[:8]}" if taken else "")
            write_elem(self.root["uns"], undo, {})
            self.undo = f"uns/{undo}"
        where = f"{self.undo}/{len(self.moved)}"
        path = f"{group.name.strip('/')}/{name}"
        _move(self.root, path, where)
        self.moved.append((group.name.strip("/"), name, where))

    def _drop(self, path: str) -> None:
        if path in self.root:
            del self.root[path]

    def roll_back(self) -> None:
        for group, name, where in reversed(self.moved):
            self._drop(f"{group}/{name}".strip("/"))
            _move(self.root, where, f"{group}/{name}".strip("/"))
        if self.undo is not None:
            self._drop(self.undo)
        for group, before in self.members.items():
            if group and group not in self.root:
                continue
            node = self.root[group] if group else self.root
            for name in [n for n in node if n not in before]:
                del node[name]
        for group, before in self.attrs.items():
            if group and group not in self.root:
                continue
            node = self.root[group] if group else self.root
            if _attrs(node) != before:
                for key in [k for k in node.attrs if k not in before]:
                    del node.attrs[key]
                for key, value in before.items():
                    node.attrs[key] = value

    def commit(self) -> None:
        if self.undo is not None:
            self._drop(self.undo)
        if self.made_uns and not len(self.root["uns"]):
            del self.root["uns"]


def remove_entry(group, name: str) -> None:
    """Remove ``group[name]`` (an h5py or zarr group's entry) to write it anew or leave it out:
    within :func:`file_unchanged_on_failure`, moved aside to be put back on a failure."""
    journal = _CURRENT.get()
    if journal is None:
        del group[name]
    else:
        journal.move_aside(group, name)


@contextlib.contextmanager
def file_unchanged_on_failure(root):
    """Within it, a failure (any exception, an interrupt) leaves the .h5ad file or zarr store
    ``root`` (an h5py file or zarr group open for writing) with the entries and attributes it
    had, and raises; every entry the writes replace or remove goes through
    :func:`remove_entry`."""
    journal = _Journal(root)
    token = _CURRENT.set(journal)
    try:
        yield
    except BaseException:
        journal.roll_back()
        raise
    else:
        journal.commit()
    finally:
        _CURRENT.reset(token)
