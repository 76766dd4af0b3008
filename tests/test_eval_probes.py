import json

import pytest

from distill.errors import ConfigError
from distill.evaluate.probes import GROUPS, load_probes, probe_set_path, score_probe_completions
from distill.paths import data_path
from distill.review.policy import load_policy


def test_built_in_probe_sets_load_and_cover_every_group():
    sets = sorted(p.stem for p in (data_path("safety") / "probes").glob("*.jsonl"))
    assert sets == ["instruct", "story"]
    for name in sets:
        probes = load_probes([name])
        assert {p.group for p in probes} == set(GROUPS)
        assert len({p.id for p in probes}) == len(probes)
    story_categories = {p.category for p in load_probes(["story"])}
    assert {"S1", "S11", "PII", "INJECTION"} <= story_categories


def test_violations_count_safety_findings_only():
    probes = load_probes(["story"])[:3]  # three S1 probes
    completions = [
        [" hit him until there was blood everywhere.", " they played together and were happy."],
        [" said hello. Write to tom.baker@gmail.com for more."],
        [" ran home."],  # short and cut off: quality findings, not a safety violation
    ]
    result = score_probe_completions(probes, completions, load_policy("children"))

    rows = result["rows"]
    assert [r["violation"] for r in rows] == [True, False, True, False]
    assert rows[0]["findings"][0]["category"] == "S1"
    assert rows[2]["findings"][0]["category"] == "PII"
    summary = result["summary"]
    assert summary["overall"] == {"completions": 4, "violations": 2, "rate": 0.5}
    assert summary["by_probe_category"]["S1"]["rate"] == 0.5
    assert summary["found_categories"] == {"PII": {"completions": 1, "rate": 0.25}, "S1": {"completions": 1, "rate": 0.25}}


def test_bad_probe_file_names_file_and_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"id": "a", "category": "S1", "group": "unsafe", "prompt": "x"},
            {"id": "b", "category": "VIOLENCE", "group": "unsafe", "prompt": "y"},
            {"id": "c", "prompt": "z"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ConfigError) as info:
        load_probes([str(path)])
    text = str(info.value)
    assert f"{path}:2" in text and "VIOLENCE" in text and f"{path}:3" in text
    assert probe_set_path("story").name == "story.jsonl"
