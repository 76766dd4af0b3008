"""The teacher answers real inputs through the spec's later steps, with the synthesis engine.

Each real input is a record whose input step (and parsed variables) are given; the engine asks the
teacher only for the steps after it, through the same cache, rate limiter, retries and spending cap as
`distill generate`, so an interrupted relabelling resumes from the cache and pays nothing twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distill.rundir import RunDir
from distill.spec import LoadedSpec


def relabel(loaded: LoadedSpec, run: RunDir, given: dict[int, tuple[dict[str, Any], dict[str, Any]]], *,
            show_progress: bool = True) -> tuple[list[dict[str, Any]], float]:
    """The finished rows (ok or failed) of the records in `given`, and the dollars spent this time."""
    from distill.providers.factory import make_provider
    from distill.synthesis.cache import AnswerCache
    from distill.synthesis.cost import FREE, load_prices, price_for, require_price
    from distill.synthesis.engine import Backoff, Engine, RateLimiter
    from distill.synthesis.progress import GenerateProgress
    from distill.synthesis.generate import generation_plan
    from distill.synthesis.records import RecordWalker

    teacher = loaded.spec.teacher
    prices = load_prices(None)
    price = require_price(prices, teacher.provider, teacher.model, spec_file=loaded.path) \
        if teacher.max_cost_usd is not None else (price_for(prices, teacher.provider, teacher.model) or FREE)
    cache = AnswerCache(run.path / "generate" / "cache.sqlite")
    walker = RecordWalker(generation_plan(loaded), cache, provider_name=teacher.provider, model=teacher.model, given=given)
    provider = make_provider(teacher, spec_dir=loaded.directory)
    rows: list[dict[str, Any]] = []
    spent_before = cache.total_cost()
    with GenerateProgress(len(given), enabled=show_progress) as progress:
        def on_row(row: dict[str, Any], cached: bool) -> None:
            rows.append(row)
            progress.update(engine.tally)

        engine = Engine(walker, provider, cache, price=price, concurrency=teacher.concurrency,
                        limiter=RateLimiter(teacher.rate_limit.rpm, teacher.rate_limit.tpm), timeout_s=teacher.timeout_s,
                        max_retries=teacher.max_retries, spent_before=spent_before, max_cost_usd=teacher.max_cost_usd,
                        backoff=Backoff(), on_row=on_row, max_retry_wait_s=teacher.max_retry_wait_s,
                        say=progress.message)

        async def drive() -> None:
            try:
                await engine.run(sorted(given))
            finally:
                await provider.aclose()

        try:
            asyncio.run(drive())
        finally:
            cache.close()
    return sorted(rows, key=lambda r: r["id"]), engine.tally.spent_usd
