"""What a run costs: the price table, and `distill plan`'s estimate before anything is spent.

Prices are data (`prices.yaml` next to this module, or the user's copy via `--prices` / $DISTILL_PRICES),
in USD per million tokens. Local providers (hf, replay, offline) cost nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from distill.errors import ConfigError, Problem
from distill.located_yaml import read_text_file
from distill.prompts import PromptRenderer, placeholder_output, step_json_schema
from distill.providers.logprobs import LOGPROB_PROVIDERS
from distill.spec import LoadedSpec

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
FREE_PROVIDERS = ("hf", "replay", "offline")
CHARS_PER_TOKEN = 4  # a tokenizer-free estimate; real English text with GPT/Claude tokenizers is ~4 chars/token
OUTPUT_FILL = 0.6  # estimated output = max_tokens x this: teachers rarely write up to the limit
PLAN_SAMPLE = 200  # records rendered to estimate prompt length; the rest are extrapolated


@dataclass(frozen=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    batch_discount: float = 0.5  # batch price = price x this
    logprobs: float = 0.0  # USD per million output tokens that carry top-k log-probs, where an API bills them

    def cost(self, input_tokens: int, output_tokens: int, *, batch: bool = False, logprob_tokens: int = 0) -> float:
        usd = (input_tokens * self.input + output_tokens * self.output + logprob_tokens * self.logprobs) / 1_000_000
        return usd * self.batch_discount if batch else usd


FREE = Price(0.0, 0.0, 1.0)


def load_prices(path: str | Path | None = None) -> dict[str, dict[str, Price]]:
    """provider -> model -> Price, from `path`, else $DISTILL_PRICES, else the shipped table."""
    path = Path(path or os.environ.get("DISTILL_PRICES") or DEFAULT_PRICES)
    text = read_text_file(path, what="price table")  # $DISTILL_PRICES may name a device or a FIFO too
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(f"price table is not valid YAML: {exc}", file=path)) from None
    raw = raw or {}
    if not isinstance(raw, dict) or not all(isinstance(models or {}, dict) for models in raw.values()):
        raise ConfigError(Problem("a price table maps provider -> model -> {input, output}", file=path))
    table: dict[str, dict[str, Price]] = {}
    for provider, models in raw.items():
        table[provider] = {}
        for model, entry in (models or {}).items():
            try:
                table[provider][model] = Price(float(entry["input"]), float(entry["output"]),
                                               float(entry.get("batch_discount", 0.5)), float(entry.get("logprobs", 0.0)))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(Problem("each model needs numeric 'input' and 'output' (USD per million tokens)",
                                          file=path, key=f"{provider}.{model}")) from None
    return table


def price_for(prices: dict[str, dict[str, Price]], provider: str, model: str) -> Price | None:
    """The model's price; dated snapshots (`gpt-4o-2024-08-06`) fall back to their base name. None: unknown."""
    if provider in FREE_PROVIDERS:
        return FREE
    models = prices.get(provider, {})
    if model in models:
        return models[model]
    matches = [name for name in models if model.startswith(name + "-")]
    return models[max(matches, key=len)] if matches else None


def require_price(prices: dict[str, dict[str, Price]], provider: str, model: str, *, spec_file: Path) -> Price:
    """A spending cap needs a price: fail before spending if the table does not know the model."""
    price = price_for(prices, provider, model)
    if price is None:
        raise ConfigError(Problem(f"no price for {provider} model {model!r}, so the spending cap cannot be enforced",
                                  file=spec_file, key="teacher.max_cost_usd",
                                  hint=f"add `{provider}: {{{model}: {{input: ..., output: ...}}}}` to a copy of "
                                       f"{DEFAULT_PRICES} and pass it with --prices"))
    return price


