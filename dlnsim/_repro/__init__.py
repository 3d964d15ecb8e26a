"""The built-in reproductions of the source papers' figures, one module per paper or figure group,
registered with :func:`dlnsim.experiments.register` when :data:`dlnsim.experiments.EXPERIMENTS` is
first used. Nothing here is public API: run them with ``dlnsim reproduce`` or
:func:`dlnsim.experiments.reproduce`."""
