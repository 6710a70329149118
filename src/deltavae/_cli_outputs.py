"""What a ``deltavae fit`` run would replace besides ``--out`` (see :mod:`deltavae.cli`): the
PNGs of another run in its plots folder, refused before anything is read unless
``--overwrite`` (an existing ``--out`` is refused in :mod:`deltavae._cli_files`); and the
earlier output a finished run replaces, kept until the new one holds its name."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from deltavae._cli_files import InputError
from deltavae._folder_swap import swap_in

#: The PNG every ``deltavae fit`` with plots writes: a plots folder holding it holds a run's.
RUN_PLOT = "elbo_history.png"


def check_plots_folder(out: Path, plots: Path | None, overwrite: bool) -> bool:
    """Refuse a plots folder that holds another run's PNGs where ``out`` does not exist (its
    run wrote to another ``--out`` of the same stem, ``atlas.h5ad`` and ``atlas.zarr``, or
    its output was removed): they were replaced in silence, the two runs' PNGs mixed in one
    folder. A user's own files there are kept, as before. Returns whether the run replaces
    an earlier one's plots (``--overwrite``: those it does not write are removed, as an
    output replaced takes its plots with it).

    Examples
    --------
    >>> check_plots_folder(Path("no_such.h5ad"), Path("no_such_plots"), overwrite=False)
    False
    """
    if out.exists():  # refused before unless --overwrite, which replaces its plots
        return True
    if plots is None or not (plots / RUN_PLOT).is_file():
        return False
    if overwrite:
        return True
    raise InputError(
        f"the plots folder {str(plots)!r} holds another run's plots ({RUN_PLOT} ...), not "
        f"those of {str(out)!r}, which does not exist (a run whose --out had the same name "
        "with another suffix, or whose output was removed): pass --overwrite to replace them, "
        "--no-plots, or choose another --out."
    )


def replace_output(partial: Path, out: Path) -> None:
    """Put the finished output ``partial`` in place of ``out``. An .h5ad file replaces the
    earlier one in one rename; an earlier store (a folder) is swapped out whole
    (``_folder_swap.swap_in``: renamed aside, removed only once the new one holds
    its name, put back if that fails). The earlier output was removed first: an interrupt or
    a failure before the rename (a large store's removal takes a while) left neither output,
    the earlier one half removed and the new one discarded."""
    if not out.is_dir():
        os.replace(partial, out)
        return
    swap_in(str(partial), str(out))


#: What the system refuses that a user can act on: a full disk or quota, a read-only file
#: system, a path without permission. Any other OSError is a bug and keeps its traceback.
_DISK_ADVICE = {
    errno.ENOSPC: "free some space there, or pass another --out (and --save-model)",
    errno.EDQUOT: "free some space there, or pass another --out (and --save-model)",
    errno.EROFS: "the file system is read-only: pass another --out (and --save-model)",
    errno.EACCES: "check the permissions of that path, or pass another --out (and --save-model)",
    errno.EPERM: "check the permissions of that path, or pass another --out (and --save-model)",
}


def disk_error(err: OSError) -> str | None:
    """A one-line message for an OSError the user can act on (see ``_DISK_ADVICE``), else
    None: a full disk while writing the results printed a traceback."""
    advice = _DISK_ADVICE.get(err.errno)
    if advice is None:
        return None
    where = f" at {os.fspath(err.filename)!r}" if err.filename is not None else ""
    return f"{err.strerror or err}{where}: {advice}."
