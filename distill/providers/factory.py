"""From the spec's `teacher` section to a provider: one `if` per provider kind.

SDK and torch imports happen inside each branch, so choosing `offline` or `replay` never loads them.
"""

from __future__ import annotations

from pathlib import Path

from distill.errors import ConfigError, Problem
from distill.providers.offline import STAND_IN_MODEL, OfflineProvider
from distill.providers.protocol import Provider
from distill.spec import RateLimit, Teacher


def make_provider(teacher: Teacher, *, spec_dir: Path) -> Provider:
    """The provider a spec's teacher names. Fails here (before any request) on a missing key, model
    directory or replay source."""
    if teacher.provider == "offline":
        return OfflineProvider(teacher.model)
    if teacher.provider == "replay":
        from distill.providers.replay import ReplayProvider

        assert teacher.replay is not None  # the spec schema requires it for provider: replay
        return ReplayProvider(teacher.replay, spec_dir=spec_dir, model=teacher.model)
    if teacher.provider == "hf":
        from distill.providers.hf_local import HFLocalProvider

        model_dir = Path(teacher.model).expanduser()
        model_dir = model_dir if model_dir.is_absolute() else spec_dir / model_dir
        if not model_dir.is_dir():
            raise ConfigError(Problem(f"local model directory {str(model_dir)!r} does not exist", key="teacher.model",
                                      hint="for provider: hf, model is a folder written by save_pretrained, relative to the spec"))
        return HFLocalProvider(model_dir, batch_size=teacher.concurrency)
    keyed = {"base_url": teacher.base_url, "timeout": teacher.timeout_s}
    if teacher.api_key_env:
        keyed["api_key_env"] = teacher.api_key_env
    if teacher.provider == "openai":
        from distill.providers.openai_api import OpenAIProvider

        return OpenAIProvider(teacher.model, **keyed)
    if teacher.provider == "anthropic":
        from distill.providers.anthropic_api import AnthropicProvider

        return AnthropicProvider(teacher.model, **keyed)
    raise AssertionError(f"unhandled provider kind {teacher.provider!r}")


def offline_teacher(teacher: Teacher) -> Teacher:
    """The same teacher settings with the offline stand-in as the model (`--teacher offline`)."""
    return teacher.model_copy(update={"provider": "offline", "model": STAND_IN_MODEL, "base_url": None,
                                      "api_key_env": None, "replay": None, "max_cost_usd": None,
                                      "rate_limit": RateLimit()})  # a local stand-in has no provider limits
