"""A released job's documents as the browser shows them: the model and dataset cards (Markdown written
from teacher output and the customer's spec, so untrusted) as sanitised HTML, and the eval report with
its charts inlined, because it is served in a CSP sandbox whose image requests carry no session cookie.

Cards go through markdown-it-py with raw HTML off (any tag in a card is shown as text), links limited
to http(s), mailto and in-page anchors, and images limited to the bundle's own figures, which the job
page serves beside the card; any other image becomes its alt text."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

SAFE_LINK = re.compile(r"^(https?:|mailto:|#)", re.I)
FIGURE = re.compile(r"^figures/([a-z]+-[a-z0-9_]+\.png)$")  # what release/bundle.py names a copied chart
CHART_SRC = re.compile(r"""src=(['"])(bpb_curve\.png|scores\.png|probes\.png)\1""")


def card_html(markdown: str, figure_url: str) -> Markup:
    """A card's Markdown as HTML that runs nothing and loads nothing from elsewhere; `figure_url` + NAME
    serves the bundle's figure NAME."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.validateLink = lambda url: bool(SAFE_LINK.match(url.strip()) or FIGURE.match(url.strip()))
    md.add_render_rule("image", _image(figure_url))
    md.add_render_rule("link_open", _link_open)
    return Markup(md.render(_front_matter_as_code(markdown)))


def _front_matter_as_code(markdown: str) -> str:
    """A model card opens with Hugging Face's YAML metadata between --- lines: shown as a code block, not
    as a rule and a paragraph."""
    found = re.match(r"---\n(.*?)\n---\n", markdown, re.S)
    if found is None:
        return markdown
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", found.group(1))), default=0))
    return f"{fence}yaml\n{found.group(1)}\n{fence}\n{markdown[found.end():]}"


def _image(figure_url: str):
    def render(self, tokens, idx, options, env) -> str:
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env)
        found = FIGURE.match(token.attrGet("src") or "")
        if found is None:
            return str(escape(alt))
        return str(Markup('<img src="{}" alt="{}" loading="lazy">').format(figure_url + found.group(1), alt))
    return render


def _link_open(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    if not str(token.attrGet("href") or "").startswith("#"):
        token.attrSet("rel", "nofollow noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def report_with_charts(report: Path) -> str:
    """The eval report's HTML with each chart it shows inlined as a data: URI (a chart it names but that is
    missing is left as it is)."""
    def inline(found: re.Match) -> str:
        chart = report.parent / found.group(2)
        if not chart.is_file():
            return found.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()}"'

    return CHART_SRC.sub(inline, report.read_text(encoding="utf-8"))
