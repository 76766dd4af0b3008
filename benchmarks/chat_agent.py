"""The support agent, served and driven by the real `openai` SDK: tool calls and structured replies.

    python benchmarks/chat_agent.py RUN_DIR [--bundle BUNDLE] [--limit 60] [--smoke]

RUN_DIR is a finished run of a chat spec (e.g. `distill run specs/support-agent.yaml`); its held-out
conversations are the training split's validation records. The student (the release bundle, or
RUN/train/model) is served by serve-model's app on loopback and asked, through the SDK:

- each held-out first user turn, with the spec's tools and tool_choice auto: on turns where the teacher
  called a tool, the share where the student calls the right tool with schema-valid arguments, and with
  arguments equal to the teacher's; on turns where the teacher replied, the share answered without a call;
- each reply that follows a tool result, with response_format json_schema (strict) and without it: the share
  of schema-valid JSON replies, and the time per generated token each way (the cost of constrained decoding).
Prints one JSON object. --smoke: eight offline conversations and a random one-layer student, in seconds, to
check the benchmark runs (figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

import jsonschema
import openai

from distill.conversation import parse_transcript
from distill.serving.api import ServedModel, create_app
from distill.serving.engine import BatchEngine


def serve(model_dir: Path) -> tuple[str, ServedModel]:
    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (model_dir / "manifest.json").is_file():
        from distill.serving.server import open_bundle

        served = open_bundle(model_dir)
    else:
        served = ServedModel("student", BatchEngine(AutoModelForCausalLM.from_pretrained(model_dir),
                                                    AutoTokenizer.from_pretrained(model_dir)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([served]), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/v1", served


def held_out(run_dir: Path, limit: int) -> list[str]:
    import datasets

    val = set(json.loads((run_dir / "train" / "split.json").read_text())["val"])
    rows = datasets.load_from_disk(str(run_dir / "dataset"))
    return [r["text"] for r in rows if r["id"] in val and r["status"] == "ok"][:limit]


def first_turns(client, model: str, transcripts: list[str]) -> dict:
    needed = right = equal = replied = quiet = 0
    for text in transcripts:
        messages, tools = parse_transcript(text)
        user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        teacher = messages[user + 1]
        answer = client.chat.completions.create(model=model, messages=messages[:user + 1], tools=tools,
                                                tool_choice="auto", temperature=0, max_tokens=96).choices[0].message
        if not teacher.get("tool_calls"):
            replied += 1
            quiet += not answer.tool_calls
            continue
        needed += 1
        wanted = teacher["tool_calls"][0]["function"]
        schema = next(t["function"]["parameters"] for t in tools if t["function"]["name"] == wanted["name"])
        call = answer.tool_calls[0].function if answer.tool_calls else None
        valid = call is not None and call.name == wanted["name"] and _valid(call.arguments, schema)
        right += valid
        equal += valid and json.loads(call.arguments) == json.loads(wanted["arguments"])
    return {"first_turns_needing_a_call": needed, "valid_call_rate": right / max(needed, 1),
            "arguments_equal_teacher": equal / max(needed, 1), "first_turns_needing_a_reply": replied,
            "replied_without_a_call": quiet / max(replied, 1)}


def replies(client, model: str, transcripts: list[str], schema: dict) -> dict:
    figures = {}
    for constrained in (True, False):
        valid = tokens = n = 0
        seconds = 0.0
        for text in transcripts:
            messages, tools = parse_transcript(text)
            ends = [i for i, m in enumerate(messages) if m["role"] == "assistant" and not m.get("tool_calls")
                    and i and messages[i - 1]["role"] == "tool"]
            if not ends:
                continue
            extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                                                "strict": True}}} if constrained else {}
            started = time.perf_counter()
            reply = client.chat.completions.create(model=model, messages=messages[:ends[0]], tools=tools,
                                                   tool_choice="none", temperature=0, max_tokens=160, **extra)
            seconds += time.perf_counter() - started
            tokens += reply.usage.completion_tokens
            n += 1
            valid += _valid(reply.choices[0].message.content or "", schema)
        figures["constrained" if constrained else "unconstrained"] = {
            "requests": n, "schema_valid": valid / max(n, 1), "ms_per_token": 1000 * seconds / max(tokens, 1)}
    return figures


def _valid(text: str, schema: dict) -> bool:
    try:
        return jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
    except json.JSONDecodeError:
        return False


def smoke_run(folder: Path) -> Path:
    """A run folder with eight offline support-agent conversations (all held out) and a random tiny student."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.spec import load_spec
    from distill.synthesis.generate import generation_plan, synthesize
    from distill.train.chat_template import CHAT_TEMPLATE
    from distill.train.tokenizer import train_tokenizer

    loaded = load_spec(Path(__file__).resolve().parents[1] / "specs" / "support-agent.yaml")
    synthesize(generation_plan(loaded), folder, loaded.spec.teacher, records=8, teacher_dir=loaded.directory,
               show_progress=False)
    rows = datasets.load_from_disk(str(folder / "dataset"))
    tokenizer = train_tokenizer(list(rows["text"]), 600, chat_template=CHAT_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder / "train" / "model")
    tokenizer.save_pretrained(folder / "train" / "model")
    (folder / "train" / "split.json").write_text(json.dumps({"train": [], "val": list(rows["id"])}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--smoke", action="store_true", help="a tiny offline run and a random student, in seconds")
    parser.add_argument("--bundle", type=Path, help="the release bundle to serve (default: RUN/train/model)")
    parser.add_argument("--limit", type=int, default=60, help="held-out conversations to use")
    parser.add_argument("--schema", type=Path, default=Path("specs/support-agent/answer.schema.json"))
    args = parser.parse_args()
    if args.smoke:
        import tempfile

        args.run_dir = smoke_run(Path(tempfile.mkdtemp()) / "run")
        args.schema = Path(__file__).resolve().parents[1] / "specs" / "support-agent" / "answer.schema.json"
    elif args.run_dir is None:
        parser.error("give RUN_DIR, or --smoke")
    url, served = serve(args.bundle or args.run_dir / "train" / "model")
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    transcripts = held_out(args.run_dir, args.limit)
    schema = json.loads(args.schema.read_text())
    result = {"model": served.id, "held_out": len(transcripts), "tools": first_turns(client, served.id, transcripts),
              "replies": replies(client, served.id, transcripts, schema)}
    print(json.dumps(result, indent=2))
    served.engine.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
