"""Exported forms of a trained student, each run by its runtime against the safetensors weights: size, bits
per byte and its delta, greedy agreement, probe verdicts and greedy tokens/s on this CPU (the release's
parity check, outside a release).

    python benchmarks/export_forms.py MODEL_DIR [--stories FILE] [--texts 32] [--probes 16] [--policy children]
    python benchmarks/export_forms.py --smoke   # a tiny random Llama, 4 texts: checks the benchmark runs

MODEL_DIR is a student as training saves it (RUN/train/model). The held-out texts are the last stories of a
TinyStories text file (stories separated by <|endoftext|>; default: shared/data/tinystories, which the
students in this repository are not trained on past its first part), the greedy prompts their first six
words, the probes the `story` set's first ones, judged by the policy's review chain.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from distill.quiet import quiet_third_party  # noqa: E402

STORIES = ROOT.parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--stories", type=Path, default=STORIES)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--policy", default="children")
    parser.add_argument("--smoke", action="store_true", help="a tiny random Llama and 4 texts, in seconds (figures meaningless)")
    args = parser.parse_args()
    quiet_third_party()
    if args.model is None and not args.smoke:
        parser.error("give MODEL_DIR (RUN/train/model), or --smoke")
    with tempfile.TemporaryDirectory(prefix="distill-forms-") as scratch:
        if args.smoke:
            args.model, args.texts, args.prompts, args.probes = _tiny_model(Path(scratch) / "model"), 4, 2, 2
        measure(args, Path(scratch))


def _tiny_model(path: Path) -> Path:
    """A randomly initialised tiny Llama with the test suite's tokenizer (the smoke run's model)."""
    from tiny_lm import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def measure(args: argparse.Namespace, scratch: Path) -> None:

    from distill.evaluate.probes import load_probes
    from distill.release.export import export_forms
    from distill.release.parity import ParityInputs, format_table, measure_parity, parity_failures
    from distill.review.policy import load_policy

    stories = [s.strip() for s in args.stories.read_text(encoding="utf-8").split("<|endoftext|>") if s.strip()]
    held_out = stories[-args.texts:]
    inputs = ParityInputs(texts=held_out, prompts=[" ".join(s.split()[:6]) for s in held_out[:args.prompts]],
                          probes=load_probes(["story"])[:args.probes], policy=load_policy(args.policy))
    forms = export_forms(args.model, scratch / "forms", ["onnx", "int8", "gguf"])
    table = measure_parity(args.model, forms, inputs)
    print(f"{args.model}: {len(held_out)} held-out stories, {len(inputs.prompts)} prompts, {len(inputs.probes)} probes")
    for line in format_table(table):
        print(line)
    for problem in parity_failures(table):
        print(f"gate: {problem}")


if __name__ == "__main__":
    main()
