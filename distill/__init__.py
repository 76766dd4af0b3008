"""distill: distillation-as-a-service for custom narrow models."""

from distill.quiet import quiet_third_party

__version__ = "0.1.0"

quiet_third_party()  # before any library under distill loads: only distill's own output reaches the terminal
