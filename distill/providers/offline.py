"""`offline`: a built-in, seeded, no-network stand-in for a strong teacher model.

It lets the whole pipeline run end to end on a fresh machine with no keys and no network (quickstart,
tests). It is not a language model: it fills a small grammar of sentence templates. For TinyStories
requests it writes simple 3-5 paragraph stories that use the three required words and honour the
requested features; for summary requests one sentence; for JSON steps an object built from the step's
schema; for anything else a short plain text made of the prompt's own words. Every reply carries the
model name "offline-stand-in" so later stages label datasets and model cards as stand-in output.

Replies depend only on the request (a hash of its messages and record index), so runs are repeatable.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from distill.providers.offline_chat import play_chat_role
from distill.providers.protocol import TeacherReply, TeacherRequest

STAND_IN_MODEL = "offline-stand-in"


def approximate_tokens(text: str) -> int:
    """About 4 tokens per 3 English words: a fake but plausible count for usage and cost reports."""
    return max(1, round(len(text.split()) * 4 / 3)) if text.strip() else 0


class OfflineProvider:
    """A deterministic stand-in teacher. Costs nothing, needs nothing, labels itself everywhere."""

    name = "offline"

    def __init__(self, model: str = STAND_IN_MODEL):
        self.model = model

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        rng = random.Random(_request_seed(request))
        prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if request.step.startswith("chat."):
            text = play_chat_role(request, rng)
        elif request.json_schema is not None:
            text = json.dumps(_fill_schema(request.json_schema, rng, _Context(prompt)), ensure_ascii=False)
        elif (words := _story_words(prompt)) is not None:
            text = write_story(rng, *words, features=_story_features(prompt))
        elif re.search(r"\bsummari[sz]e\b", prompt, re.IGNORECASE) and "Story:" in prompt:
            text = _summary(prompt.split("Story:", 1)[1], rng)
        else:
            text = _generic_text(prompt, rng)
        prompt_text = "\n".join(m.content for m in request.messages)
        return TeacherReply(text, "stop", approximate_tokens(prompt_text), approximate_tokens(text), self.model)

    async def aclose(self) -> None:
        return None


def _request_seed(request: TeacherRequest) -> int:
    digest = hashlib.sha256()
    for message in request.messages:
        digest.update(f"{message.role}\x00{message.content}\x00".encode())
    digest.update(str(request.record_index).encode())
    return int.from_bytes(digest.digest()[:8], "big")


# --- TinyStories: recognise the request, then fill a small story grammar ---

_FEATURE_PHRASES = {
    "dialogue": "dialogue",
    "bad_ending": "bad ending",
    "moral": "moral",
    "twist": "plot twist",
    "foreshadowing": "foreshadowing",
    "conflict": "conflict",
}


def _story_words(prompt: str) -> tuple[str, str, str] | None:
    found = [re.search(rf'\b{part} "([^"]+)"', prompt) for part in ("verb", "noun", "adjective")]
    if not all(found):
        return None
    return tuple(match.group(1) for match in found)  # type: ignore[return-value, union-attr]


def _story_features(prompt: str) -> set[str]:
    lowered = prompt.lower()
    return {code for code, phrase in _FEATURE_PHRASES.items() if phrase in lowered}


# (name, what they are, pronoun, possessive)
_CHARACTERS = [
    ("Lily", "girl", "she", "her"), ("Ben", "boy", "he", "his"), ("Mia", "girl", "she", "her"),
    ("Tom", "boy", "he", "his"), ("Sam", "boy", "he", "his"), ("Anna", "girl", "she", "her"),
    ("Max", "puppy", "he", "his"), ("Zoe", "girl", "she", "her"), ("Leo", "lion cub", "he", "his"),
    ("Ella", "bunny", "she", "her"), ("Jack", "boy", "he", "his"), ("Rosa", "duck", "she", "her"),
    ("Finn", "fish", "he", "his"), ("Nora", "kitten", "she", "her"), ("Pip", "bird", "he", "his"),
    ("Lucy", "girl", "she", "her"), ("Tim", "bear", "he", "his"), ("Daisy", "cow", "she", "her"),
    ("Kai", "boy", "he", "his"), ("Ivy", "mouse", "she", "her"), ("Bob", "frog", "he", "his"),
    ("Sara", "girl", "she", "her"), ("Ollie", "owl", "he", "his"), ("Molly", "squirrel", "she", "her"),
]
_FRIENDS = ["Mom", "Dad", "Grandma", "a kind old dog", "a little bird", "a friendly cat", "a big brother",
            "a small bunny", "a wise owl", "a happy frog"]
_PLACES = ["the park", "a big forest", "a sunny beach", "a small farm", "a quiet garden", "a little town",
           "a green hill", "a blue pond", "a busy street", "a cozy house"]
_WEATHER = ["sunny", "warm", "windy", "rainy", "bright", "cold", "quiet", "cloudy"]
_FEELINGS = ["happy", "glad", "excited", "proud", "calm"]

_OPENINGS = [
    "Once upon a time, there was a little {kind} named {name}. {P} lived near {place}.",
    "One {weather} morning, a {kind} named {name} went out to play in {place}.",
    "{name} was a little {kind} who lived in {place}. Every day, {p} liked to look for new things.",
    "In {place}, there lived a small {kind}. {P_pos} name was {name}.",
    "It was a {weather} day. {name} the {kind} woke up early and ran outside to {place}.",
    "Long ago, in {place}, a little {kind} named {name} had a big dream.",
    "Every day after lunch, {name} the {kind} went to {place} to play.",
    "{name} loved {place}. The little {kind} went there whenever {p} could.",
]

_SETTING = [
    "The sky was blue, and the birds sang in the trees.",
    "{P} had many friends, but {p_pos} best friend was {friend}.",
    "{name} liked to run, jump and look at everything around {p_obj}.",
    "The grass was soft, and the flowers smelled sweet.",
    "Every morning, {name} said hello to the sun.",
    "{P} was small, but {p} was very brave and curious.",
]
_FIND = [
    "One day, {name} found {a_noun} that was very {adj}.",
    "Soon {name} saw {a_noun}. It looked so {adj}!",
    "Under a tree, {p} found {a_noun}. The {noun} was {adj} and new.",
    "Then {name} spotted {a_noun} by the path. {P} thought it was very {adj}.",
]
_WANT = [
    "{name} wanted to {verb} with it. {P} smiled and tried hard.",
    "{P} wanted to {verb} right away. It felt like a fun game.",
    "{name} decided to {verb}, just like {friend} had shown {p_obj} before.",
    "{P} did not know how to {verb} yet, but {p} wanted to learn.",
]
_TRY = [
    "At first it was hard, but {name} did not give up.",
    "{P} tried once, then twice, and then one more time.",
    "{name} laughed, because it was so much fun.",
    "{P} showed {friend}, who clapped and cheered.",
]
_MIDDLE = [
    "{name} asked {friend} for help. Together they looked at the {noun} for a long time.",
    "{name} carried the {noun} all around {place}. {P} showed it to everyone {p} met.",
    "{P} played with the {noun} until the sun was high in the sky.",
    "{name} and {friend} took turns. They laughed and had a lot of fun.",
    "Later, {name} sat down to rest. {P} looked at the {noun} and thought about what to do next.",
    "The two of them walked to {place} and back again, talking all the way.",
]
_DIALOGUE = [
    '"Look at this {noun}!" {name} said. "{Adj} things are the best."',
    '"Can you help me {verb}?" {name} asked {friend}. "Yes, I can," came the answer.',
    '"I want to {verb} every day," said {name}. "Me too!" said {friend}.',
    '"What a {adj} {noun}," said {friend}. {name} nodded and said, "Thank you!"',
]
_CONFLICT = [  # (the problem, how it is solved)
    ("But {friend} wanted the {noun} too. They both pulled, and they began to fight.",
     "After a while, they stopped and talked. They decided to share."),
    ("Then a big wind came and tried to blow the {noun} away. {name} had to hold on tight.",
     "{name} held the {noun} close until the wind was gone."),
    ("But {friend} said it was not {name}'s {noun}. {name} felt upset and did not want to share.",
     "In the end, they said sorry to each other and played with it together."),
]
_FORESHADOW = [  # (an early hint, the later moment it pays off)
    ("{name} did not see the little dark cloud far away.",
     "Then the dark cloud from the morning came closer, and big drops of rain began to fall."),
    ("There was a small crack in the {noun}, but {name} did not notice it.",
     "The small crack in the {noun} grew bigger and bigger."),
    ("That morning, Mom told {name} to stay away from the deep water.",
     "{name} remembered what Mom had said about the deep water and stepped back just in time."),
]
_TWIST = [
    "Then something unexpected happened. The {noun} began to glow and sing a soft song!",
    "But there was a surprise. The {noun} was not a {noun} at all. It was a tiny house for a family of ants.",
    "Suddenly, {friend} came out from behind a tree holding a second {noun}. There were two of them!",
]
_HAPPY_ENDINGS = [
    "When the day was over, {name} went home. {P} felt {feeling} and slept well.",
    "{name} kept the {noun} in a safe place. Every time {p} saw it, {p} smiled.",
    "From that day on, {name} and {friend} were the best of friends.",
    "At night, {name} told Mom all about the {adj} {noun}. It had been a very good day.",
]
_REACT = [
    "{name} could not believe {p_pos} eyes.",
    "Nobody had expected that, not even {friend}.",
    "{name} opened {p_pos} mouth wide in surprise.",
]
_BAD_ENDINGS = [
    "But then the {noun} broke into many pieces. {name} cried, and it could not be fixed.",
    "Sadly, the rain came and washed the {noun} away. {name} never saw it again and felt very sad.",
    "In the end, the {noun} was lost. {name} walked home alone, sad and tired.",
]
_CLOSING = [
    "The sun went down, and the stars came out one by one.",
    "Soon it was time for bed, and the moon was big and round.",
    "That night, the house was quiet and warm.",
    "The day was over, and {name} thought about it for a long time.",
]
_MORALS = [
    "{name} learned that it is good to share and to be kind.",
    "{name} learned an important lesson: listen to the people who love you.",
    "That day, {name} learned that being patient is better than being in a hurry.",
    "{name} learned that friends can fix problems when they work together.",
]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def write_story(rng: random.Random, verb: str, noun: str, adjective: str, *, features: set[str] = frozenset()) -> str:
    """A 3-5 paragraph story that uses `verb`, `noun` and `adjective` and has the requested features."""
    name, kind, pronoun, possessive = rng.choice(_CHARACTERS)
    slots = {
        "name": name, "kind": kind, "p": pronoun, "P": pronoun.capitalize(), "p_pos": possessive,
        "P_pos": possessive.capitalize(), "p_obj": "her" if pronoun == "she" else "him", "place": rng.choice(_PLACES),
        "weather": rng.choice(_WEATHER), "friend": rng.choice(_FRIENDS), "feeling": rng.choice(_FEELINGS),
        "verb": verb, "noun": noun, "adj": adjective, "Adj": adjective.capitalize(), "a_noun": f"{_article(noun)} {noun}",
    }
    middles = rng.sample(_MIDDLE, 3)  # drawn without replacement: no sentence twice in one story

    def say(*pools: list[str]) -> str:
        return " ".join(rng.choice(pool).format(**slots) for pool in pools)

    hint, payoff = rng.choice(_FORESHADOW)
    opening = say(_OPENINGS, _SETTING)
    if "foreshadowing" in features:
        opening += " " + hint.format(**slots)
    paragraphs = [opening, say(_FIND, _WANT, _TRY)]
    middle = " ".join(m.format(**slots) for m in middles[:2])
    if "dialogue" in features:
        middle += " " + say(_DIALOGUE)
    paragraphs.append(middle)
    if "conflict" in features:
        paragraphs.append(" ".join(part.format(**slots) for part in rng.choice(_CONFLICT)))
    if "twist" in features:
        paragraphs.append(say(_TWIST, _REACT))
    if len(paragraphs) < 4:
        paragraphs.append(middles[2].format(**slots) + " " + say(_SETTING))
    if "foreshadowing" in features:
        paragraphs[-1] += " " + payoff.format(**slots)
    ending = say(_BAD_ENDINGS if "bad_ending" in features else _HAPPY_ENDINGS, _CLOSING)
    if "moral" in features:
        ending += " " + say(_MORALS)
    paragraphs.append(ending)
    while len(paragraphs) > 5:  # many features: fold two middle paragraphs together
        paragraphs[1:3] = [paragraphs[1] + " " + paragraphs[2]]
    return "\n\n".join(paragraphs)


# --- summaries and generic text: made of the prompt's own words ---

_STOPWORDS = set("""a an and are as at be but by can could did do does for from had has have he her him his i if in into
is it its just me my no not of on one or our she so that the their them then there they this to too up very was
we were what when which who will with would you your story write reply only short sentence summarize small child
make sure use using should must about once suddenly after every text paragraph paragraphs words simple clear""".split())


def _content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in _STOPWORDS and len(w) > 2]


def _summary(story: str, rng: random.Random) -> str:
    # A name: a capitalised word that never appears in lower case and is not a common word.
    names = [w for w in re.findall(r"\b[A-Z][a-z]+\b", story)
             if w.lower() not in _STOPWORDS and not re.search(rf"\b{w.lower()}\b", story)]
    name = max(set(names), key=names.count) if names else "a little child"
    words = [w for w in _content_words(story) if w.lower() != name.lower()]
    thing = max(sorted(set(words)), key=words.count) if words else "a new day"
    ending = rng.choice(["and what happens next", "on a special day", "and a friend", "and a small adventure"])
    return f"A short story about {name}, the {thing}, {ending}."


def _generic_text(prompt: str, rng: random.Random) -> str:
    """Plain paragraphs about the prompt's topic, in its own words: honest filler, not an answer."""
    fields = _labelled_fields(prompt)
    if len(fields) >= 2:  # a form-like prompt ("Customer: ...", "Mood: ..."): restate it plainly
        return "\n".join(["Hello."] + [f"{label}: {value.rstrip('.')}." for label, value in fields] + ["Thank you."])
    about = re.search(r"\babout ([^.,;:\n]+)", prompt)
    words = list(dict.fromkeys(_content_words(prompt)))
    topic = about.group(1).strip() if about else " and ".join(words[:2]) or "this request"
    count = re.search(r"\b(\d+) paragraphs?\b", prompt)
    sentences = [
        f"This is a short text about {topic}.", f"There is a lot to notice about {topic}.",
        f"Many people like to think and talk about {topic}.", f"Here are a few simple words about {topic}.",
        f"Some things about {topic} are easy to see, and some are not.", f"That is why {topic} is worth a closer look.",
    ] + [f"One word that comes to mind is {word}." for word in words[:6]]
    paragraphs = [" ".join(rng.sample(sentences, 3)) for _ in range(min(int(count.group(1)), 6) if count else 1)]
    return "\n\n".join(paragraphs)


