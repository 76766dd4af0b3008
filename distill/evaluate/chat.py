"""Evaluating a student on held-out conversations (kind: chat), without a server.

- bits per byte on the assistant's turns only, overall and per assistant move (1st, 2nd, ...);
- tool calls: on each held-out conversation's first user turn, the student's first move against the teacher's
  (does it call when the teacher called, the right tool, with arguments that are JSON and match the tool's
  schema, equal to the teacher's; and does it stay quiet when the teacher replied);
- replies: how often the student's reply, where the teacher replied after a tool result, is valid JSON of
  the reply schema (unconstrained here; `distill serve-model` constrains it under `response_format`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema

from distill.conversation import CALL, parse_transcript, tool_call_problem
from distill.train.chat_template import assistant_bits_per_byte, render


def evaluate_conversations(model, tokenizer, examples: list[dict[str, Any]], *, reply_schema: dict[str, Any] | None,
                           prompts: int, max_new_tokens: int, context_length: int, batch_size: int) -> tuple[dict, dict, list]:
    """(bits per byte, metrics, samples) of the student on held-out conversation records."""
    from distill.evaluate.completions import complete

    transcripts = [e["text"] for e in examples]
    scored = assistant_bits_per_byte(model, tokenizer, transcripts, context_length=context_length, batch_size=batch_size)
    bpb = {"validation": {"bits_per_byte": scored["bits_per_byte"], "perplexity": math.exp(scored["nats_per_token"]),
                          "tokens": scored["tokens"], "bytes": scored["bytes"]}}
    firsts, replies = [], []
    for transcript in transcripts[:prompts]:
        messages, tools = parse_transcript(transcript)
        user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        firsts.append((render(tokenizer, messages[:user + 1], tools, generation_prompt=True), messages[user + 1], tools))
        after_tool = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not m.get("tool_calls")
                      and i and messages[i - 1]["role"] == "tool"]
        if after_tool:
            replies.append(render(tokenizer, messages[:after_tool[0]], tools, generation_prompt=True))
    texts = [p for p, _, _ in firsts] + replies
    outputs = [c[0] for c in complete(model, tokenizer, texts, samples=1, max_new_tokens=max_new_tokens, temperature=0,
                                      batch_size=batch_size, context_length=context_length)]
    metrics = {"assistant_bpb_by_move": {str(k): v for k, v in scored["by_move"].items()},
               "tool_calls": tool_call_accuracy(firsts, outputs[:len(firsts)]),
               "replies": reply_validity(outputs[len(firsts):], reply_schema)}
    samples = [{"beginning": p[-300:], "completion": o, "teacher": json.dumps(t, ensure_ascii=False)}
               for (p, t, _), o in list(zip(firsts, outputs))[:8]]
    return bpb, metrics, samples


def tool_call_accuracy(firsts: list[tuple[str, dict, list]], outputs: list[str]) -> dict[str, Any]:
    needed = called = right = valid = equal = quiet = replied = 0
    for (_, teacher, tools), output in zip(firsts, outputs):
        schemas = {t["function"]["name"]: t["function"].get("parameters", {}) for t in tools}
        name, arguments = read_call(output)
        if not teacher.get("tool_calls"):
            replied += 1
            quiet += name is None
            continue
        needed += 1
        wanted = teacher["tool_calls"][0]["function"]
        called += name is not None
        right += name == wanted["name"]
        ok = name in schemas and tool_call_problem(arguments, schemas[name]) is None
        valid += ok and name == wanted["name"]
        equal += ok and json.loads(arguments) == json.loads(wanted["arguments"])
    share = (lambda n, of: round(n / of, 4) if of else None)
    return {"first_turns_needing_a_call": needed, "called": share(called, needed), "right_tool": share(right, needed),
            "valid_arguments": share(valid, needed), "arguments_equal_teacher": share(equal, needed),
            "first_turns_needing_a_reply": replied, "replied_without_a_call": share(quiet, replied)}


def reply_validity(outputs: list[str], schema: dict[str, Any] | None) -> dict[str, Any]:
    valid = 0
    for output in outputs:
        try:
            value = json.loads(output[1:] if output.startswith("\n") else output)
        except json.JSONDecodeError:
            continue
        valid += schema is None or jsonschema.Draft202012Validator(schema).is_valid(value)
    return {"replies": len(outputs), "schema_valid": round(valid / len(outputs), 4) if outputs else None}


def read_call(output: str) -> tuple[str | None, str]:
    """(tool name, arguments text) of a student's move, or (None, "") when it is a reply."""
    if not output.startswith(CALL):
        return None, ""
    name, _, arguments = output[len(CALL):].partition("\n")
    return name.strip(), arguments


def evaluate_chat_student(model, tokenizer, examples: list[dict[str, Any]], out_dir, settings, task, *, weights: str,
                          heldout_label: str, source: str, metrics_path=None):
    """`distill.evaluate.stage.evaluate` for a chat student: eval.json and the report, judge grades left out."""
    import dataclasses
    import time
    from pathlib import Path

    from distill.evaluate.report import write_eval_report
    from distill.evaluate.result import EVAL_JSON, EvalResult
    from distill.evaluate.stage import _probe

    bpb, metrics, samples = evaluate_conversations(
        model, tokenizer, examples, reply_schema=task.target_schema, prompts=settings.prompts,
        max_new_tokens=settings.max_new_tokens, context_length=task.context_length, batch_size=settings.batch_size)
    probes = _probe(model, tokenizer, dataclasses.replace(task, kind="instruct"), settings)
    result = EvalResult(run_name=task.name, run=source, kind="chat", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        settings=settings.model_dump(mode="json"), heldout=heldout_label, heldout_examples=len(examples),
                        bpb=bpb, grading=None, metrics=metrics, probes=probes, weights_sha256=weights, samples=samples,
                        grading_skipped="conversations are not graded by the judge yet")
    result.to_json(Path(out_dir) / EVAL_JSON)
    write_eval_report(result, Path(out_dir), metrics_path=metrics_path, comparison=None)
    return result
