"""Shared by the tests of hyperparameters as array leaves: a counter of XLA compilations."""

import jax


class CompileCounter:
    """Counts XLA backend compilations while active (a ``with`` block)."""

    def __init__(self):
        self.count = 0

    def _listener(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
