"""Synthesis: rendered prompts -> teacher answers -> `RUN/dataset`, resumable, rate-limited, cost-capped."""

from distill.synthesis.generate import GenerateResult, generate, override_teacher

__all__ = ["GenerateResult", "generate", "override_teacher"]
