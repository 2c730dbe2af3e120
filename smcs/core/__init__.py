"""The SMCS algorithm, sans I/O: policy, routing decision and the in-process router."""

from .decision import RouteDecision
from .policy import Policy
from .router import Router, model_accuracy

__all__ = ["Policy", "RouteDecision", "Router", "model_accuracy"]
