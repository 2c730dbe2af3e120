"""The runtime (layer 6): drives the step machines of ``smcs.core`` and ``smcs.strategies`` against real
models and embedders, in-process (``smcs.runtime.host``) with the calls of ``smcs.runtime.dispatch``."""