def _labelled_fields(text: str) -> list[tuple[str, str]]:
    """`Label: value` lines with a short label, in order."""
    return [(m.group(1), m.group(2).strip()) for m in re.finditer(r"^([A-Z][A-Za-z ]{0,24}): (.+)$", text, re.MULTILINE)]


# --- JSON steps: fill the schema ---


class _Context:
    """What a JSON reply is about: a quoted block in the prompt if there is one (the message being
    answered), else the whole prompt. Used to pick enum values and to write string fields."""

    def __init__(self, prompt: str):
        quoted = re.search(r'"""\s*(.+?)\s*"""', prompt, re.DOTALL)
        source = quoted.group(1) if quoted else prompt
        fields = _labelled_fields(source)
        self.source = source.lower()
        asks = [v for label, v in fields if re.search(r"need|question|issue|problem|request", label, re.IGNORECASE)]
        longest = max((v for _, v in fields), key=len) if fields else ""
        self.topic = (asks[0] if asks else longest).rstrip(".") or " ".join(_content_words(source)[:6])
        self.words = list(dict.fromkeys(_content_words(self.topic))) or list(dict.fromkeys(_content_words(source)))

    def mentions(self, value: str) -> bool:
        stem = value.lower()[:4]
        return bool(stem) and re.search(rf"\b{re.escape(stem)}", self.source) is not None