@dataclass(frozen=True)
class Plan:
    records: int
    requests: int
    input_tokens: int
    output_tokens: int
    online_usd: float | None  # None: the model has no price in the table
    batch_usd: float | None
    provider: str
    model: str
    logprob_top_k: int = 0  # training.distillation asks the target step for this many alternatives per token
    logprob_tokens: int = 0  # output tokens that carry them
    logprob_usd: float | None = 0.0  # what the API bills for them (prices.yaml `logprobs`), included above

    def summary(self) -> str:
        def usd(value: float | None) -> str:
            return "unknown (model not in the price table)" if value is None else f"${value:,.2f}"

        return "\n".join([
            f"teacher: {self.provider} / {self.model}",
            f"records: {self.records:,}   requests: {self.requests:,} (one per step per record, before retries)",
            f"estimated tokens: {self.input_tokens:,} in, {self.output_tokens:,} out "
            f"(prompts at {CHARS_PER_TOKEN} chars/token; outputs at {OUTPUT_FILL:.0%} of max_tokens)",
            f"estimated cost online: {usd(self.online_usd)}",
            f"estimated cost batch:  {usd(self.batch_usd)}",
            *([f"teacher log-probs: top-{self.logprob_top_k} on ~{self.logprob_tokens:,} output tokens "
               f"(training.distillation): {usd(self.logprob_usd)} of the cost above, ~"
               f"{self.logprob_tokens * (12 * self.logprob_top_k + 8) / 1e6:,.1f} MB in the cache and dataset"]
              if self.logprob_top_k else []),
        ])


def estimate_plan(loaded: LoadedSpec, prices: dict[str, dict[str, Price]], *, records: int | None = None) -> Plan:
    """Estimate requests, tokens and cost by rendering a sample of records with placeholder outputs."""
    spec, teacher = loaded.spec, loaded.spec.teacher
    records = records or spec.records
    renderer = PromptRenderer(loaded)
    schemas = [step_json_schema(loaded, i) for i in range(len(spec.steps))]
    sample = min(records, PLAN_SAMPLE)
    input_tokens = output_tokens = target_tokens = 0
    for index in range(sample):
        variables = {**renderer.sampler.sample(index), **({"turn": 1, "history": []} if spec.chat else {})}
        outputs: dict = {}
        for k, step in enumerate(spec.steps):
            rendered = renderer.render_step(k, index, variables, outputs)
            # Later steps include earlier outputs; the placeholder is short, so add the estimated output.
            earlier = sum(_max_tokens(loaded, j) for j in range(k)) * OUTPUT_FILL
            input_tokens += sum(len(m.content) for m in rendered.messages) // CHARS_PER_TOKEN + int(earlier)
            output_tokens += int(_max_tokens(loaded, k) * OUTPUT_FILL)
            target_tokens += int(_max_tokens(loaded, k) * OUTPUT_FILL) if step.name == spec.target_step else 0
            outputs[step.name] = placeholder_output(step, schemas[k])
    scale = records / sample if sample else 0
    input_tokens, output_tokens = int(input_tokens * scale), int(output_tokens * scale)
    distillation = spec.training.distillation
    top_k = distillation.top_k if distillation is not None and teacher.provider in LOGPROB_PROVIDERS else 0
    logprob_tokens = int(target_tokens * scale) if top_k else 0
    price = price_for(prices, teacher.provider, teacher.model)
    logprob_usd = None if price is None else logprob_tokens * price.logprobs / 1_000_000
    online = None if price is None else price.cost(input_tokens, output_tokens) + logprob_usd
    batch = None if price is None else price.cost(input_tokens, output_tokens, batch=True) + logprob_usd * price.batch_discount
    return Plan(records, records * len(spec.steps), input_tokens, output_tokens, online, batch,
                teacher.provider, teacher.model, top_k, logprob_tokens, logprob_usd)


def _max_tokens(loaded: LoadedSpec, step_index: int) -> int:
    step = loaded.spec.steps[step_index]
    return int(step.params.get("max_tokens", loaded.spec.teacher.params.max_tokens))
