"""distill: distillation-as-a-service for custom narrow models."""

from distill.quiet import quiet_third_party
from distill.threads import set_thread_environment

__version__ = "0.1.0"

# Before any library under distill loads (torch reads its thread settings once, when it loads): only
# distill's own output reaches the terminal, and torch's threads sleep rather than spin when they wait.
quiet_third_party()
set_thread_environment()
