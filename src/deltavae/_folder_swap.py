"""A folder written whole beside the one it replaces, then swapped into place: the earlier
folder is renamed aside, the new one renamed in, and the earlier one removed only then (put
back if the rename fails). A failure or an interrupt at any step before leaves the earlier
folder as it was, byte for byte: ``model.save(overwrite=True)`` removed an AnnData saved
there and then failed writing the new one, leaving a model without its data, and
``deltavae demo`` moved its files in one at a time."""

from __future__ import annotations

import os
import secrets
import shutil


def _sibling(dest: str, what: str) -> str:
    """A name beside ``dest`` that nothing holds: ``.<name>.<what>-<random>``."""
    parent, name = os.path.split(dest)
    while True:
        path = os.path.join(parent, f".{name}.{what}-{secrets.token_hex(4)}")
        if not os.path.lexists(path):
            return path


def staging_folder(dest: str) -> str:
    """Make an empty folder beside ``dest`` (the same file system, so that it can be renamed
    there), with the permissions a new folder gets (``os.mkdir``'s, the umask applied);
    ``dest``'s parents are made."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    while True:
        path = _sibling(dest, "saving")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:  # taken since: another name
            continue


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (no bytes copied; the same file, which a program may hold open), or a
    copy where the file system has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def carry_over(old: str, new: str, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """Put into ``new`` every entry of ``old`` that ``new`` lacks and ``skip`` does not name:
    the files the new folder does not replace (another prefix's model, the user's notes).
    Files are hard-linked where the file system allows it (copied otherwise), sub-folders
    made anew with their files linked, symbolic links copied as links."""
    for entry in os.scandir(old):
        target = os.path.join(new, entry.name)
        if entry.name in skip or os.path.lexists(target):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, target)


def swap_in(new: str, dest: str) -> None:
    """Put the finished folder ``new`` at ``dest``: renamed there where nothing is; else the
    earlier folder is renamed aside, ``new`` renamed in (taking the earlier one's
    permissions), and the earlier one removed only then; it is put back if the rename
    fails, an interrupt included."""
    if not os.path.lexists(dest):
        os.rename(new, dest)
        return
    shutil.copymode(dest, new)
    aside = _sibling(dest, "replaced")
    os.rename(dest, aside)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def publish_folder(new: str, dest: str, skip: frozenset[str] | set[str] = frozenset()) -> None:
    """Replace the folder ``dest`` (a symbolic link: the folder it names) by ``new``, keeping
    the files of ``dest`` that ``new`` lacks and ``skip`` does not name (:func:`carry_over`),
    in one rename (:func:`swap_in`). On failure ``dest`` is as it was and ``new`` remains,
    for the caller to remove."""
    dest = os.path.realpath(dest)
    if os.path.isdir(dest):
        carry_over(dest, new, skip)
    swap_in(new, dest)
