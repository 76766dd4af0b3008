"""The model card (README.md), the dataset card and the LICENSE, rendered from templates/release/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from distill.paths import data_path
from distill.release.sources import ReleaseInputs

MODEL_CARD = "model_card.md.j2"
DATASET_CARD = "dataset_card.md.j2"
LICENSE_NOTICE = "license_notice.txt.j2"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates") / "release")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def card_context(inputs: ReleaseInputs, *, gate: dict[str, Any], figures: list[str],
                 formats: dict[str, Any] | None = None) -> dict[str, Any]:
    evaluation = inputs.evaluation

    def interval(metric: str) -> str:
        low, high = evaluation.intervals.get(metric, (None, None))
        return f"{low:.3f} to {high:.3f}" if low is not None and high is not None else ""

    return {
        "name": inputs.name,
        "version": inputs.release.version,
        "bundle_dir": inputs.bundle_name,
        "description": inputs.description,
        "kind": inputs.kind,
        "license": inputs.release.license,
        "spec_sha256": inputs.spec_sha256,
        "dataset": inputs.dataset,
        "review": inputs.review,
        "evaluation": evaluation,
        "interval": interval,
        "figures": figures,
        "gate": gate,
        "formats": formats or {},  # format -> {files, parity}: the exported forms and their measured parity
        "distill_version": inputs.distill_version,
        "plan": inputs.training.get("plan"),
        "method": inputs.training.get("method"),  # training.distillation: text only or the teacher's distribution
    }


def render_model_card(context: dict[str, Any]) -> str:
    return _environment().get_template(MODEL_CARD).render(context)


def render_dataset_card(context: dict[str, Any]) -> str:
    return _environment().get_template(DATASET_CARD).render(context)


def license_text(context: dict[str, Any]) -> str:
    """The full license text where distill ships it (templates/release/licenses/<id>.txt), else a notice."""
    full = data_path("templates") / "release" / "licenses" / f"{context['license'].lower()}.txt"
    if full.is_file():
        return full.read_text(encoding="utf-8")
    return _environment().get_template(LICENSE_NOTICE).render(context)


def template_files() -> list[Path]:
    """The card templates and license texts: their hashes go into the lineage."""
    return sorted((data_path("templates") / "release").rglob("*.*"))
