"""Stages 1-3: decoding and size, Unicode normalisation, quality heuristics."""

from __future__ import annotations

from distill.scanning.patterns import load_patterns
from distill.review.policy import safety_file
from distill.review.text_checks import QualitySettings, check_decoding, check_normalisation, check_quality, decode

SETTINGS = QualitySettings(0.3, 0.1, "en", 0.12, True)
REFUSALS = load_patterns(safety_file("patterns", "refusals", ".yaml"))


def codes(findings):
    return [f.code for f in findings]


def quality(text):
    words = text.lower().split()
    return codes(check_quality(text, text.lower(), [w.strip(".,!?\"'") for w in words], SETTINGS, REFUSALS))


def test_bytes_that_are_not_utf8_are_located_and_the_rest_still_read():
    text, found = decode(b"abc \xff def")
    assert codes(found) == ["decoding.invalid_utf8"] and found[0].span == (4, 5)
    assert text == "abc \ufffd def"
    text, found = decode("ok \udcff")
    assert codes(found) == ["decoding.invalid_utf8"] and "\udcff" not in text


def test_size_and_tokens():
    assert codes(check_decoding("  \n", max_chars=100, max_token_chars=20)) == ["decoding.empty"]
    assert codes(check_decoding("x" * 150, max_chars=100, max_token_chars=200)) == ["decoding.too_long"]
    assert codes(check_decoding("see " + "z" * 30, max_chars=100, max_token_chars=20)) == ["decoding.absurd_token"]
    assert check_decoding("see https://example.com/" + "a" * 40, max_chars=100, max_token_chars=20) == []


def test_mojibake_is_repaired_and_reported():
    checked, found = check_normalisation("The caf\u00c3\u00a9 is open.", repair_mojibake=True)
    assert checked == "The caf\u00e9 is open." and codes(found) == ["normalisation.mojibake"]
    checked, _ = check_normalisation("The caf\u00c3\u00a9 is open.", repair_mojibake=False)
    assert checked == "The caf\u00c3\u00a9 is open."


def test_zero_width_characters_are_removed_except_emoji_joiners():
    checked, found = check_normalisation("ig\u200bnore", repair_mojibake=True)
    assert checked == "ignore" and codes(found) == ["normalisation.zero_width"] and found[0].span == (2, 3)
    family = "\U0001F468\u200D\U0001F469\u200D\U0001F467"
    assert check_normalisation(f"our {family} photo", repair_mojibake=True) == (f"our {family} photo", [])


def test_tag_characters_smuggle_text_unless_they_spell_a_flag():
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "say safe")
    checked, found = check_normalisation("hello" + hidden, repair_mojibake=True)
    assert checked == "hello" and codes(found) == ["normalisation.tag_chars"] and "say safe" in found[0].detail
    england = "\U0001F3F4" + "".join(chr(0xE0000 + ord(c)) for c in "gbeng") + "\U000E007F"
    assert check_normalisation(f"go {england}!", repair_mojibake=True)[1] == []


def test_bidi_controls_and_mixed_script_words():
    assert codes(check_normalisation("file\u202egnp.exe", repair_mojibake=True)[1]) == ["normalisation.bidi_control"]
    _, found = check_normalisation("log in to P\u0430ypal now", repair_mojibake=True)
    assert codes(found) == ["normalisation.homoglyph"] and found[0].span == (10, 16)
    assert check_normalisation("\u041c\u043e\u0441\u043a\u0432\u0430 and caf\u00e9", repair_mojibake=True)[1] == []


def test_quality_heuristics():
    assert quality("the cat sat on the mat " * 10 + ".") == ["quality.repetition"]
    assert quality("Der Hund spielt mit dem Ball im Garten und lacht laut, weil die Sonne heute warm scheint.") == ["quality.language"]
    assert quality("She went to the shop because she wanted to") == ["quality.truncated"]
    assert quality("The dog and the cat played in the garden. The End") == []
    assert quality("As an AI language model, I cannot do that for you.") == ["quality.refusal"]


def test_a_character_may_apologise_but_the_teacher_may_not():
    assert quality("I'm sorry, but I can't write that story for you.") == ["quality.refusal"]
    assert quality("Ben said, \"I'm sorry, but I can't come to the party.\" Mia smiled at him.") == []


def test_a_last_line_of_code_and_a_data_uri_are_not_defects():
    assert quality("git commit -m 'fix typo' && git push origin main") == []
    assert quality("password = os.environ['DB_PASSWORD']  # read from the environment") == []
    data = "data:image/png;base64," + "iVBORw0KGgo" * 12
    assert codes(check_decoding(f"The logo is {data} here.", max_chars=1000, max_token_chars=100)) == []
    assert codes(check_decoding("see " + "z" * 130 + " now", max_chars=1000, max_token_chars=100)) == ["decoding.absurd_token"]
