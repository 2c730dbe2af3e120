"""The SMCS algorithm, sans I/O: policy, routing decision and the in-process router."""

from .decision import RouteDecision
from .policy import Policy
from .router import RouteCall, Router, by_accuracy, model_accuracy

__all__ = ["Policy", "RouteCall", "RouteDecision", "Router", "by_accuracy", "model_accuracy"]
