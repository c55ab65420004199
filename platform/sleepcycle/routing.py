"""[ours] Entity-keyed expert routing: which level-1 experts answer a prompt. Not in the paper.

The paper keeps every expert switched on. On the built-in bench most of what a later expert breaks is
what an earlier one taught: a question about a person learned on day 2 is answered by the day-2 champion
at 0.81 and by the day-5 champion at 0.40, although the day-2 expert itself never changes (seed 4,
bench/README.md). Each expert is trained as the newest expert on top of the older ones, so the model as
it stood right after learning a thing is exactly the *prefix* of experts up to the one that learned it.

A router needs no labels for that: each cycle stores the entities its wake snapshot named (the expert's
*keys*, runs of capitalised words, `entity_keys`). A prompt that names an entity is answered with the
experts up to the newest one whose snapshot named any entity in it; a prompt that names none of them
gets every expert, as without routing. Facts stay in the weights; the keys only say which weights.

    router = Router.from_state(read_state(checkpoint))   # keys of the active experts, in order
    router.route("Question: Where does Jouvo Vefla live?\\nAnswer:")   # ["e00", "e01"], or None: all

    answerer, tok = RoutedModel.from_config(checkpoint, cfg)   # what evaluation and the gate use
    acc, hits = routed_accuracy(answerer, tok, questions)

The base is keyed the same way: by the entities its pretraining corpus named (``base_keys``, which
`sleepcycle.pretrain` writes beside the weights), and after a deep sleep also by the keys of the experts
merged into it. A prompt that names a base key has the base alone, without the level's experts, among its
candidates (the only one when it names no expert's key).

What it does not cover (docs/method.md): knowledge not tied to a named entity (it always gets every
expert), entities a writer spells differently from the snapshot, and the merged level itself, which
answers its own entities with all of its experts at once (a deep sleep that kept the prefixes would have
to distil the routed level into the base).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle import models
from sleepcycle.evaluate import Question, accuracy, answers, is_correct, scored_answers
from sleepcycle.experts import ExpertBank, load_checkpoint
from sleepcycle.world import split_qa

NAME_RUN = re.compile(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*")
"""A run of capitalised words: how the keys, and `seed.grounded`'s check of written questions, find names."""

_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|\"\s*)$")


def _clean(run: str) -> str:
    return re.sub(r"'s$", "", run.strip())


def entity_keys(texts: Iterable[str]) -> list[str]:
    """The entities that `texts` name: runs of capitalised words, a possessive 's dropped. A single
    capitalised word counts only where it also occurs inside a sentence, so that sentence openers ("In",
    "By", "The") are not keys; runs of two or more words always count. Sorted, distinct."""
    keys: set[str] = set()
    inside: set[str] = set()  # lone words seen inside a sentence (an opener elsewhere counts then too)
    for text in texts:
        for m in NAME_RUN.finditer(text):
            words = _clean(m.group()).split()
            at_start = bool(_SENTENCE_START.search(text[: m.start()]))
            if at_start and len(words) > 1 and words[0] in _OPENERS:
                words, at_start = words[1:], False
            run = " ".join(words)
            if len(run) < 3:
                continue
            if len(words) > 1:
                keys.add(run)
            elif not at_start:
                inside.add(run)
    keys |= inside
    return sorted(keys)


def subject_keys(texts: Iterable[str]) -> list[str]:
    """The entities that `texts` are *about*: in each text, the keys it names the most times (all of them
    on a tie). A bio names its person in every sentence and its person's mentor once; a one-line note
    ("Jouvo Vefla moved to Thornbury.") names both once, and both count. Sorted, distinct."""
    out: set[str] = set()
    for text in texts:
        counts = {k: _count(text, k) for k in entity_keys([text])}
        top = max(counts.values(), default=0)
        out.update(k for k, n in counts.items() if n == top and n > 0)
    return sorted(out)


def _mention(key: str) -> re.Pattern:
    """`key` as a name of its own in running text: not inside a longer name or word."""
    return re.compile(r"(?<![\w'-])" + re.escape(key) + r"(?![\w-]|\s+[A-Z])")


def _count(text: str, key: str) -> int:
    """How often `text` names `key`."""
    return len(_mention(key).findall(text))


_OPENERS = frozenset(
    "A An The In On At By For From With Of To And But Or As If When While After Before Since Question Answer "
    "Document Rewrite Implication Write What Which Who Whom Whose Where How Why Name Tell Describe".split()
)
"""Words that open a sentence or a prompt field in front of a name ("In Thornbury ...", "Question: Who
...?"): dropped from the front of a capitalised run so that the rest can still be a key."""


def self_confidence(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], limit: int = 64, **kwargs
) -> float | None:
    """How sure `model` is of what it learnt: the median mean token log-probability of its greedy answers
    (`evaluate.scored_answers`) to the first `limit` questions among `texts` (training texts in the
    `QA_PROMPT` format; the others are skipped). None when there is none. The reference that
    ``routing_choice=calibrated`` measures each route's answer against."""
    asked = [Question(qa[0].strip(), qa[1].strip()) for qa in map(split_qa, texts) if qa and qa[0].strip()]
    if not asked:
        return None
    return float(statistics.median(score for _, score in scored_answers(model, tokenizer, asked[:limit], **kwargs)))


