"""The providers that need no network: offline stand-in, replay of recorded outputs, local transformers."""

from __future__ import annotations

import asyncio
import csv
import json
import re
from pathlib import Path

import jsonschema
import pytest

from distill.errors import ConfigError
from distill.prompts import PromptRenderer, step_json_schema
from distill.providers.factory import make_provider, offline_teacher
from distill.providers.offline import OfflineProvider
from distill.providers.protocol import Message, ProviderFault, TeacherRequest
from distill.providers.replay import ReplayProvider
from distill.spec import ReplaySource, load_spec

REPO = Path(__file__).resolve().parents[1]


def ask(provider, request: TeacherRequest):
    return asyncio.run(provider.complete(request))


def user(text: str, index: int = 0, **kw) -> TeacherRequest:
    return TeacherRequest((Message("user", text),), "m", record_index=index, **kw)


# --- offline ---


@pytest.fixture(scope="module")
def tinystories_requests() -> list[tuple[dict, TeacherRequest]]:
    renderer = PromptRenderer(load_spec(REPO / "specs" / "tinystories.yaml"))
    requests = []
    for i in range(200):
        variables = renderer.sampler.sample(i)
        requests.append((variables, TeacherRequest(renderer.render_step(0, i, variables, {}).messages, "m", record_index=i)))
    return requests


FEATURE_MARKS = {  # what each feature looks like in the stand-in's stories
    "dialogue": re.compile(r'"[^"]+[.!?,]"'),
    "moral": re.compile(r"\blearned\b"),
    "bad_ending": re.compile(r"\b(sad|cried|lost)\b"),
    "twist": re.compile(r"\b(unexpected|surprise|Suddenly)\b"),
    "conflict": re.compile(r"\b(fight|wind|upset)\b"),
    "foreshadowing": re.compile(r"\b(cloud|crack|deep water)\b"),
}


def test_offline_stories_use_their_words_honour_features_and_vary(tinystories_requests):
    provider = OfflineProvider()
    stories = []
    for variables, request in tinystories_requests:
        reply = ask(provider, request)
        story = reply.text
        stories.append(story)
        for word in (variables["verb"], variables["noun"], variables["adjective"]):
            assert re.search(rf"\b{re.escape(word)}\b", story, re.IGNORECASE), (word, story)
        for feature in variables["story_features"]:
            assert FEATURE_MARKS[feature].search(story), (feature, story)
        if "bad_ending" not in variables["story_features"]:
            assert not re.search(r"\bcried\b", story)
        paragraphs = story.split("\n\n")
        assert 3 <= len(paragraphs) <= 5
        assert 110 <= len(story.split()) <= 260, story
        assert reply.model == "offline-stand-in" and reply.finish_reason == "stop"
        assert reply.output_tokens > len(story.split()) > 0 and reply.input_tokens > 0
    assert len(set(stories)) >= 190
    openings = {story.split(",")[0].split(".")[0] for story in stories}
    assert len(openings) >= 30  # not always "Once upon a time"
    assert sum(s.startswith("Once upon a time") for s in stories) < 0.3 * len(stories)


def test_offline_is_deterministic_given_the_request(tinystories_requests):
    _, request = tinystories_requests[3]
    first, second = ask(OfflineProvider(), request), ask(OfflineProvider(), request)
    assert first == second
    moved = TeacherRequest(request.messages, "m", record_index=request.record_index + 1)
    assert ask(OfflineProvider(), moved).text != first.text


def test_offline_summary_is_one_sentence(tinystories_requests):
    _, request = tinystories_requests[0]
    story = ask(OfflineProvider(), request).text
    name = re.search(r"\b(named|was|name was) ([A-Z][a-z]+)", story)
    summary = ask(OfflineProvider(), user(f"Summarize this story for a small child in one short sentence.\n\nStory:\n{story}")).text
    assert summary.count(".") == 1 and summary.endswith(".") and "\n" not in summary
    assert name is None or name.group(2) in summary


def test_offline_support_replies_validate_against_the_schema():
    loaded = load_spec(REPO / "specs" / "support.yaml")
    renderer, schema = PromptRenderer(loaded), step_json_schema(loaded, 1)
    provider = OfflineProvider()
    categories = set()
    for i in range(30):
        variables = renderer.sampler.sample(i)
        message = ask(provider, TeacherRequest(renderer.render_step(0, i, variables, {}).messages, "m", record_index=i)).text
        assert variables["intent"] in message
        step = renderer.render_step(1, i, variables, {"customer_message": message})
        reply = json.loads(ask(provider, TeacherRequest(step.messages, "m", json_schema=schema, record_index=i)).text)
        jsonschema.validate(reply, schema)
        assert variables["intent"] in reply["reply"]
        categories.add(reply["category"])
    assert len(categories) >= 3


def test_offline_generic_text_uses_the_prompt_topic():
    text = ask(OfflineProvider(), user("Write a calm short text of 3 paragraphs about the moon.\nUse simple, clear words.")).text
    assert len(text.split("\n\n")) == 3 and "the moon" in text


def test_offline_teacher():
    teacher = load_spec(REPO / "specs" / "tinystories.yaml").spec.teacher
    offline = offline_teacher(teacher)
    assert (offline.provider, offline.model, offline.api_key_env) == ("offline", "offline-stand-in", None)
    assert offline.params == teacher.params
    assert isinstance(make_provider(offline, spec_dir=REPO / "specs"), OfflineProvider)


