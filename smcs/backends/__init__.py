"""Model backends: the OpenAI-compatible HTTP client for GPU servers and the embedded CPU model."""

from .base import ChatBackend, ChatMessage, Completion, GenerationSettings
from .config import LocalModelConfig, ModelConfig, OpenAIModelConfig
from .errors import BackendError
from .factory import make_backend
from .openai import OpenAIBackend

__all__ = [
    "BackendError",
    "ChatBackend",
    "ChatMessage",
    "Completion",
    "GenerationSettings",
    "LocalModelConfig",
    "ModelConfig",
    "OpenAIBackend",
    "OpenAIModelConfig",
    "make_backend",
]