@dataclass(frozen=True)
class Router:
    """The active experts in activation order, each with the entities its snapshot named."""

    experts: tuple[tuple[str, frozenset[str]], ...]
    base: frozenset[str] = frozenset()
    """What the base alone may answer, as it stood before any of the level's experts: the entities its
    pretraining corpus named (``base_keys`` in sleep.json, written by `sleepcycle.pretrain`) and the keys
    of experts a deep sleep merged into it (the base is the merged level, the prefix of every expert of
    its time)."""
    confidence: tuple[float | None, ...] = ()
    """Per expert, how sure its route (the prefix up to it) is of what it learnt: the median mean token
    log-probability of its greedy answers to the questions it trained on (`self_confidence`); None where
    a checkpoint did not store one."""
    base_confidence: float | None = None
    """The same for the base alone, on questions of its pretraining corpus (or, after a deep sleep, the
    merged level's)."""

    @classmethod
    def from_state(cls, state: dict, keys: str = "names") -> Router:
        """From a checkpoint's sleep.json: the active slots, keyed by the newest history entry of each
        slot since the last deep sleep (a slot reused after a deep sleep holds a new expert); the entries
        before it, and the ``base_keys`` of the pretraining corpus, key the base. `keys`
        (`distill.routing_keys`): ``names``, every entity a snapshot named, or ``subjects``, the ones its
        documents were about (`subject_keys`; entries written before they were stored fall back to names)."""
        if keys not in ("names", "subjects"):
            raise ValueError(f"unknown routing keys {keys!r} (names or subjects)")
        field_, base_field = ("keys", "base_keys") if keys == "names" else ("subjects", "base_subjects")
        active = list(state.get("active", []))
        last_deep = max((d.get("cycle", 0) for d in state.get("deep_sleeps", [])), default=-1)
        by_slot: dict[str, frozenset[str]] = {}
        sure: dict[str, float | None] = {}
        base: set[str] = set(state.get(base_field, state.get("base_keys", ())))
        for h in state.get("history", []):
            named = h.get(field_, h.get("keys", ()))
            if h.get("expert") in active and h.get("cycle", 0) >= last_deep:
                by_slot[h["expert"]] = frozenset(named)
                sure[h["expert"]] = h.get("confidence")
            elif h.get("cycle", 0) < last_deep:
                base.update(named)
        return cls(
            tuple((slot, by_slot.get(slot, frozenset())) for slot in active),
            frozenset(base),
            tuple(sure.get(slot) for slot in active),
            state.get("base_confidence"),
        )

    def reference(self, route: tuple[str, ...] | None) -> float | None:
        """How sure `route` is of what it learnt (`confidence`): the base's for ``()``, else its newest
        expert's."""
        if route == ():
            return self.base_confidence
        if not self.confidence:
            return None
        return self.confidence[-1 if route is None else len(route) - 1]

    def candidates(self, prompt: str) -> list[tuple[str, ...] | None]:
        """Every route that may have learnt what `prompt` asks, oldest first: the prefix of experts up to each
        expert whose keys it names (None: all of them), led by the base alone (``()``) when it names keys
        merged into the base; ``[None]`` when it names no key."""
        if not self.experts:
            return [None]
        named = set(entity_keys([prompt]))
        n = len(self.experts)
        out: list[tuple[str, ...] | None] = [()] if any(_names(prompt, named, k) for k in self.base) else []
        for i, (_, keys) in enumerate(self.experts):
            if keys and any(_names(prompt, named, k) for k in keys):
                out.append(None if i == n - 1 else tuple(slot for slot, _ in self.experts[: i + 1]))
        return out or [None]

    def route(self, prompt: str) -> list[str] | None:
        """The newest candidate route: the experts up to the newest whose keys `prompt` names, none (the
        base alone) when it names only keys merged into the base, or None (all of them) when it names no key."""
        newest = self.candidates(prompt)[-1]
        return None if newest is None else list(newest)


def _names(prompt: str, named: set[str], key: str) -> bool:
    """Whether `prompt` names `key`: as one of its own entity runs, or inside a longer run ("Jouvo Vefla"
    in "Jouvo Vefla Trasdo" does not count; "Jouvo Vefla" in "Jouvo Vefla's mentor" does)."""
    if key in named:
        return True
    return _mention(key).search(prompt) is not None


CHOICES = ("confidence", "calibrated", "newest")


