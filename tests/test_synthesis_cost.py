"""Price table, plan estimates and the `plan` command."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from distill.cli.generate import plan
from distill.errors import ConfigError
from distill.spec import load_spec
from distill.synthesis.cost import DEFAULT_PRICES, OUTPUT_FILL, Price, estimate_plan, load_prices, price_for, require_price

SPEC = """
name: cost-test
kind: text
records: 1000
variables:
  animal: {type: choice, items: [fox, bear]}
steps:
  - name: story
    user: "Write a story about a {{ animal }}, about forty characters."
teacher: {provider: openai, model: gpt-4o-mini-2024-07-18, params: {max_tokens: 500}}
"""


def test_shipped_table_and_dated_model_names():
    prices = load_prices(DEFAULT_PRICES)
    assert price_for(prices, "openai", "gpt-4o-mini-2024-07-18") == prices["openai"]["gpt-4o-mini"]
    assert price_for(prices, "offline", "anything").cost(10**6, 10**6) == 0
    assert price_for(prices, "openai", "no-such-model") is None
    assert Price(1.0, 2.0, 0.5).cost(1_000_000, 1_000_000, batch=True) == pytest.approx(1.5)


def test_user_price_file_overrides_and_bad_files_are_located(tmp_path, monkeypatch):
    mine = tmp_path / "prices.yaml"
    mine.write_text("openai: {house-model: {input: 1, output: 2}}\n")
    monkeypatch.setenv("DISTILL_PRICES", str(mine))
    assert price_for(load_prices(), "openai", "house-model") == Price(1.0, 2.0, 0.5)
    mine.write_text("openai: {house-model: {input: 1}}\n")
    with pytest.raises(ConfigError, match="openai.house-model"):
        load_prices(mine)
    with pytest.raises(ConfigError, match="--prices"):
        require_price({}, "openai", "house-model", spec_file=tmp_path / "spec.yaml")


def test_plan_estimates_tokens_and_batch_discount(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = estimate_plan(load_spec(tmp_path / "spec.yaml"), load_prices())
    assert result.requests == 1000
    assert result.output_tokens == int(500 * OUTPUT_FILL) * 1000
    assert 10_000 <= result.input_tokens <= 15_000  # ~50 characters / 4 per record
    assert result.batch_usd == pytest.approx(result.online_usd / 2)

    app = typer.Typer()
    app.command()(plan)
    out = CliRunner().invoke(app, [str(tmp_path / "spec.yaml"), "--records", "10"])
    assert out.exit_code == 0, out.output
    assert "requests: 10 " in out.output and "estimated cost batch" in out.output
