"""The ``dlnsim`` command line (typer): ``run``, ``compare``, ``sweep``, ``phase``, ``wide``,
``reproduce`` and ``rules``.

One module per command group (``_run``: run and compare; ``_sweep``; ``_phase``; ``_wide``;
``_reproduce``; ``_info``: rules), the options they share in ``_options``, and the process boundary
(output claiming, stall watchdog, exit codes) in ``_boundary``. Importing this package loads
neither matplotlib nor the reproductions; a command loads them when it draws or reproduces.
"""

from ._app import app, main

__all__ = ["app", "main"]
