"""A folder written whole beside the one it replaces, then swapped into place: the earlier
folder is renamed aside, the new one renamed in, and the earlier one removed only then (put
back if the rename fails). A failure or an interrupt at any step before leaves the earlier
folder as it was, byte for byte: ``model.save(overwrite=True)`` removed an AnnData saved
there and then failed writing the new one, leaving a model without its data, and
``deltavae demo`` moved its files in one at a time."""

from __future__ import annotations

import glob
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


def interrupted_swap(dest: str) -> str:
    """Where a swap into ``dest`` that was killed part-way (between :func:`swap_in`'s two
    renames, or while the new folder was written) left the folders, as advice for a message
    saying nothing is at ``dest``; ``""`` when nothing is left beside it."""
    parent, name = os.path.split(os.path.normpath(dest))
    pattern = os.path.join(glob.escape(parent), glob.escape(f".{name}."))
    earlier = sorted(p for p in glob.glob(pattern + "replaced-*") if os.path.isdir(p))
    unfinished = sorted(p for p in glob.glob(pattern + "saving-*") if os.path.isdir(p))
    if not earlier and not unfinished:
        return ""
    found = "; ".join(
        [f"the earlier folder is at {p!r}" for p in earlier]
        + [f"a new one, perhaps unfinished, at {p!r}" for p in unfinished]
    )
    return (
        f" A save to {dest!r} was interrupted before it finished: {found}. Rename the one you "
        f"want to {dest!r} (the earlier one is complete) and load it again."
    )
