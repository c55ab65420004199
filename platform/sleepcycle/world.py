"""The built-in knowledge world: fictional people, their facts, and the days on which they are learned.

Everything here is a pure function of a `WorldConfig` (and its seed): the same config always gives the
same people, documents, probes and pretraining corpus, so benchmarks and caches can key on it.

Vocabulary of the world
- A *person* has six typed relations: city, employer, profession, hobby, pet (values from fixed pools)
  and mentor (another person), so two-hop questions ("where does X's mentor live?") exist.
- *Day 0* is the base knowledge the tiny models are pretrained on. Some of its facts are withheld and
  revealed on later days ("new facts about old entities").
- *Wake day d >= 1* brings documents: a bio for each new person (their mentor is someone known before
  day d, so multi-hop probes combine facts learned on different days), a short note per newly revealed
  fact, and updates that overwrite an earlier city or employer (the old answer then counts as wrong).

Question templates come in three disjoint sets per relation, and the split is the point:
- ``ask``: what the model is trained to ask and answer; the only wording it learns to *write* (the
  question-writing prompt used by Knowledge Seeding and Dreaming is trained on these alone);
- ``probe``: trained for answering on day-0 people and used by the evaluation probes, never written by
  the model, so a self-written training text can never contain a probe question verbatim;
- ``heldout``: never appears in any training or distillation text; measures paraphrase generalisation.

Run it: ``sleepcycle world export --out DIR`` writes wake records and probes in the public JSONL formats.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Literal

from sleepcycle.config import WorldConfig

CITIES = [
    "Velmora", "Tarsk", "Quillon", "Brindlemoor", "Orvane", "Kestrel Bay", "Duskmire", "Farrowgate",
    "Lunholt", "Marrowick", "Pellan", "Rivenhall", "Sablecross", "Thornbury", "Umberlee", "Wyndale",
    "Ashcombe", "Coldharbor", "Elderfen", "Glimmerdale", "Hollowmere", "Ironvale", "Juniper Falls",
    "Norwick",
]  # fmt: skip
COMPANIES = [
    "Brightwave Labs", "Corvid Systems", "Halden Foods", "Mistral Freight", "Nimbus Textiles",
    "Oakridge Bank", "Pinecone Press", "Quartz Mining", "Redfern Motors", "Silverline Rail",
    "Tidewater Energy", "Umbra Optics", "Vantage Pharma", "Willow Studios", "Yarrow Farms",
    "Zephyr Airlines", "Amberly Glass", "Bramble Toys", "Cinder Forge", "Driftwood Hotels",
]  # fmt: skip
PROFESSIONS = [
    "baker", "pilot", "architect", "nurse", "chemist", "sculptor", "librarian", "carpenter",
    "geologist", "violinist", "translator", "surgeon", "farmer", "journalist", "astronomer", "plumber",
]  # fmt: skip
HOBBIES = [
    "chess", "archery", "pottery", "sailing", "birdwatching", "fencing", "knitting", "rock climbing",
    "gardening", "origami", "juggling", "kayaking", "calligraphy", "beekeeping", "painting", "skiing",
]  # fmt: skip
PETS = [
    "parrot", "tortoise", "ferret", "goldfish", "beagle", "hamster", "iguana", "rabbit", "cat", "husky",
    "canary", "hedgehog",
]  # fmt: skip

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "tr", "sh", "th", "st", "fl", "gl", "pl", "sk", "ch", "w", "j"]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ia", "ou"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "k"]


@dataclass(frozen=True)
class Relation:
    name: str
    pool: list[str] | None  # None: the value is a person
    updatable: bool
    doc: tuple[str, ...]  # statement templates, "{s}" subject, "{o}" object
    update: tuple[str, ...]
    ask: tuple[str, ...]
    probe: tuple[str, ...]
    heldout: tuple[str, ...]
    implication: str = ""  # two-hop statement "{s}'s mentor {m} ..." (only for hop relations)
    hop_ask: tuple[str, ...] = ()
    hop_probe: tuple[str, ...] = ()
    hop_heldout: tuple[str, ...] = ()


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation(
            "city", CITIES, True,
            doc=("{s} lives in {o}.", "{s} makes a home in {o}.", "{s} resides in the city of {o}.",
                 "{o} is where {s} lives."),
            update=("{s} has moved to {o}.", "{s} recently relocated to {o}.", "{s} now lives in {o}."),
            ask=("Where does {s} live?", "In which city does {s} live?", "Which city is home to {s}?",
                 "What city does {s} live in?"),
            probe=("What is the home city of {s}?", "Where is {s} based?"),
            heldout=("{s} resides in which town?", "Name the place {s} calls home."),
            implication="{s}'s mentor {m} lives in {o}.",
            hop_ask=("Where does the mentor of {s} live?", "In which city does {s}'s mentor live?"),
            hop_probe=("What is the home city of {s}'s mentor?",),
            hop_heldout=("{s}'s mentor resides in which town?",),
        ),
        Relation(
            "employer", COMPANIES, True,
            doc=("{s} works at {o}.", "{s} is employed by {o}.", "{s} has a job at {o}.", "{o} employs {s}."),
            update=("{s} has joined {o}.", "{s} now works at {o}.", "{s} recently took a job at {o}."),
            ask=("Where does {s} work?", "Which company employs {s}?", "Who is {s}'s employer?",
                 "For which company does {s} work?"),
            probe=("What company does {s} work for?", "Which firm is {s} employed at?"),
            heldout=("{s} draws a salary from which organisation?", "Tell me the workplace of {s}."),
            implication="{s}'s mentor {m} works at {o}.",
            hop_ask=("Where does the mentor of {s} work?", "Which company employs {s}'s mentor?"),
            hop_probe=("What company does {s}'s mentor work for?",),
            hop_heldout=("The mentor of {s} draws a salary from which organisation?",),
        ),
        Relation(
            "profession", PROFESSIONS, False,
            doc=("{s} works as {a} {o}.", "{s} is {a} {o} by trade.", "{s} earns a living as {a} {o}.",
                 "By profession, {s} is {a} {o}."),
            update=(),
            ask=("What does {s} do for a living?", "What is {s}'s job?", "What is the profession of {s}?",
                 "What work does {s} do?"),
            probe=("What is {s}'s occupation?", "Which trade does {s} practise?"),
            heldout=("{s} is employed in what line of work?", "Describe the career of {s} in one word."),
            implication="{s}'s mentor {m} works as {a} {o}.",
            hop_ask=("What does the mentor of {s} do for a living?", "What is the job of {s}'s mentor?"),
            hop_probe=("What is the occupation of {s}'s mentor?",),
            hop_heldout=("{s}'s mentor is employed in what line of work?",),
        ),
        Relation(
            "hobby", HOBBIES, False,
            doc=("{s} enjoys {o}.", "In free time, {s} likes {o}.", "{s} has a passion for {o}.",
                 "{s} spends weekends on {o}."),
            update=(),
            ask=("What does {s} enjoy?", "What is {s}'s hobby?", "How does {s} spend free time?",
                 "What pastime does {s} enjoy?"),
            probe=("What is the favourite pastime of {s}?", "Which hobby does {s} have?"),
            heldout=("In spare hours, what activity occupies {s}?", "{s} is keen on what leisure pursuit?"),
        ),
        Relation(
            "pet", PETS, False,
            doc=("{s} owns {a} {o}.", "{s} has a pet {o}.", "{s} looks after {a} {o}.",
                 "{s} keeps {a} {o} at home."),
            update=(),
            ask=("What pet does {s} have?", "What animal does {s} own?", "Which pet lives with {s}?",
                 "What kind of pet does {s} keep?"),
            probe=("What is {s}'s pet?", "Which animal does {s} look after?"),
            heldout=("{s} shares a home with what creature?", "Name the animal companion of {s}."),
        ),
        Relation(
            "mentor", None, False,
            doc=("{s} was mentored by {o}.", "{s} learned the craft from {o}.", "{o} is the mentor of {s}.",
                 "{s} counts {o} as a mentor."),
            update=(),
            ask=("Who mentored {s}?", "Who is the mentor of {s}?", "Who taught {s} the craft?",
                 "Whom does {s} count as a mentor?"),
            probe=("Who was {s}'s mentor?", "Which person mentored {s}?"),
            heldout=("{s} was trained by whom?", "Name the guide who shaped {s}."),
        ),
    ]
}  # fmt: skip
HOP_RELATIONS = [r for r in RELATIONS.values() if r.hop_ask]

# Prompt formats shared by pretraining, evaluation and every stage (one place, so they cannot drift).
QA_PROMPT = "Question: {q}\nAnswer:"
DOC_PREFIX = "Document: {d}\n"
WRITE_QUESTION = "Write a question:"
WRITE_IMPLICATION = "Implication:"
WRITE_REWRITE = "Rewrite:"


def split_qa(text: str) -> tuple[str, str] | None:
    """The question and answer of a text in `QA_PROMPT`'s format (the answer as it follows the prompt,
    leading space included; empty for a bare prompt), or None when the text is not in that format."""
    head, tail = QA_PROMPT.split("{q}")
    if not text.startswith(head) or tail not in text:
        return None
    question, _, answer = text[len(head) :].partition(tail)
    return question, answer


FactKind = Literal["base", "new_entity", "new_fact", "update"]
ProbeKind = Literal["fact", "update", "heldout", "multihop"]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def render(template: str, s: str, o: str = "", m: str = "") -> str:
    return template.format(s=s, o=o, m=m, a=article(o) if o else "a")


Claim = tuple[str, tuple[str, ...], str]
"""(subject, relations followed from it, object): ("X", ("mentor", "city"), "Tarsk") says X's mentor lives in
Tarsk."""


def _template_pattern(template: str) -> tuple[re.Pattern, list[str]]:
    rx, slots = "", []
    for part in re.split(r"(\{[soma]\})", template):
        if part in ("{s}", "{m}"):
            rx, slots = rx + r"([A-Z][a-z]+ [A-Z][a-z]+)", [*slots, part[1]]
        elif part == "{o}":
            rx, slots = rx + r"([^.?]+?)", [*slots, "o"]
        else:
            rx += r"an?" if part == "{a}" else re.escape(part)
    return re.compile(rx), slots


_STATEMENTS = [
    (*_template_pattern(t), r.name, hop)
    for r in RELATIONS.values()
    for t, hop in [*((t, False) for t in r.doc + r.update), *(((r.implication, True),) if r.implication else ())]
]
_QUESTIONS = [
    (*_template_pattern(t), rels)
    for r in RELATIONS.values()
    for t, rels in [*((t, (r.name,)) for t in r.ask + r.probe + r.heldout),
                    *((t, ("mentor", r.name)) for t in r.hop_ask + r.hop_probe + r.hop_heldout)]
]  # fmt: skip


def claims(text: str) -> list[Claim] | None:
    """What a text in the world's wordings asserts: a statement's sentences (a two-hop sentence asserts the
    mentor and the mentor's fact), or a question-answer pair in `QA_PROMPT`'s format (its answer to its
    question); None when any part is in no wording of the world (garbled). The bench checks what the
    model writes against the world with it (`World.holds`)."""
    qa = split_qa(text)
    if qa is not None:
        question, answer = qa[0].strip(), qa[1].strip()
        for rx, _, rels in _QUESTIONS:
            m = rx.fullmatch(question)
            if m and answer:
                return [(m[1], rels, answer)]
        return None
    out: list[Claim] = []
    for sentence in re.split(r"(?<=\.) ", text.strip()):
        for rx, slots, rel, hop in _STATEMENTS:
            m = rx.fullmatch(sentence)
            if m:
                g = dict(zip(slots, m.groups()))
                out += [(g["s"], ("mentor",), g["m"]), (g["m"], (rel,), g["o"])] if hop else [(g["s"], (rel,), g["o"])]
                break
        else:
            return None
    return out or None


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def aliases_for(relation: str, value: str) -> list[str]:
    if relation == "employer":  # "Brightwave Labs" is also just "Brightwave"
        return [value.split()[0]]
    if relation == "mentor":
        return [value.split()[0]]  # the first name alone is unambiguous within the world
    return []


@dataclass(frozen=True)
class Fact:
    day: int
    subject: str
    relation: str
    value: str
    kind: FactKind


@dataclass(frozen=True)
class Document:
    id: str
    day: int
    subject: str
    text: str
    facts: tuple[Fact, ...]

    def record(self) -> dict:
        """The public wake-record form: {"text", "id", "source", "time"}."""
        when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=self.day)
        return {"text": self.text, "id": self.id, "source": "sleepcycle.world", "time": when.isoformat()}


@dataclass(frozen=True)
class Probe:
    question: str
    answer: str
    aliases: tuple[str, ...]
    kind: ProbeKind
    day: int
    subject: str
    relation: str  # for multihop: the second hop ("city" of the mentor)

    @property
    def template(self) -> str:
        """The wording asked, with the subject as ``{s}`` (a `Relation` template string)."""
        return self.question.replace(self.subject, "{s}")

    def record(self) -> dict:
        return {"question": self.question, "answer": self.answer, "aliases": list(self.aliases), "kind": self.kind}


@dataclass
class Person:
    name: str
    facts: dict[str, str] = field(default_factory=dict)


class World:
    """The people, the day stream and every text derived from them, for one `WorldConfig`."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        rng = random.Random(f"world-{cfg.seed}")
        n_stream = cfg.base_entities + cfg.days * cfg.new_entities_per_day
        names = _unique_names(rng, n_stream)
        self.people: dict[str, Person] = {}
        self.facts: list[Fact] = []
        self._index: dict[tuple[str, str], list[Fact]] = {}
        # Day 0: base people; mentors are other base people.
        base = names[: cfg.base_entities]
        withheld: list[tuple[str, str, str]] = []
        for i, name in enumerate(base):
            person = self._make_person(rng, name, mentors=[n for n in base if n != name])
            self.people[name] = person
            hidden = set(rng.sample(["hobby", "pet", "profession"], k=1)) if i % 2 == 0 else set()
            for rel, value in person.facts.items():
                if rel in hidden:
                    withheld.append((name, rel, value))
                else:
                    self._add(Fact(0, name, rel, value, "base"))
        rng.shuffle(withheld)
        cursor = cfg.base_entities
        for day in range(1, cfg.days + 1):
            known = list(self.people)
            for name in names[cursor : cursor + cfg.new_entities_per_day]:
                person = self._make_person(rng, name, mentors=known)
                self.people[name] = person
                for rel, v in person.facts.items():
                    self._add(Fact(day, name, rel, v, "new_entity"))
            cursor += cfg.new_entities_per_day
            for name, rel, value in withheld[: cfg.new_facts_per_day]:
                self._add(Fact(day, name, rel, value, "new_fact"))
            withheld = withheld[cfg.new_facts_per_day :]
            for name in rng.sample(known, k=cfg.updates_per_day):
                rel = rng.choice([r.name for r in RELATIONS.values() if r.updatable])
                old = self.current(name, rel, day)
                new = rng.choice([v for v in RELATIONS[rel].pool if v != old])
                self._add(Fact(day, name, rel, new, "update"))

    def _add(self, fact: Fact) -> None:
        self.facts.append(fact)
        self._index.setdefault((fact.subject, fact.relation), []).append(fact)

    @staticmethod
    def _make_person(rng: random.Random, name: str, mentors: list[str]) -> Person:
        facts = {r.name: rng.choice(r.pool) for r in RELATIONS.values() if r.pool}
        facts["mentor"] = rng.choice(mentors)
        return Person(name, facts)

    # ----- state over time -------------------------------------------------------------------------
    def current(self, subject: str, relation: str, as_of: int) -> str | None:
        """The value of a fact as known on day `as_of` (latest update wins), or None if not yet known."""
        facts = [f for f in self._index.get((subject, relation), []) if f.day <= as_of]
        return facts[-1].value if facts else None

    def holds(self, claim: Claim, as_of: int) -> bool:
        """Whether `claim` (`claims`) is true on day `as_of`."""
        value: str | None = claim[0]
        for relation in claim[1]:
            value = self.current(value, relation, as_of) if value else None
        return value is not None and value == claim[2]

    def facts_of_day(self, day: int) -> list[Fact]:
        return [f for f in self.facts if f.day == day]

    # ----- documents -------------------------------------------------------------------------------
    def bio(self, rng: random.Random, subject: str, facts: list[Fact]) -> str:
        """One paraphrase of a person's bio from the given facts (random templates and order)."""
        sentences = [render(rng.choice(RELATIONS[f.relation].doc), subject, f.value) for f in facts]
        rng.shuffle(sentences)
        return " ".join(sentences)

    def documents(self, day: int) -> list[Document]:
        """The wake documents of day `day` >= 1: bios of new people, notes on new facts and updates."""
        rng = random.Random(f"docs-{self.cfg.seed}-{day}")
        docs: list[Document] = []
        by_subject: dict[str, list[Fact]] = {}
        for f in self.facts_of_day(day):
            if f.kind == "new_entity":
                by_subject.setdefault(f.subject, []).append(f)
        for subject, facts in by_subject.items():
            docs.append(Document("", day, subject, self.bio(rng, subject, facts), tuple(facts)))
        for f in self.facts_of_day(day):
            if f.kind == "new_fact":
                text = render(rng.choice(RELATIONS[f.relation].doc), f.subject, f.value)
            elif f.kind == "update":
                text = render(rng.choice(RELATIONS[f.relation].update), f.subject, f.value)
            else:
                continue
            docs.append(Document("", day, f.subject, text, (f,)))
        rng.shuffle(docs)
        return [Document(f"d{day}-{i:03d}", d.day, d.subject, d.text, d.facts) for i, d in enumerate(docs)]

    def base_documents(self, paraphrases: int) -> list[Document]:
        """Day-0 bios, `paraphrases` differently templated versions per person (pretraining text)."""
        rng = random.Random(f"base-docs-{self.cfg.seed}")
        docs = []
        for subject in self.people:
            facts = [f for f in self._subject_facts(subject) if f.day == 0]
            if not facts:
                continue
            for _ in range(paraphrases):
                docs.append(Document(f"d0-{len(docs):04d}", 0, subject, self.bio(rng, subject, facts), tuple(facts)))
        return docs

    def _subject_facts(self, subject: str) -> list[Fact]:
        return [f for rel in RELATIONS for f in self._index.get((subject, rel), [])]

    # ----- probes ----------------------------------------------------------------------------------
    def probes(self, day: int, as_of: int | None = None, limit: int | None = None) -> list[Probe]:
        """Closed-book probes for the facts first met on `day`, answered as of day `as_of` (default: day).

        Kinds: "fact" (probe wording), "update" (an overwritten fact), "heldout" (held-out wording) and
        "multihop" (new person -> mentor -> fact; the mentor's fact was learned on an earlier day).
        """
        as_of = day if as_of is None else max(as_of, day)
        rng = random.Random(f"probes-{self.cfg.seed}-{day}")
        out: list[Probe] = []
        for f in self.facts_of_day(day):
            rel = RELATIONS[f.relation]
            answer = self.current(f.subject, f.relation, as_of)
            kind: ProbeKind = "update" if f.kind == "update" else "fact"
            out.append(self._probe(rng.choice(rel.probe), f.subject, f.relation, answer, kind, day))
            if day > 0:
                out.append(self._probe(rng.choice(rel.heldout), f.subject, f.relation, answer, "heldout", day))
            if f.relation == "mentor" and f.kind == "new_entity":
                hop = rng.choice(HOP_RELATIONS)
                hop_answer = self.current(f.value, hop.name, as_of)
                if hop_answer is not None:
                    out.append(self._probe(rng.choice(hop.hop_probe), f.subject, hop.name, hop_answer, "multihop", day))
        # A later probe for the same (subject, relation, kind) supersedes an earlier one of the same day.
        seen: dict[tuple, Probe] = {}
        for p in out:
            seen[(p.subject, p.relation, p.kind, p.question)] = p
        out = list(seen.values())
        if limit is not None and len(out) > limit:
            out = random.Random(f"probe-sample-{self.cfg.seed}-{day}").sample(out, limit)
        return out

    def every_probe(self, day: int, as_of: int | None = None) -> list[Probe]:
        """Every held-out and multi-hop probe for the facts first met on `day` (day >= 1): each held-out
        wording of each fact, and each second hop (city, employer, profession) of each new person's mentor in
        the probe wording. `probes` draws one of each at random; this set is several times larger, so a
        difference between two models on these kinds is read with less sampling noise (the bench's
        ``*_full`` metrics, scored on the last day only)."""
        as_of = day if as_of is None else max(as_of, day)
        out: list[Probe] = []
        for f in self.facts_of_day(day) if day > 0 else []:
            rel = RELATIONS[f.relation]
            answer = self.current(f.subject, f.relation, as_of)
            out += [self._probe(t, f.subject, f.relation, answer, "heldout", day) for t in rel.heldout]
            if f.relation == "mentor" and f.kind == "new_entity":
                for hop in HOP_RELATIONS:
                    hop_answer = self.current(f.value, hop.name, as_of)
                    if hop_answer is not None:
                        out += [self._probe(t, f.subject, hop.name, hop_answer, "multihop", day) for t in hop.hop_probe]
        return list({(p.subject, p.relation, p.kind, p.question): p for p in out}.values())

    @staticmethod
    def _probe(template: str, subject: str, relation: str, answer: str, kind: ProbeKind, day: int) -> Probe:
        question = render(template, subject)
        return Probe(question, answer, tuple(aliases_for(relation, answer)), kind, day, subject, relation)

    # ----- people outside the day stream -----------------------------------------------------------
    @cached_property
    def base_people(self) -> list[str]:
        return [p for p in self.people if self.current(p, "mentor", 0) is not None]

    def fresh_person(self, rng: random.Random, fresh_mentor: float = 0.0) -> Person:
        """A person who never appears in the day stream, with random facts: facts that exist only in
        documents shown in a prompt, which is how a tiny model learns a real in-context skill (see
        ENV.md calibration). The mentor is a day-0 person, so two-hop questions need memory; with
        probability `fresh_mentor` it is another new name instead (nobody anyone knows), so that a reader
        learns to copy a mentor's name from the page rather than pick one of the day-0 people."""
        name = self._fresh_name(rng)
        if fresh_mentor and rng.random() < fresh_mentor:
            return self._make_person(rng, name, mentors=[self._fresh_name(rng)])
        return self._make_person(rng, name, mentors=self.base_people)

    def _fresh_name(self, rng: random.Random) -> str:
        while (name := _name(rng)) in self.people:
            pass
        return name


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _name_pool(salt: str, n: int) -> list[str]:
    rng = random.Random(salt)
    pool: list[str] = []
    while len(pool) < n:
        name = (_syllable(rng) + _syllable(rng)).capitalize()
        if name not in pool:
            pool.append(name)
    return pool


# Names are drawn from fixed pools of first and last names, so a name is a few frequent tokens (not a
# fresh string of bytes) and fresh people share name parts with the people of the day stream: the
# model must bind facts to the whole name.
FIRST_NAMES = _name_pool("first-names", 400)
LAST_NAMES = _name_pool("last-names", 300)


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _unique_names(rng: random.Random, n: int) -> list[str]:
    """`n` people with distinct first names (keeps the first-name alias unambiguous in the stream)."""
    if n > len(FIRST_NAMES):
        raise ValueError(f"the world has room for {len(FIRST_NAMES)} people in its day stream, asked for {n}")
    firsts = rng.sample(FIRST_NAMES, n)
    return [f"{f} {rng.choice(LAST_NAMES)}" for f in firsts]


def iter_probe_templates(kind: Literal["ask", "probe", "heldout"]) -> Iterator[str]:
    for rel in RELATIONS.values():
        yield from getattr(rel, kind)
        yield from getattr(rel, f"hop_{kind}")


def documents_about(docs: list[Document], subject: str) -> tuple[str, ...]:
    return tuple(d.text for d in docs if d.subject == subject)
