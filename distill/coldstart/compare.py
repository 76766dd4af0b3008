"""`distill compare V1 V2 --heldout FILE`: the two students on the same held-out real inputs.

- bits per byte of each student on the teacher's answers to the real inputs (lower is better);
- judge grades (1-10) of each student's own greedy answers, mean with a 95% t-interval;
- the win rate of v2 over v1 in a pairwise judgement asked in both orders (v1 as A, then v2 as A),
  which cancels the judge's position bias; a tie counts half; 95% t-interval over all judgements.
v2 is `better` when its bits per byte are lower and the interval of its win rate reaches 0.5 or
above (not significantly worse to the judge). `distill promote` refuses a v2 that is not better.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem
from distill.paths import data_path

PAIRWISE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
                   "required": ["winner"], "additionalProperties": False}
GRADE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
                "required": ["score"], "additionalProperties": False}


def read_heldout(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem("no held-out real inputs here", file=path, hint="run `distill coldstart` first"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ConfigError(Problem("the held-out set is empty", file=path))
    return rows


def load_model(path: Path):
    from distill.release.unpack import open_student

    model, tokenizer, _ = open_student(path)
    return model.eval(), tokenizer


def student_scores(path: Path, rows: list[dict[str, Any]], *, max_new_tokens: int) -> tuple[dict, list[str]]:
    """(bits per byte on the teacher's answers, the student's greedy answers) for one student."""
    from distill.train.bpb import bits_per_byte
    from distill.train.data import render_prompt
    from distill.train.sample import generate

    model, tokenizer = load_model(path)
    context = int(model.config.max_position_embeddings)
    bpb = bits_per_byte(model, tokenizer, [r["text"] for r in rows], context_length=context, batch_size=8,
                        prompts=[render_prompt(tokenizer, r["prompt"]) for r in rows])
    answers = [generate(model, tokenizer, r["prompt"], max_new_tokens=max_new_tokens, temperature=0, chat=True)
               for r in rows]
    return bpb, answers


def compare(v1: Path, v2: Path, heldout: Path, judge, *, max_new_tokens: int = 128) -> dict[str, Any]:
    """The comparison report (also written by the CLI as JSON next to the held-out set)."""
    from distill.evaluate.grading import mean_interval

    rows = read_heldout(heldout)
    bpb1, answers1 = student_scores(v1, rows, max_new_tokens=max_new_tokens)
    bpb2, answers2 = student_scores(v2, rows, max_new_tokens=max_new_tokens)
    grades1, grades2, wins = asyncio.run(judge_all(judge, rows, answers1, answers2))
    win_rate = mean_interval(wins, scale=(0.0, 1.0))
    better = bpb2["bits_per_byte"] < bpb1["bits_per_byte"] and (
        win_rate["high"] is None or win_rate["high"] >= 0.5)
    return {
        "heldout": str(heldout), "inputs": len(rows),
        "v1": {"model": str(v1), "bits_per_byte": bpb1["bits_per_byte"], "grade": mean_interval(grades1, scale=(0.0, 10.0))},
        "v2": {"model": str(v2), "bits_per_byte": bpb2["bits_per_byte"], "grade": mean_interval(grades2, scale=(0.0, 10.0))},
        "win_rate_v2": win_rate, "judgements": len(wins), "v2_better": better,
        "examples": [{"input": r.get("input", r["prompt"]), "teacher": r["text"], "v1": a1, "v2": a2}
                     for r, a1, a2 in list(zip(rows, answers1, answers2))[:5]],
    }


async def judge_all(judge, rows, answers1, answers2) -> tuple[list[float], list[float], list[float]]:
    """Grades for each answer, and v2's score (1 win, 0.5 tie, 0 loss) in each order of each pair."""
    import jinja2

    from distill.providers.protocol import Message, TeacherRequest

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(data_path("templates") / "coldstart"), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    grade_t, pair_t = env.get_template("grade.jinja"), env.get_template("pairwise.jinja")

    async def ask(text: str, schema: dict, index: int) -> dict | None:
        request = TeacherRequest((Message("user", text),), judge.model, {"temperature": 0.0, "max_tokens": 50},
                                 schema, record_index=index)
        reply = await judge.complete(request)
        try:
            return json.loads(reply.text)
        except json.JSONDecodeError:
            return None  # an unreadable judgement is left out, not guessed

    grades1, grades2, wins = [], [], []
    try:
        for i, (row, a1, a2) in enumerate(zip(rows, answers1, answers2)):
            for answer, grades in ((a1, grades1), (a2, grades2)):
                verdict = await ask(grade_t.render(prompt=row["prompt"], reply=answer), GRADE_SCHEMA, i)
                if verdict and isinstance(verdict.get("score"), int):
                    grades.append(float(verdict["score"]))
            for first, second, v2_is in ((a1, a2, "B"), (a2, a1, "A")):
                verdict = await ask(pair_t.render(prompt=row["prompt"], first=first, second=second), PAIRWISE_SCHEMA, i)
                if verdict and verdict.get("winner") in ("A", "B", "tie"):
                    wins.append(0.5 if verdict["winner"] == "tie" else float(verdict["winner"] == v2_is))
    finally:
        await judge.aclose()
    return grades1, grades2, wins


class NamedJudge:
    """A provider with the model name its requests carry."""

    def __init__(self, provider, model: str):
        self.provider, self.model, self.name = provider, model, provider.name

    async def complete(self, request):
        return await self.provider.complete(request)

    async def aclose(self) -> None:
        await self.provider.aclose()


def spec_judge(run_dir: Path) -> NamedJudge:
    """The judge `distill eval` uses for this run (evaluation.judge, else the teacher), cached in the run."""
    from distill.evaluate.stage import make_judge
    from distill.rundir import RunDir

    loaded = RunDir.open(run_dir).load_spec()
    judge, who = make_judge(loaded, Path(run_dir) / "coldstart", None)
    if judge is None:
        raise ConfigError(Problem(who, file=run_dir))
    return NamedJudge(judge, who.split(":", 1)[1])
