"""``python -m deltavae``: the ``deltavae`` command line where the console script is not on
``PATH`` (a kernel's environment, ``python -m pip install --user``)."""

from deltavae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
