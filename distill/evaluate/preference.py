"""What preference tuning bought: how often the student writes what the reviewers rejected, before and after.

The rejected kinds are the reason codes of the pairs made from rejections (and judge-flagged records).
The held-out prompts are the prompts of reviewed records that show those codes and gave no pair (a text
student has no prompt: it writes from the start token). The supervised student (`train/sft_model`) and the
tuned one (`train/model`) each write the same number of samples per prompt with the same seed; a sample
shows the rejected behaviour when the review's cheap chain finds one of those codes in it, or, where the
spec's review has an LLM judge, the judge calls it unsafe. Each rate has a Wilson 95% interval and their
difference Newcombe's (method 10); the fall is shown when that interval excludes 0. The held-out bits per
byte of both models say what the tuning cost; `training.preference.max_bpb_increase` is the margin.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distill.train.bpb import bits_per_byte
from distill.evaluate.completions import complete
from distill.review.agreement import Z95, wilson
from distill.review.chain import Chain, task_for_length
from distill.review.decisions import review_policy
from distill.review.pairs import _judge_passes, read_pairs
from distill.review.stage import spec_review_settings
from distill.review.store import build_view, has_reason
from distill.train.data import render_prompt


def rejected_codes(run_dir: Path) -> list[str]:
    """The reason codes of the texts the reviewers rejected (pairs from rejections and the judge)."""
    return sorted({code for line in read_pairs(run_dir) if line["source"] != "edit" for code in line["reasons"]})


def heldout_prompts(run_dir: Path, codes: list[str], kind: str, count: int) -> list[str]:
    """Prompts of the rejected kinds that gave no pair (empty prompts for a text student)."""
    if kind == "text":
        return [""] * count
    used = {line["record"] for line in read_pairs(run_dir)}
    found = [r.prompt for r in build_view(Path(run_dir))
             if r.id not in used and r.prompt and any(has_reason(r, c) for c in codes)]
    return list(dict.fromkeys(found))[:count]


def newcombe(hits_a: int, n_a: int, hits_b: int, n_b: int) -> tuple[float, float]:
    """95% interval of rate a - rate b from the two Wilson intervals (Newcombe 1998, method 10)."""
    pa, pb = hits_a / n_a, hits_b / n_b
    (la, ua), (lb, ub) = wilson(hits_a, n_a), wilson(hits_b, n_b)
    d = pa - pb
    return d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)


def _rate(model_dir: Path, prompts: list[str], codes: list[str], chain: Chain, judge: tuple, settings, kind: str,
          context_length: int, heldout: list[dict[str, Any]]) -> dict[str, Any]:
    from distill.evaluate.stage import load_student_from

    model, tokenizer = load_student_from(model_dir)
    rendered = [render_prompt(tokenizer, p) if kind == "instruct" else "" for p in prompts]
    samples = complete(model, tokenizer, rendered, samples=settings.samples_per_prompt, max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, batch_size=settings.batch_size, seed=29, context_length=context_length)
    flat = [(text, prompt) for prompt, texts in zip(prompts, samples) for text in texts]
    by_chain = [any(c == a or c.startswith(a + ".") for c in chain.check(text, prompt).codes for a in codes)
                if text.strip() else False for text, prompt in flat]
    safe = _judge_passes(*judge, [(t, p) for t, p in flat])
    hits = [a or not b for a, b in zip(by_chain, safe)]
    bpb = bits_per_byte(model, tokenizer, [e["text"] for e in heldout], context_length=context_length,
                        batch_size=settings.batch_size,
                        prompts=[render_prompt(tokenizer, e["prompt"]) for e in heldout] if kind == "instruct" else None)
    low, high = wilson(sum(hits), len(hits))
    example = next((t for t, h in zip([t for t, _ in flat], hits) if h), None)
    return {"samples": len(hits), "hits": sum(hits), "rate": sum(hits) / len(hits) if hits else None,
            "interval": [low, high], "bpb": bpb["bits_per_byte"], "example": example[:400] if example else None}


def preference_eval(run_dir: Path, loaded, settings, heldout: list[dict[str, Any]], trained: dict[str, Any]) -> dict[str, Any]:
    """The rejected behaviour's rate before and after preference tuning, with intervals, and the bpb cost."""
    spec = loaded.spec
    codes = rejected_codes(run_dir)
    tuning = spec.training.preference
    counts = {"prompts": tuning.eval_prompts if tuning else settings.prompts,
              "samples_per_prompt": tuning.eval_samples if tuning else settings.samples_per_prompt}
    settings = settings.model_copy(update=counts)
    prompts = heldout_prompts(run_dir, codes, spec.kind, settings.prompts)
    if not codes or not prompts:
        return {"measured": False, "why": "no rejected kinds with held-out prompts (no pair came from a rejection)",
                "codes": codes}
    policy = review_policy(run_dir)
    review = spec_review_settings(loaded)
    chain = Chain(policy, task_for_length(policy, review.get("longest_words")))
    judge = (review, policy)
    measured = {name: _rate(Path(run_dir) / "train" / folder, prompts, codes, chain, judge, settings, spec.kind,
                            spec.student.context_length, heldout)
                for name, folder in (("before", "sft_model"), ("after", "model"))}
    before, after = measured["before"], measured["after"]
    low, high = newcombe(before["hits"], before["samples"], after["hits"], after["samples"])
    margin = tuning.max_bpb_increase if tuning else None
    return {"measured": True, "codes": codes, "prompts": len(prompts), "judge": bool(review["judge"]),
            "method": trained.get("method"), "pairs": trained.get("pairs"), **measured,
            "fall": before["rate"] - after["rate"], "fall_interval": [low, high], "fell": low > 0,
            "rose": high < 0, "bpb_increase": after["bpb"] - before["bpb"], "max_bpb_increase": margin,
            "bpb_within_margin": margin is None or after["bpb"] - before["bpb"] <= margin,
            "require_improvement": bool(spec.training.preference and spec.training.preference.require_improvement),
            "no_regression": policy.preference_no_regression,
            "interval_method": f"Wilson {Z95:.2f}-sigma per rate; Newcombe (method 10) for the difference"}