@dataclass
class RoutedModel:
    """A checkpoint that answers through its router: `all` is every expert merged (what the paper serves);
    each other route is merged from `bank` on first use and kept (one model copy per route: at most one per
    active expert, ~13 MB each on the tiny models; a large model would run the experts unmerged instead)."""

    all: PreTrainedModel
    router: Router = field(default_factory=lambda: Router(()))
    bank: ExpertBank | None = None
    choice: str = "calibrated"
    """Among a question's candidate routes: the answer its route is most confident in (``confidence``), most
    confident in relative to how sure the route is of what it learnt (``calibrated``), or the newest."""
    margin: float = 0.0
    """With confidence or calibrated: how much surer (mean log-probability, nats a token) an older route
    must be to answer instead of a newer one."""
    _merged: dict[tuple[str, ...], PreTrainedModel] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls, path: Path, routing: str = "entity", choice: str = "calibrated", keys: str = "subjects"
    ) -> tuple[RoutedModel, PreTrainedTokenizerBase]:
        """A checkpoint directory (experts beside a base, or a plain model, which routes nothing).
        ``routing="all"`` gives every question every expert, without keeping the bank; `choice` is
        `distill.routing_choice`, `keys` `distill.routing_keys`."""
        if routing not in ("entity", "all"):
            raise ValueError(f"unknown routing {routing!r} (entity or all)")
        if choice not in CHOICES:
            raise ValueError(f"unknown routing choice {choice!r} ({', '.join(CHOICES)})")
        path = Path(path)
        if not (path / "base").is_dir():
            model, tok = models.load(path)
            return cls(model), tok
        bank, tok, state = load_checkpoint(path)
        merged = bank.merged().eval()
        if routing == "all" or not bank.active:
            return cls(merged), tok
        return cls(merged, Router.from_state(state, keys), bank, choice), tok

    @classmethod
    def from_config(cls, path: Path, cfg) -> tuple[RoutedModel, PreTrainedTokenizerBase]:
        """`load` as `cfg.distill` (`routing`, `routing_choice`, `routing_keys`) says."""
        dc = cfg.distill
        answerer, tok = cls.load(path, dc.routing, dc.routing_choice, dc.routing_keys)
        answerer.margin = dc.routing_margin
        return answerer, tok

    @property
    def routes(self) -> bool:
        """Whether any question can get fewer than every expert."""
        return self.bank is not None and (len(self.router.experts) > 1 or bool(self.router.base))

    def model(self, route: Sequence[str] | None) -> PreTrainedModel:
        if route is None or self.bank is None:
            return self.all
        key = tuple(route)
        if key not in self._merged:
            with self.bank.using(list(key)):
                self._merged[key] = self.bank.merged().eval()
        return self._merged[key]


def routed_accuracy(
    answerer: RoutedModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question], **kwargs
) -> tuple[float, list[bool]]:
    """`evaluate.accuracy` with each question answered through its routes (routed by the question alone:
    documents in a prompt do not change the route). With ``choice="confidence"`` a question with several
    candidate routes gets the answer that its route gives with the highest mean token log-probability;
    ``"calibrated"`` takes that log-probability less the route's `Router.reference` (the base, trained
    longest, is surest of everything, an old value an update replaced included); with ``"newest"`` the
    newest route answers. Same return: the fraction right, per-question hits."""
    if not questions:
        return float("nan"), []
    if not answerer.routes:
        return accuracy(answerer.all, tokenizer, questions, **kwargs)
    cands = [answerer.router.candidates(q.question) for q in questions]
    if answerer.choice == "newest":
        cands = [c[-1:] for c in cands]
    answered: dict[tuple[int, tuple[str, ...] | None], tuple[str, float]] = {}
    for route in dict.fromkeys(r for c in cands for r in c):
        idx = [i for i, c in enumerate(cands) if route in c]
        asked, model = [questions[i] for i in idx], answerer.model(route)
        if any(len(cands[i]) > 1 for i in idx):
            got = scored_answers(model, tokenizer, asked, **kwargs)
        else:  # no question here has another candidate to weigh: the answer alone
            got = [(text, 0.0) for text in answers(model, tokenizer, asked, **kwargs)]
        answered.update(((i, route), answer) for i, answer in zip(idx, got))
    hits = []
    for i, q in enumerate(questions):
        shift = _references(answerer, cands[i])
        text, score = answered[i, cands[i][-1]]  # the newest candidate, unless an older one is surer by the margin
        score -= shift[-1]
        for route, ref in zip(reversed(cands[i][:-1]), reversed(shift[:-1])):
            older, older_score = answered[i, route]
            if older_score - ref > score + answerer.margin or not text:
                text, score = older, older_score - ref
        hits.append(is_correct(text, q.answer, q.aliases))
    return sum(hits) / len(hits), hits


def _references(answerer: RoutedModel, routes: Sequence[tuple[str, ...] | None]) -> list[float]:
    """What each candidate's score is measured against: with ``calibrated``, how sure the route is of what
    it learnt (`Router.reference`); 0 otherwise, or where a route has no reference (an older checkpoint)."""
    if answerer.choice != "calibrated" or len(routes) < 2:
        return [0.0] * len(routes)
    refs = [answerer.router.reference(r) for r in routes]
    return [0.0] * len(routes) if any(r is None for r in refs) else refs
