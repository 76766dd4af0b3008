"""distill: distillation-as-a-service for custom narrow models."""

__version__ = "0.1.0"