def _fill_schema(schema: dict[str, Any], rng: random.Random, context: _Context, name: str = "") -> Any:
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        mentioned = [v for v in schema["enum"] if isinstance(v, str) and context.mentions(v)]
        return mentioned[0] if mentioned else rng.choice(schema["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return _fill_schema(schema[combinator][0], rng, context, name)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _fill_schema(sub, rng, context, key) for key, sub in properties.items()}
    if kind == "array":
        low, high = schema.get("minItems", 1), schema.get("maxItems", 3)
        count = rng.randint(low, max(low, min(high, low + 2)))
        return [_fill_schema(schema.get("items", {}), rng, context, name) for _ in range(count)]
    if kind == "boolean":
        return rng.random() < 0.3
    if kind in ("integer", "number"):
        value = rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 10)))
        return value if kind == "integer" else float(value)
    if kind == "null":
        return None
    return _string_for(name, schema, rng, context)


def _string_for(name: str, schema: dict[str, Any], rng: random.Random, context: _Context) -> str:
    topic = context.topic or "your question"
    if name in ("reply", "answer", "response", "message"):
        text = (f"Hi, thank you for writing to us about this: {topic}. "
                + rng.choice(["Here is what to try first.", "Let's sort this out together.", "I can help with that."])
                + " If the steps below do not solve it, reply to this message and we will look into it further.")
    elif name in ("steps", "step"):
        text = rng.choice(["Open the app and check that it is up to date.", "Restart the device and try again.",
                           "Tell us what you see after trying this.", "Check that the device is powered on and nearby."])
    else:
        text = f"{name or 'value'}: {topic}"
    low, high = schema.get("minLength", 0), schema.get("maxLength", 10_000)
    while len(text) < low:
        text += " " + text
    return text[:high]