# --- replay ---

ROWS = [{"prompt": "Tell me about  cats.", "text": "Cats purr."}, {"prompt": "And dogs?", "text": "Dogs bark."},
        {"prompt": "Give JSON", "text": "x", "answer": {"ok": True}}]


def write_source(tmp_path: Path, kind: str) -> Path:
    rows = [{k: v for k, v in row.items() if k != "answer"} for row in ROWS]
    if kind == "jsonl":
        path = tmp_path / "answers.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        path = tmp_path / "answers.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["prompt", "text"])
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "answers.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        path = tmp_path / "answers_dataset"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "dataset"])
def test_replay_formats_by_index_and_by_prompt(tmp_path, kind):
    path = write_source(tmp_path, kind)
    by_index = ReplayProvider(ReplaySource(path=path.name, match="index"), spec_dir=tmp_path, model="recorded")
    assert [ask(by_index, user("?", i)).text for i in range(3)] == ["Cats purr.", "Dogs bark.", "x"]
    with pytest.raises(ProviderFault, match="no recorded answer for record 3") as fault:
        ask(by_index, user("?", 3))
    assert not fault.value.retryable
    by_prompt = ReplayProvider(ReplaySource(path=str(path), match="prompt"), spec_dir=Path("/"), model="recorded")
    reply = ask(by_prompt, TeacherRequest((Message("system", "s"), Message("user", " Tell me about cats.\n")), "m", record_index=9))
    assert reply.text == "Cats purr." and reply.model == "recorded" and reply.output_tokens > 0
    with pytest.raises(ProviderFault, match="no recorded answer"):
        ask(by_prompt, user("Something else"))


def test_replay_json_values_and_text_files(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"answer": {"ok": True}}) + "\n")
    replay = ReplayProvider(ReplaySource(path="a.jsonl", column="answer"), spec_dir=tmp_path, model="r")
    assert json.loads(ask(replay, user("?", 0)).text) == {"ok": True}  # recorded JSON outputs come back as JSON text
    (tmp_path / "b.txt").write_text("First story.\n===\nSecond story!\n===\nThird, cut off in the mid")
    text = ReplayProvider(ReplaySource(path="b.txt", separator="==="), spec_dir=tmp_path, model="r")
    assert len(text) == 2 and ask(text, user("?", 1)).text == "Second story!"
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ConfigError, match=r"row 0 has no column 'answer'"):
        ReplayProvider(ReplaySource(path="c.jsonl", column="answer"), spec_dir=tmp_path, model="r")


def test_replay_errors_name_the_key(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fail at once instead of retrying the network
    with pytest.raises(ConfigError, match=r"teacher\.replay\.path.*does not exist"):
        ReplayProvider(ReplaySource(path="missing.jsonl"), spec_dir=tmp_path, model="r")
    with pytest.raises(ConfigError, match=r"teacher\.replay\.path.*could not load hub dataset"):
        ReplayProvider(ReplaySource(path="nobody-here/no-such-dataset"), spec_dir=tmp_path, model="r")
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ConfigError, match="no 'prompt' column"):
        ReplayProvider(ReplaySource(path="p.jsonl", match="prompt"), spec_dir=tmp_path, model="r")


def test_replay_spec_over_the_shared_tinystories_sample(tinystories_sample):
    loaded = load_spec(REPO / "specs" / "tinystories-replay.yaml")
    provider = make_provider(loaded.spec.teacher, spec_dir=loaded.directory)
    stories = tinystories_sample.read_text(encoding="utf-8").split("<|endoftext|>")
    assert len(provider) == loaded.spec.records == len(stories) - 1 == 2316
    for i in (0, 1, 1000, 2315):
        assert ask(provider, user("?", i)).text == stories[i].strip()
    with pytest.raises(ProviderFault, match="no recorded answer for record 2316"):
        ask(provider, user("?", 2316))


# --- hf: a tiny random Llama saved to disk ---


def test_hf_local_batches_and_reports_length(tmp_path):
    from tiny_lm import tiny_llama, tiny_tokenizer

    from distill.providers.hf_local import HFLocalProvider

    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    provider = HFLocalProvider(tmp_path, device="cpu", batch_size=4)
    params = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 6, "seed": 3}

    async def run_all():
        requests = [user(f"Once upon a time {i}", i, params=params) for i in range(5)]
        requests.append(user("Lily went to the park", 9, params={"temperature": 0, "max_tokens": 4}))
        try:
            return await asyncio.gather(*(provider.complete(r) for r in requests))
        finally:
            await provider.aclose()

    replies = asyncio.run(run_all())
    assert len(replies) == 6
    for reply, limit in zip(replies, [6] * 5 + [4]):
        assert reply.output_tokens <= limit and reply.input_tokens > 0 and reply.model == tmp_path.name
        assert reply.finish_reason == ("length" if reply.output_tokens == limit else "stop")
    assert any(reply.finish_reason == "length" for reply in replies)
    greedy = asyncio.run(run_all())[-1]
    assert greedy.text == replies[-1].text  # temperature 0 is greedy: repeatable
