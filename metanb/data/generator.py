"""An offline generator of Persona-Chat-like data, built so that the persona is what matters.

Real ConvAI2 cannot ship with the package, and the ``quick`` profile must run offline, so this
module writes dialogues with the same shape: a persona of 4-5 sentences, dialogues of several
turns, and for each turn of the speaker a set of candidate replies of which one is true.

Design (why each choice):

* A persona is a profile over attribute *slots* (pet, hobby, food, job, place, music, family,
  color), each with 24 values shared by many personas, so a persona is a combination of common
  facts (a structured task, not a lookup of a unique word).
* In each turn the partner greets, asks about a slot, or mentions its own value of a slot. The
  true reply states the speaker's value of that slot; the distractors are the *same* kind of
  reply with other values (what another persona would say), built from the same templates and
  prefixes, so the surface form says nothing about which one is true. Only knowing the persona
  picks it: an oracle with the persona's attribute words is always right, a persona-blind
  reader of the history is near chance (``tests/test_data_generator.py`` measures both).
* History leaks a little, as in real ConvAI2: with probability ``followup_rate`` the partner
  asks for more about something the speaker already said, and the answer repeats that value.
  Distractors never reuse a value already in the history, so nothing else leaks.
* One persona's dialogues cover its slots in random order, so a few support dialogues reveal
  most of a new persona: that is what a per-persona LoRA adapter can learn.
* ``distractors="random"`` is the ConvAI2-like control: the distractors are true replies drawn
  at random from *other* personas' dialogues (as ConvAI2's 19 are random utterances), so the
  topic of the partner's turn alone often picks the reply and a persona-blind model is no
  longer at chance. Dialogues and true replies are the same as with ``"same-slot"``.

Everything is drawn from one ``random.Random(seed)``: the same arguments give the same data on
every platform.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metanb.data.tasks import Dialogue, Example
from metanb.errors import MetanbError


@dataclass(frozen=True)
class Slot:
    """One attribute of a persona and the templates that talk about it (``{v}`` = its value)."""

    name: str
    values: tuple[str, ...]
    persona: tuple[str, ...]  # persona sentences
    ask: tuple[str, ...]  # the partner asks about it
    mention: tuple[str, ...]  # the partner tells its own value
    statement: tuple[str, ...]  # the speaker states its value (every reply is built from these)
    followup: tuple[str, ...]  # the partner asks for more about what the speaker said


def _slot(name: str, values: str, **templates: str) -> Slot:
    """A slot from space-separated values and ``|``-separated templates (compact to read)."""
    return Slot(
        name,
        tuple(v.replace("_", " ") for v in values.split()),
        **{key: tuple(t.strip() for t in text.split("|")) for key, text in templates.items()},
    )


SLOTS: tuple[Slot, ...] = (
    _slot(
        "pet",
        "cat dog parrot hamster rabbit turtle goldfish snake lizard ferret horse hedgehog "
        "iguana chinchilla cockatoo goat duck chicken gecko tarantula canary frog llama pony",
        persona="i have a pet {v} . | my pet {v} is my best friend . | i live with my pet {v} .",
        ask="do you have any pets ? | what kind of pet do you have ? | any animals at home ?",
        mention="i just adopted a pet {v} . | my pet {v} kept me up all night . "
        "| i have always wanted a pet {v} .",
        statement="i have a pet {v} at home . | my pet {v} is my best friend . "
        "| i just got back from feeding my pet {v} . | my pet {v} keeps me busy .",
        followup="tell me more about your pet . | how old is your pet ? | what is your pet like ?",
    ),
    _slot(
        "hobby",
        "hiking painting knitting fishing surfing chess gardening photography dancing skiing "
        "climbing swimming cycling yoga pottery baking woodworking camping bowling "
        "skateboarding karate archery sailing juggling",
        persona="my favorite hobby is {v} . | i am really into {v} . "
        "| in my free time i enjoy {v} .",
        ask="what do you do for fun ? | do you have any hobbies ? "
        "| how do you spend your free time ?",
        mention="i have been getting into {v} lately . | my weekend was all about {v} . "
        "| i tried {v} for the first time .",
        statement="i spend most weekends on {v} . | my favorite hobby is {v} . "
        "| i am really into {v} these days . | nothing relaxes me like {v} .",
        followup="how did you get into your hobby ? | tell me more about your hobby . "
        "| how often do you get to do your hobby ?",
    ),
    _slot(
        "food",
        "pizza sushi tacos pasta burgers curry pancakes steak ramen dumplings burritos lasagna "
        "waffles chocolate cheesecake donuts bagels falafel kebabs paella risotto oysters "
        "lobster nachos",
        persona="my favorite food is {v} . | i could eat {v} every day . | i love eating {v} .",
        ask="what is your favorite food ? | what do you like to eat ? "
        "| what did you have for dinner ?",
        mention="i just had {v} for lunch . | i am craving {v} right now . "
        "| i made {v} last night .",
        statement="my favorite food is {v} . | i could eat {v} every single day . "
        "| i had {v} for dinner again . | nothing beats a plate of {v} .",
        followup="where do you get your favorite food ? | tell me more about your favorite food .",
    ),
    _slot(
        "job",
        "nurse teacher mechanic lawyer pilot plumber dentist librarian firefighter programmer "
        "farmer cashier barber carpenter journalist pharmacist veterinarian waiter banker "
        "scientist tailor doctor janitor lifeguard",
        persona="i work as a {v} . | i am a {v} by trade . | my job is being a {v} .",
        ask="what do you do for a living ? | what is your job ? | what kind of work do you do ?",
        mention="i work as a {v} myself . | i am training to be a {v} . | my dad was a {v} .",
        statement="i work as a {v} . | i have been a {v} for many years . "
        "| i am a {v} , it pays the bills . | being a {v} keeps me busy .",
        followup="do you like your job ? | how long have you done that job ? "
        "| tell me more about your work .",
    ),
    _slot(
        "place",
        "texas ohio alaska florida canada mexico france japan italy spain ireland brazil "
        "germany kenya india egypt norway chile peru greece australia vietnam scotland iceland",
        persona="i live in {v} . | i grew up in {v} . | my home is in {v} .",
        ask="where are you from ? | where do you live ? | where did you grow up ?",
        mention="i just got back from a trip to {v} . | i grew up in {v} . "
        "| my cousin lives in {v} .",
        statement="i live in {v} . | i grew up in {v} and never left . | i am from {v} . "
        "| home for me is {v} .",
        followup="do you like living there ? | what is it like where you live ? "
        "| tell me more about your home .",
    ),
    _slot(
        "music",
        "jazz rock country pop blues reggae metal classical folk punk opera disco techno salsa "
        "gospel soul funk bluegrass ska grunge polka rap indie swing",
        persona="i listen to {v} music . | {v} is my favorite kind of music . | i love {v} music .",
        ask="what kind of music do you like ? | what do you listen to ? | do you like music ?",
        mention="i have been listening to {v} all day . | i went to see some {v} last night . "
        "| my band plays {v} .",
        statement="i listen to {v} music all day . | {v} is my favorite kind of music . "
        "| i saw a live {v} show last week . | i can not live without {v} music .",
        followup="who is your favorite artist ? | tell me more about the music you like .",
    ),
    _slot(
        "family",  # values share words ("two", "sisters"): partly overlapping facts
        " ".join(
            f"{n}_{who}"
            for n in ("two", "three", "four", "five", "six", "seven")
            for who in ("sisters", "brothers", "nephews", "cousins")
        ),
        persona="i have {v} . | my family includes {v} . | i grew up around {v} .",
        ask="do you have a big family ? | tell me about your family . "
        "| are you close to your family ?",
        mention="i have {v} myself . | i am visiting my {v} this weekend . "
        "| i grew up around {v} .",
        statement="i have {v} . | i am visiting my {v} this weekend . "
        "| family is big for me , i have {v} . | my {v} keep me busy .",
        followup="are you close to them ? | tell me more about your family .",
    ),
    _slot(
        "color",
        "red blue green yellow purple pink black white gray teal maroon navy beige gold silver "
        "brown turquoise lavender magenta crimson ivory coral indigo violet",
        persona="my favorite color is {v} . | i paint everything {v} . | i always wear {v} .",
        ask="what is your favorite color ? | do you have a favorite color ?",
        mention="i just painted my room {v} . | my new car is {v} . | i always wear {v} .",
        statement="my favorite color is {v} . | i just painted my kitchen {v} . "
        "| i wear {v} almost every day . | everything i own is {v} .",
        followup="why do you like that color ? | tell me more about that color .",
    ),
)

GREETINGS = (
    "hi , how are you today ?",
    "hello ! how is your day going ?",
    "hey there , how are you doing ?",
    "good evening , how are you ?",
    "hi ! what are you up to ?",
)
OPEN_REPLIES = (
    "i am doing well , thanks .",
    "hi ! pretty good .",
    "hello , i am great .",
    "not bad at all .",
    "hey , doing fine .",
)
REACTIONS = ("", "that is cool .", "wow .", "sounds nice .", "i see .", "haha , nice .")
ACKS = ("oh nice .", "cool !", "that sounds fun .", "interesting .", "really ? neat .")
ANSWER_PREFIXES = ("", "oh ,", "well ,", "hmm ,")

PERSONA_SIZES = (4, 5)
ASK_PROBABILITY = 0.6  # of a non-opening, non-follow-up turn; the rest are mentions
MAX_CANDIDATES = 100

# the generator's arguments for the sample shipped in metanb/data/samples/
SAMPLE_ARGS = {"personas": 8, "dialogues_per_persona": 3, "candidates": 20, "seed": 0}
SAMPLE_FILE = "persona_chat_sample.txt"


def sample_path() -> Path:
    """The small ParlAI-format sample shipped with the package (:data:`SAMPLE_ARGS`)."""
    return Path(__file__).parent / "samples" / SAMPLE_FILE


def _value_index() -> dict[tuple[str, ...], tuple[str, str]]:
    index: dict[tuple[str, ...], tuple[str, str]] = {}
    for slot in SLOTS:
        for value in slot.values:
            index[tuple(value.split())] = (slot.name, value)
    return index


_VALUES = _value_index()
_LONGEST_VALUE = max(len(words) for words in _VALUES)


def attribute_values(text: str) -> set[tuple[str, str]]:
    """The ``(slot, value)`` facts a text states, found by the generator's value vocabulary.

    This is the persona knowledge an oracle (or a per-persona adapter) needs; the tests use it
    to measure how much the persona matters.
    """
    words = text.lower().split()
    found = set()
    for n in range(1, _LONGEST_VALUE + 1):
        for i in range(len(words) - n + 1):
            hit = _VALUES.get(tuple(words[i : i + n]))
            if hit is not None:
                found.add(hit)
    return found


def persona_attributes(persona: Sequence[str]) -> dict[str, str]:
    """Slot name -> value of a generated persona, read back from its sentences."""
    return dict(fact for sentence in persona for fact in attribute_values(sentence))


@dataclass(frozen=True)
class _Profile:
    sentences: tuple[str, ...]
    values: dict[int, str]  # slot index -> value


DISTRACTORS: tuple[str, ...] = ("same-slot", "random")


def generate_persona_chat(
    personas: int = 32,
    dialogues_per_persona: int = 4,
    candidates: int = 20,
    seed: int = 0,
    turns: int = 4,
    followup_rate: float = 0.1,
    distractors: str = "same-slot",
) -> list[Dialogue]:
    """Generate ``personas * dialogues_per_persona`` dialogues of ``turns`` examples each.

    Each example has ``candidates`` candidates (the true one at a random position). With
    ``distractors="same-slot"`` (up to 23 candidates) every distractor answers the same
    question as the true reply; beyond that, the extra ones talk about other slots. With
    ``"random"`` they are other personas' true replies (see the module docstring).
    Deterministic for given arguments.
    """
    _check_arguments(personas, dialogues_per_persona, candidates, turns, followup_rate)
    if distractors not in DISTRACTORS:
        raise MetanbError(f"distractors={distractors!r} must be one of {', '.join(DISTRACTORS)}")
    rng = random.Random(seed)
    profiles = _draw_profiles(rng, personas)
    dialogues = []
    for profile in profiles:
        for _ in range(dialogues_per_persona):
            examples = _Conversation(rng, profile, candidates, followup_rate).run(turns)
            dialogues.append(
                Dialogue(
                    persona=profile.sentences,
                    examples=examples,
                    source=f"generator(seed={seed})",
                    episode=len(dialogues),
                )
            )
    if distractors == "random":
        dialogues = _random_distractors(dialogues, candidates, seed)
    return dialogues


def _random_distractors(dialogues: list[Dialogue], candidates: int, seed: int
                        ) -> list[Dialogue]:
    """The same dialogues with each example's distractors replaced by true replies of other
    personas, drawn at random; none repeats the true reply or states a fact of the speaker's
    own persona (so the label stays right). Its own random stream: the dialogues are unchanged.
    """
    from metanb.seeding import derive_seed

    rng = random.Random(derive_seed(seed, "generator", "random-distractors"))
    pool = sorted({(d.persona, ex.response) for d in dialogues for ex in d.examples})
    facts = {reply: attribute_values(reply) for _, reply in pool}
    allowed: dict[tuple[str, ...], list[str]] = {}
    out = []
    for d in dialogues:
        if d.persona not in allowed:
            own = set(persona_attributes(d.persona).items())
            allowed[d.persona] = sorted({reply for persona, reply in pool
                                         if persona != d.persona and not facts[reply] & own})
        choices = allowed[d.persona]
        if len(choices) < candidates:
            raise MetanbError(f"candidates={candidates} needs more other personas' replies "
                              f"than {len(dialogues)} dialogues hold; generate more")
        examples = []
        for ex in d.examples:
            drawn = rng.sample(choices, candidates)  # one spare, in case it is the true reply
            cands = [c for c in drawn if c != ex.response][: candidates - 1]
            label = rng.randrange(candidates)
            cands.insert(label, ex.response)
            examples.append(Example(ex.history, tuple(cands), label))
        out.append(Dialogue(persona=d.persona, examples=examples, source=d.source,
                            episode=d.episode))
    return out


def _check_arguments(
    personas: int, dialogues: int, candidates: int, turns: int, followup_rate: float
) -> None:
    checks = (
        (personas >= 1, f"personas={personas} must be at least 1"),
        (dialogues >= 1, f"dialogues_per_persona={dialogues} must be at least 1"),
        (
            2 <= candidates <= MAX_CANDIDATES,
            f"candidates={candidates} must be between 2 and {MAX_CANDIDATES}",
        ),
        (turns >= 1, f"turns={turns} must be at least 1"),
        (0.0 <= followup_rate <= 1.0, f"followup_rate={followup_rate} must be in [0, 1]"),
    )
    for ok, message in checks:
        if not ok:
            raise MetanbError(message)


def _draw_profiles(rng: random.Random, count: int) -> list[_Profile]:
    """Distinct personas: 4-5 slots each, values drawn uniformly (so shared across personas)."""
    profiles: list[_Profile] = []
    seen: set[frozenset[tuple[int, str]]] = set()
    while len(profiles) < count:
        chosen = rng.sample(range(len(SLOTS)), rng.choice(PERSONA_SIZES))
        values = {s: rng.choice(SLOTS[s].values) for s in chosen}
        identity = frozenset(values.items())
        if identity in seen:
            continue
        seen.add(identity)
        sentences = tuple(rng.choice(SLOTS[s].persona).format(v=values[s]) for s in chosen)
        profiles.append(_Profile(sentences, values))
    return profiles


class _Conversation:
    """One dialogue of one persona, turn by turn (the state a turn needs to stay consistent)."""

    def __init__(
        self, rng: random.Random, profile: _Profile, candidates: int, followup_rate: float
    ) -> None:
        self.rng = rng
        self.profile = profile
        self.m = candidates
        self.followup_rate = followup_rate
        self.unused = list(profile.values)
        rng.shuffle(self.unused)
        self.stated: list[int] = []  # slots the speaker has talked about, in order
        self.said: dict[int, set[str]] = {}  # slot -> values anyone has said so far
        self.history: list[str] = []

    def run(self, turns: int) -> list[Example]:
        examples = []
        for turn in range(turns):
            examples.append(self._turn(first=turn == 0))
        return examples

    def _turn(self, first: bool) -> Example:
        rng = self.rng
        if first:
            kind, slot = "open", self.unused.pop(0)
        elif self.stated and (not self.unused or rng.random() < self.followup_rate):
            kind, slot = "followup", rng.choice(self.stated)
        else:
            kind = "ask" if rng.random() < ASK_PROBABILITY else "mention"
            slot = self.unused.pop(0)
        partner = self._partner_text(kind, slot)
        mine = self.profile.values[slot]
        if kind == "open":
            distractors = self._open_distractors()
        else:
            distractors = self._same_slot_distractors(slot)
        true_reply = self._reply(kind, slot, mine)
        cands = [self._reply(kind, s, v) for s, v in distractors]
        label = rng.randrange(len(cands) + 1)
        cands.insert(label, true_reply)
        self.history.append(partner)
        example = Example(tuple(self.history), tuple(cands), label)
        self.history.append(true_reply)
        self.stated.append(slot)
        self.said.setdefault(slot, set()).add(mine)
        return example

    def _partner_text(self, kind: str, slot: int) -> str:
        rng, spec = self.rng, SLOTS[slot]
        if kind == "open":
            return rng.choice(GREETINGS)
        if kind == "mention":
            taken = self.said.get(slot, set()) | {self.profile.values[slot]}
            value = rng.choice([v for v in spec.values if v not in taken])
            self.said.setdefault(slot, set()).add(value)
            body = rng.choice(spec.mention).format(v=value)
        else:
            body = rng.choice(spec.ask if kind == "ask" else spec.followup)
        return _join(rng.choice(REACTIONS), body)

    def _reply(self, kind: str, slot: int, value: str) -> str:
        prefixes = {"open": OPEN_REPLIES, "mention": ACKS}.get(kind, ANSWER_PREFIXES)
        statement = self.rng.choice(SLOTS[slot].statement).format(v=value)
        return _join(self.rng.choice(prefixes), statement)

    def _excluded(self, slot: int) -> set[str]:
        """Values no distractor may state: the speaker's own and any already in the history."""
        excluded = set(self.said.get(slot, set()))
        if slot in self.profile.values:
            excluded.add(self.profile.values[slot])
        return excluded

    def _same_slot_distractors(self, slot: int) -> list[tuple[int, str]]:
        excluded = self._excluded(slot)
        pool = [v for v in SLOTS[slot].values if v not in excluded]
        chosen = self.rng.sample(pool, min(self.m - 1, len(pool)))
        picks = [(slot, v) for v in chosen]
        if len(picks) < self.m - 1:
            picks += self._other_slot_values(self.m - 1 - len(picks), avoid_slot=slot)
        return picks

    def _open_distractors(self) -> list[tuple[int, str]]:
        return self._other_slot_values(self.m - 1, avoid_slot=None)

    def _other_slot_values(self, count: int, avoid_slot: int | None) -> list[tuple[int, str]]:
        pool = []
        for s, spec in enumerate(SLOTS):
            if s != avoid_slot:
                excluded = self._excluded(s)
                pool.extend((s, v) for v in spec.values if v not in excluded)
        return self.rng.sample(pool, count)


def _join(prefix: str, text: str) -> str:
    return f"{prefix} {text}" if prefix else text
