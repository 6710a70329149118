"""The ``python -c`` commands of the CLI's advice, run as a shell user runs them: by a shell,
in a new process, with a ``python`` on PATH that has no anndata (as where deltavae was
installed by pipx or into a virtual environment not activated)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

#: An advised command: the interpreter it names, ``-c`` and the code in double quotes or in
#: shlex's single quotes.
COMMAND = re.compile(r"([^\s(]\S*) -c (\"(?:[^\"\\]|\\.)*\"|'[^']*'(?:\"'\"'[^']*')*)")

_NO_ANNDATA = "#!/bin/sh\necho \"$0: No module named 'anndata'\" >&2\nexit 1\n"


def run_advised(message: str, cwd=None) -> str:
    """Run the first command of ``message`` with ``/bin/sh``, PATH's ``python`` and ``python3``
    ones without anndata; fails where it fails. Returns the message after the command."""
    found = COMMAND.search(message)
    assert found, message
    with tempfile.TemporaryDirectory() as bare:
        for name in ("python", "python3"):
            path = os.path.join(bare, name)
            with open(path, "w") as script:
                script.write(_NO_ANNDATA)
            os.chmod(path, 0o755)
        env = {**os.environ, "PATH": f"{bare}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            found[0], shell=True, env=env, cwd=cwd, capture_output=True, text=True, check=False
        )
    assert done.returncode == 0, f"{found[0]}\n{done.stderr}"
    return message[found.end() :]
