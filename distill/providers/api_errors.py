"""How the hosted APIs' keys and errors become distill's: a ConfigError or a ProviderFault.

Shared by the `openai` and `anthropic` providers; both official SDKs have the same error hierarchy
(APIStatusError, APITimeoutError, APIConnectionError), so one translation serves both.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType

from distill.errors import ConfigError, Problem
from distill.keys import keys_in_use, redact_secrets
from distill.providers.protocol import ProviderFault


def read_api_key(env_var: str, provider: str) -> str:
    """The API key from the environment, or a ConfigError naming the variable (before any request)."""
    from distill.keys import check_api_key_env

    check_api_key_env(env_var, key="api_key_env")  # before the value is shown in any message
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise ConfigError(
            Problem(
                f"environment variable {env_var} is not set; the {provider} provider reads its API key from it",
                key="api_key_env",
                hint=f"export {env_var}=<your key>, or set api_key_env in the spec to the variable holding it",
            )
        )
    return key


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None if absent."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def status_retryable(status: int) -> bool:
    """The statuses the SDKs themselves would retry: timeouts, lock conflicts, rate limits, server errors."""
    return status in (408, 409, 429) or status >= 500


@contextmanager
def sdk_faults(provider: str, sdk: ModuleType, timeout: float) -> Iterator[None]:
    """Turn the SDK's exceptions (`sdk` is the `openai` or `anthropic` module) into ProviderFaults."""
    try:
        yield
    except sdk.APIStatusError as exc:
        retry_after = retry_after_seconds(exc.response.headers)
        # Error bodies sometimes echo the key that was sent: never store or show it.
        reason = redact_secrets(f"{provider}: HTTP {exc.status_code}: {exc.message}", extra=keys_in_use())
        raise ProviderFault(reason, retryable=status_retryable(exc.status_code), retry_after=retry_after) from exc
    except sdk.APITimeoutError as exc:  # before APIConnectionError, its base class
        raise ProviderFault(f"{provider}: no answer within the {timeout:g} s timeout", retryable=True) from exc
    except sdk.APIConnectionError as exc:
        raise ProviderFault(f"{provider}: connection failed: {exc}", retryable=True) from exc
    except json.JSONDecodeError as exc:
        # The SDKs hand a 200 response with a broken body straight to json.loads.
        raise ProviderFault(f"{provider}: the response body is not valid JSON ({exc})", retryable=True) from exc
