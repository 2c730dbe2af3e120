"""Model backends: the OpenAI-compatible HTTP client for GPU servers and the embedded CPU model."""

from .base import ChatBackend, ChatMessage, Completion, GenerationSettings
from .config import LocalModelConfig, ModelConfig, OpenAIModelConfig
from .errors import BackendError

__all__ = [
    "BackendError",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "GenerationSettings",
    "LocalModelConfig",
    "ModelConfig",
    "OpenAIModelConfig",
]
