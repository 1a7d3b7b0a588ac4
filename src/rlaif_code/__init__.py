"""rlaif-code: RLAIF for API-calling code generation with lightweight language models."""

__version__ = "0.1.0"
