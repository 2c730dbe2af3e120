"""``python -m smcs.cli``: the ``smcs`` command line."""

from .main import main

raise SystemExit(main())
