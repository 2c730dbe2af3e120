"""pytest wiring shared by every test module."""

from __future__ import annotations

from smcs.kernels import configure_threads

configure_threads()  # the threading every smcs program uses (Router, serve, the CLI), before any kernel runs
