"""Knowledge Seeding: move what the champion knows only in context into a new low-rank expert.

    seed(cfg, snapshot, champion, workdir, log) -> Manifest     # the candidate checkpoint

1. Short-term memory makes the teacher: a frozen smaller self with the snapshot's documents in its
   prompt (``distill.memory = "context"``; by default the level's base under the experts,
   ``distill.teacher``), or the champion with a fast expert trained on them (``"fast_weights"``).
2. The level's base (``distill.writer``) writes the distillation prompts from the snapshot itself:
   questions about each document (the question-writing format; never an evaluation probe) and openings
   of its own rewrites.
3. The larger self is the champion plus a freshly activated expert (B = 0: same function at the
   start); only that expert trains, by Generalized Distillation (`sleepcycle.distill`).
4. Replay arm: prompts written about records from earlier snapshots, answered by the champion itself
   without context, hold old knowledge in place while new knowledge moves in (ablatable).
5. Activation anchor (``distill.anchor``, `sleepcycle.anchor`): the new expert is penalised for changing
   the expert-bearing projections' outputs on the inputs of earlier cycles' texts, kept as one input
   second-moment matrix per projection; this cycle's are added after training.
6. When level 1 is full, a deep sleep merges its experts into the base first and frees the level.

The candidate is written as a checkpoint directory (see `sleepcycle.experts`) with the exact training
texts (``training_data.jsonl``) for audit, and returned as a manifest whose parents are the snapshot
and the champion.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle import models
from sleepcycle.anchor import Anchor
from sleepcycle.config import Config
from sleepcycle.distill import DistillStats, GeneralizedDistillation, Item, ValueJudge
from sleepcycle.experts import FAST, ExpertBank, load_checkpoint, save_checkpoint, stored_base
from sleepcycle.generate import Generator, HFGenerator, make_generator
from sleepcycle.grow import check_tokenizers, grow_depth, grow_width, preflight
from sleepcycle.manifests import Manifest
from sleepcycle.records import write_jsonl
from sleepcycle.routing import NAME_RUN, entity_keys, self_confidence, subject_keys
from sleepcycle.snapshot import read_documents
from sleepcycle.trainer import Example, Log, noop, train
from sleepcycle.world import (
    CITIES,
    COMPANIES,
    DOC_PREFIX,
    HOBBIES,
    PETS,
    PROFESSIONS,
    QA_PROMPT,
    WRITE_QUESTION,
    WRITE_REWRITE,
    normalize_answer,
    split_qa,
)

TRAINING_DATA = "training_data.jsonl"
"""The candidate checkpoint's distillation texts (kind, teacher, prompt + teacher sample), for audit."""

_PROPER = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*")


class SeedError(RuntimeError):
    """Knowledge Seeding cannot run on these inputs; nothing was written."""


def proper_nouns(texts: Sequence[str]) -> set[str]:
    return {m for t in texts for m in _PROPER.findall(t) if len(m) > 2}


def make_judge(docs: Sequence[str]) -> ValueJudge:
    """Values the judge compares: the built-in world's pools plus every proper noun in the documents."""
    return ValueJudge([*CITIES, *COMPANIES, *PROFESSIONS, *HOBBIES, *PETS, *proper_nouns(docs)])


# ----- prompts written by the teacher ---------------------------------------------------------------


def _valid_question(q: str) -> bool:
    return q.endswith("?") and 3 <= len(q.split()) <= 25 and "\n" not in q


def grounded(question: str, doc: str, named: bool = False) -> bool:
    """[ours] Whether a written question names things as its document does: every run of capitalised words
    in it (its first word aside, a possessive 's dropped) occurs verbatim in the document. `named`: and it
    names at least one (``distill.named_questions``): "What work do?" or "Who is the mentor of in?" names
    no one, so its teacher's answer belongs to no one either.

    The tiny writers garble new names when they copy them out of a document: "Who taught Skosstoplam Vonthou
    Vonthou Trasdo the craft?", "What is home to Tonkrir Skomdian?" (two people's names spliced). On the
    5-day bench 44% of the written questions named someone the document does not; the teacher answered them
    anyway and the student learnt facts about people who do not exist."""
    rest = question.split(maxsplit=1)[1] if " " in question.strip() else ""
    runs = NAME_RUN.findall(rest)
    return _named_in(runs, doc) and (not named or any(runs))


def _named_in(runs: Sequence[str], doc: str) -> bool:
    """Whether every run of capitalised words occurs verbatim in `doc` (a possessive 's dropped)."""
    return all(run.removesuffix("'s") in doc for run in runs if run)


_SENTENCE = re.compile(r"[^.!?]+[.!?]")


def grounded_prefix(text: str, doc: str) -> str:
    """[ours] The complete sentences of a written statement up to the first one that names something its
    document does not name (every run of capitalised words occurs in it verbatim, a possessive 's dropped).
    A sentence's first word counts as part of a name unless the document also uses it in lower case
    ("By profession, ...", but "Elderfen is where ..."). Empty when the first sentence already fails.

    Dreams garble names as questions do ("Trinflourvervi keeps a canary at home", "Foskerab Dekkak Pasto
    was mentored by Chousu Pasto"), and a rewrite cut at the token limit ends mid-word; a statement is
    kept as far as it is about the document's own people, in whole sentences."""
    lower = set(re.findall(r"\b[a-z][\w'-]*", doc))
    kept: list[str] = []
    for sentence in _SENTENCE.findall(text):
        s = sentence.strip()
        runs = [m.group() for m in NAME_RUN.finditer(s)]
        if runs and s.startswith(runs[0]) and runs[0].split()[0].lower() in lower:
            runs[0] = runs[0].split(maxsplit=1)[1] if " " in runs[0] else ""  # a common word opens the sentence
        if not s or not _named_in(runs, doc):
            break
        kept.append(s)
    return " ".join(kept)


def _hf(tok: PreTrainedTokenizerBase) -> Generator:
    return HFGenerator(tok.eos_token_id, tok.pad_token_id)


def write_questions(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    docs: Sequence[str],
    per_doc: int,
    gen: torch.Generator,
    sampler: Generator | None = None,
    ground: bool = False,
    drafts: int | None = None,
    named: bool = False,
) -> list[tuple[int, str]]:
    """Questions the model writes about each document: (document index, question), deduplicated, the
    first `per_doc` valid ones of `drafts` samples a document (default: `per_doc`, twice that with `ground`).

    `ground`: keep only questions `grounded` in their document (`named`: that name someone in it)."""
    drafts = drafts or (2 * per_doc if ground else per_doc)
    prompts = [
        tok(DOC_PREFIX.format(d=d) + WRITE_QUESTION, add_special_tokens=False)["input_ids"]
        for d in docs
        for _ in range(drafts)
    ]
    outs = (sampler or _hf(tok)).sample(model, prompts, 32, temperature=1.0, generator=gen)
    seen, result, count = set(), [], [0] * len(docs)
    for k, o in enumerate(outs):
        q = tok.decode([t for t in o if t != tok.eos_token_id], skip_special_tokens=True).strip()
        i = k // drafts
        key = (i, q)
        if not _valid_question(q) or key in seen or count[i] >= per_doc or (ground and not grounded(q, docs[i], named)):
            continue
        seen.add(key)
        count[i] += 1
        result.append(key)
    return result


def covering(drafts: Sequence[tuple[int, str]], per_doc: int) -> list[int]:
    """[ours] Which drafts to keep, given (document index, teacher's answer) per draft in draft order: for
    each document, up to `per_doc` drafts taken round-robin over its distinct answers (normalised, first
    line), so every fact the teacher's answers name is asked once before any is asked twice; drafts
    with an empty answer only when nothing else is left. Returns indices into `drafts`, in draft order."""
    groups: dict[int, dict[str, list[int]]] = {}
    for k, (doc, answer) in enumerate(drafts):
        key = normalize_answer(answer.strip().split("\n")[0])
        groups.setdefault(doc, {}).setdefault(key, []).append(k)
    keep = []
    for by_answer in groups.values():
        empty = by_answer.pop("", [])
        picked: list[int] = []
        for depth in range(max((len(q) for q in by_answer.values()), default=0)):
            picked += [q[depth] for q in by_answer.values() if depth < len(q)][: per_doc - len(picked)]
        keep += picked + empty[: per_doc - len(picked)]
    return sorted(keep)


def write_openings(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    docs: Sequence[str],
    per_doc: int,
    gen: torch.Generator,
    words: int = 2,
    sampler: Generator | None = None,
) -> list[tuple[int, str]]:
    """Openings of the teacher's own rewrites of each document (the first `words` words)."""
    prompts = [
        tok(DOC_PREFIX.format(d=d) + WRITE_REWRITE, add_special_tokens=False)["input_ids"]
        for d in docs
        for _ in range(per_doc)
    ]
    outs = (sampler or _hf(tok)).sample(model, prompts, 8, temperature=1.0, generator=gen)
    result = set()
    for k, o in enumerate(outs):
        text = tok.decode([t for t in o if t != tok.eos_token_id], skip_special_tokens=True).strip()
        opening = " ".join(text.split()[:words])
        if len(opening.split()) == words:
            result.add((k // per_doc, opening))
    return sorted(result)


def build_items(
    cfg: Config,
    tok: PreTrainedTokenizerBase,
    writer: PreTrainedModel,
    docs: Sequence[str],
    teacher: str,
    with_context: bool,
    gen: torch.Generator,
    sampler: Generator | None = None,
    answerer: PreTrainedModel | None = None,
) -> list[Item]:
    """Distillation items for `docs`: teacher-written questions and rewrite openings.

    `with_context` puts the document in the teacher's prompt (privileged context); otherwise the
    teacher answers from its weights (fast weights, or the champion on replayed records). With
    `answerer` (the item's teacher) and `distill.cover_answers`, it answers every valid draft and the
    questions kept cover the most distinct answers (`covering`); those answers are the items' teacher
    samples."""
    dc = cfg.distill
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    cover = answerer is not None and dc.cover_answers
    questions = write_questions(
        writer,
        tok,
        docs,
        dc.question_drafts if cover else dc.questions_per_doc,
        gen,
        sampler,
        ground=dc.grounded_questions,
        drafts=dc.question_drafts,
        named=dc.named_questions,
    )
    items = []
    for i, q in questions:
        student = enc(QA_PROMPT.format(q=q))
        context = enc(DOC_PREFIX.format(d=docs[i])) if with_context else []
        items.append(Item(student, context + student, teacher, kind="qa"))
    if cover and items:
        outs = (sampler or _hf(tok)).sample(
            answerer, [it.teacher_prompt for it in items], dc.max_new_tokens, dc.temperature, gen
        )
        for it, o in zip(items, outs):
            it.sample = o or [tok.eos_token_id]
        said = [tok.decode(it.sample, skip_special_tokens=True) for it in items]
        items = [items[k] for k in covering([(i, a) for (i, _), a in zip(questions, said)], dc.questions_per_doc)]
    openings = dc.openings_per_doc if dc.openings_per_doc is not None else max(1, dc.questions_per_doc // 3)
    for i, opening in write_openings(writer, tok, docs, openings, gen, sampler=sampler) if openings else []:
        student = enc(opening)
        context = enc(DOC_PREFIX.format(d=docs[i]) + WRITE_REWRITE) + enc(" " + opening) if with_context else student
        items.append(Item(student, context, teacher, kind="statement"))
    return items


def self_records(
    champion: PreTrainedModel, tok: PreTrainedTokenizerBase, n: int, seed: int, sampler: Generator | None = None
) -> list[str]:
    """[ours] `n` texts the champion writes from an empty prompt (generative replay, `distill.self_replay`),
    with their own generator so turning the arm on leaves every other sample of the run as it was; texts
    under five words are dropped."""
    sampler = sampler or _hf(tok)
    gen = torch.Generator().manual_seed(seed + 7919)
    outs = sampler.sample(champion, [[tok.eos_token_id]] * n, 64, 1.0, gen)
    texts = (tok.decode(o, skip_special_tokens=True).strip() for o in outs)
    return [t for t in texts if len(t.split()) >= 5]


_SUBJECT = re.compile(r"(?:^|[.!?]\s+)([A-Z][a-z]+ [A-Z][a-z]+)\b")


def subjects(docs: Sequence[str]) -> set[str]:
    """Two-word names that open a sentence of the documents: the people (or firms) they are about."""
    return {m.group(1) for d in docs for m in _SUBJECT.finditer(d)}


def ask_about_others(
    questions: Sequence[str], people: set[str], others: Sequence[str], rng: random.Random
) -> list[str]:
    """[ours] Today's questions asked about invented people: each of `people` (two-word names) a question
    names is replaced by the first word of one of `others` (the replayed records' subjects) and the last
    word of another; questions that name none of `people` are dropped.

    The champion answers them closed-book (`distill.replay_names`): in the words the new expert is taught
    today, about people it is not taught, the answer stays what the model said before."""
    if not others:
        return []
    out = []
    for q in questions:
        found = [p for p in sorted(people) if p in q]
        for person in found:
            first, last = rng.choice(others).split()[0], rng.choice(others).split()[-1]
            q = q.replace(person, f"{first} {last}")
        if found:
            out.append(q)
    return out


def _shares_entity(text: str, names: set[str]) -> bool:
    return bool(proper_nouns([text]) & names)


# ----- the stage -----------------------------------------------------------------------------------


def _train_fast_expert(
    cfg: Config, bank: ExpertBank, tok: PreTrainedTokenizerBase, docs: Sequence[str], seed: int, log: Log
) -> PreTrainedModel:
    """Level-0 fast weights: a fast expert trained on the day's documents at a high learning rate; the
    teacher is the champion with it. Returns that teacher as a plain model and frees the slot."""
    bank.activate(FAST)
    train(
        bank.model,
        tok,
        [Example("", d) for d in docs],
        steps=cfg.distill.fast_steps,
        batch_size=min(len(docs), cfg.distill.batch_size),
        lr=cfg.distill.fast_lr,
        seed=seed,
        log=log,
        params=bank.parameters(FAST),
        desc="fast weights",
    )
    teacher = bank.merged()
    bank.reset(FAST)
    return teacher


def _larger_self(
    cfg: Config, seed_model: PreTrainedModel, tok: PreTrainedTokenizerBase, docs: Sequence[str]
) -> tuple[PreTrainedModel, list[torch.nn.Parameter], int | None]:
    """The student of grow mode, checked by the preflight before any training: (model, params, vocab)."""
    dc = cfg.distill
    probe_texts = [d[:200] for d in docs[:8]]
    if dc.expansion == "grow_depth":
        student, new = grow_depth(seed_model)
        preflight(
            seed_model,
            student,
            tok,
            probe_texts,
            depth_map={i: 2 * i for i in range(seed_model.config.num_hidden_layers + 1)},
        )
        params = [p for i in new for p in student.model.layers[i].parameters()]  # only the new blocks train
        vocab = None
    elif dc.expansion == "grow_width":
        student = grow_width(seed_model)
        preflight(seed_model, student, tok, probe_texts)
        params, vocab = list(student.parameters()), None  # every weight is part of the wider self
    else:
        if not dc.student_path:
            raise SeedError("distill.expansion=given needs distill.student_path (a larger model of the same family)")
        try:
            student, student_tok = models.load(dc.student_path)
        except models.ModelLoadError as e:
            raise SeedError(str(e)) from e
        vocab = check_tokenizers(tok, student_tok)
        params = list(student.parameters())
    for p in student.parameters():
        p.requires_grad = False
    for p in params:
        p.requires_grad = True
    return student, params, vocab


def _deep_sleep(bank: ExpertBank, state: dict) -> ExpertBank:
    """Level 1 is full: fold its experts into the base (merge) and start a fresh level."""
    merged = bank.merged()
    state.setdefault("deep_sleeps", []).append({"cycle": state.get("cycle", 0), "merged": list(bank.active)})
    if state.get("history"):  # the base is now the whole level: the route of its newest expert
        state["base_confidence"] = state["history"][-1].get("confidence")
    return ExpertBank(merged, rank=bank.rank, capacity=bank.capacity, modules=bank.modules)


@dataclass
class Seeding:
    """A Knowledge Seeding run, ready to train: the teachers, the distillation items (without their
    teacher samples yet) and the larger self with the parameters that train. `seed` runs it in this
    process; `sleepcycle.distributed` runs the same thing data-parallel under DeepSpeed."""

    docs: list[str]
    bank: ExpertBank
    tok: PreTrainedTokenizerBase
    state: dict
    teachers: dict[str, PreTrainedModel]
    items: list[Item]
    n_new: int
    student: PreTrainedModel
    params: list[torch.nn.Parameter]
    slot: str | None
    base_dir: Path | None
    vocab: int | None
    sampler: Generator
    """Generation backend of the run (`generation.backend`): prompt writing, teacher samples, rollouts."""
    anchor: Anchor
    """Input moments of the earlier cycles' texts (`sleepcycle.anchor`); this cycle's are added after training."""

    def trainer(self, cfg: Config, run_seed: int) -> GeneralizedDistillation:
        dc = cfg.distill
        if self.slot is None and dc.expansion in ("full", "grow_width", "given"):  # every weight trains
            dc = dc.model_copy(update={"lr": dc.full_lr})
        trainer = GeneralizedDistillation(
            dc,
            self.student,
            self.teachers,
            self.params,
            self.tok.eos_token_id,
            self.tok.pad_token_id,
            decode=lambda ids: self.tok.decode(ids, skip_special_tokens=True),
            judge=make_judge(self.docs),
            seed=run_seed,
            sampler=self.sampler,
            vocab=self.vocab,
        )
        if self.slot is not None and self.anchor:
            penalty = self.anchor.penalty(self.student, self.slot, per_cycle=dc.anchor_per_cycle)
            trainer.regularizer = penalty if penalty else None
        return trainer

    def remember(self) -> None:
        """Add this cycle's distillation texts (new arm, as the student saw them) to the anchor."""
        if self.slot is None:
            return
        seqs = [it.student_prompt + it.sample for it in self.items[: self.n_new]]
        self.anchor.update(self.student, seqs, self.tok.pad_token_id)


def prepare(
    cfg: Config,
    snapshot: Manifest,
    champion: Manifest,
    log: Log = noop,
    replay: Sequence[str] = (),
    run_seed: int = 0,
    write_prompts: bool = True,
) -> Seeding:
    """Steps 1-5 of the module docstring up to training. `write_prompts=False` skips writing the
    distillation prompts (the other ranks of a data-parallel run receive them from rank 0)."""
    dc = cfg.distill
    docs = read_documents(snapshot)
    # Before loading: the expert slots' A matrices are initialised from the global generator, so a result
    # must not depend on what the process did before (a resumed flow run skips earlier stages).
    torch.manual_seed(run_seed)
    try:
        bank, tok, state = load_checkpoint(
            Path(champion.uri), rank=dc.rank, capacity=dc.experts_per_level, modules=dc.expert_modules
        )
    except (models.ModelLoadError, OSError, ValueError, KeyError) as e:
        raise SeedError(f"champion checkpoint {champion.uri} failed to load: {e}") from e
    gen = torch.Generator().manual_seed(run_seed)
    sampler = make_generator(cfg.generation, tok.eos_token_id, tok.pad_token_id, vocab=len(tok))
    state = {**state, "cycle": state.get("cycle", 0) + 1}
    champion_model = bank.merged().requires_grad_(False)  # frozen champion: the replay teacher
    # the level's base, no experts (the base/ weights): writer and context teacher by default
    level_base = bank.unloaded().requires_grad_(False) if "base" in (dc.writer, dc.teacher) else None
    writer = level_base if dc.writer == "base" else champion_model
    if dc.memory == "fast_weights":
        teacher_new = _train_fast_expert(cfg, bank, tok, docs, run_seed, log).requires_grad_(False)
    else:
        teacher_new = level_base if dc.teacher == "base" else champion_model
    teachers = {"new": teacher_new, "champion": champion_model}

    items: list[Item] = []
    if write_prompts:
        items = build_items(
            cfg,
            tok,
            writer,
            docs,
            "new",
            with_context=dc.memory == "context",
            gen=gen,
            sampler=sampler,
            answerer=teachers["new"],
        )
        if not items:
            raise SeedError("the teacher wrote no usable distillation prompt for this snapshot")
    n_new = len(items)
    pool = list(replay)
    if write_prompts and dc.replay and dc.self_replay > 0 and dc.replay_fraction > 0:
        pool += self_records(champion_model, tok, dc.self_replay, run_seed, sampler)
        log({"seed/self_records": float(len(pool) - len(replay))})
    if write_prompts and dc.replay and pool and dc.replay_fraction > 0:
        today = proper_nouns(docs)
        old = [t for t in pool if not _shares_entity(t, today)]  # the new context wins over old records
        random.Random(run_seed).shuffle(old)
        want = round(n_new * dc.replay_fraction / (1 - dc.replay_fraction))
        # records a chunk at a time, as many as `want` prompts need: writing about the whole buffer and
        # keeping the first `want` prompts spent most of the arm's writing on prompts it threw away
        chunk, replay_items = max(1, math.ceil(want / dc.questions_per_doc)), []
        for start in range(0, len(old), chunk):
            replay_items += build_items(
                cfg,
                tok,
                writer,
                old[start : start + chunk],
                "champion",
                with_context=dc.replay_context,
                gen=gen,
                sampler=sampler,
                answerer=teachers["champion"],
            )
            if len(replay_items) >= want:
                break
        if dc.replay_fill and replay_items and len(replay_items) < want:
            # a small buffer writes fewer prompts than the share asks for: repeat them (each copy gets its own
            # teacher sample) so replay_fraction is the share of prompts the arm really has
            replay_items = [
                Item(it.student_prompt, it.teacher_prompt, it.teacher, kind=it.kind)
                for it in itertools.islice(itertools.cycle(replay_items), want)
            ]
        items += replay_items[:want]
        others = sorted(subjects(old) - subjects(docs)) if dc.replay_names > 0 else []
        if others:
            rng = random.Random(run_seed + 104729)
            prompts = [
                tok.decode(it.student_prompt, skip_special_tokens=True) for it in items[:n_new] if it.kind == "qa"
            ]
            asked = [qa[0].strip() for p in prompts if (qa := split_qa(p))]
            rng.shuffle(asked)
            twins = ask_about_others(asked[: round(len(asked) * dc.replay_names)], subjects(docs), others, rng)
            enc = lambda q: tok(QA_PROMPT.format(q=q), add_special_tokens=False)["input_ids"]  # noqa: E731
            items += [Item(enc(q), enc(q), "champion", kind="qa") for q in twins]
            log({"seed/replay_names": float(len(twins))})

    base_dir = stored_base(Path(champion.uri))  # a plain champion (no experts yet) is itself the base
    vocab = None
    grow_now = dc.expansion in ("grow_depth", "grow_width", "given") and not state.get("grown")
    if dc.expansion == "full":  # ablation: full fine-tuning of a copy instead of a new expert
        student = copy.deepcopy(champion_model)
        for p in student.parameters():
            p.requires_grad = True
        params = list(student.parameters())
        slot = None
    elif grow_now:  # cross-size seeding: the larger self is a grown (or given) model
        student, params, vocab = _larger_self(cfg, champion_model, tok, docs)
        state["grown"] = dc.expansion
        slot = None
    else:
        if bank.free_slot() is None:
            bank = _deep_sleep(bank, state)
            base_dir = None
        slot = bank.activate(bank.free_slot())
        student, params = bank.model, bank.parameters(slot)
    try:
        anchor = Anchor.load(Path(champion.uri)) if slot is not None else Anchor()
    except ValueError as e:
        raise SeedError(f"champion checkpoint {champion.uri} failed to load: {e}") from e
    if slot is not None and dc.anchor_first and not anchor:  # the first cycle: anchor on the replay arm
        anchor.update(student, [it.student_prompt + it.sample for it in items[n_new:]], tok.pad_token_id)
    return Seeding(
        docs, bank, tok, state, teachers, items, n_new, student, params, slot, base_dir, vocab, sampler, anchor
    )


def learnt_confidence(model: PreTrainedModel, tok: PreTrainedTokenizerBase, items: Sequence[Item]) -> float | None:
    """`routing.self_confidence` of the trained model on the questions of this cycle's documents it
    trained on (new arm, not replay): how sure the route that ends at the new expert is of what it learnt."""
    texts = [tok.decode(it.student_prompt + it.sample, skip_special_tokens=True) for it in items if it.teacher == "new"]
    was = model.training
    model.eval()
    try:
        return self_confidence(model, tok, texts)
    finally:
        model.train(was)


def trained_texts(checkpoint: Path) -> list[str]:
    """The texts of a seeded checkpoint's new arm (its `TRAINING_DATA`, replay left out): what
    `learnt_confidence` measured the new expert on, and Dreaming re-measures it on."""
    lines = (Path(checkpoint) / TRAINING_DATA).read_text().splitlines()
    return [r["text"] for r in map(json.loads, lines) if r.get("teacher") == "new"]


def write_candidate(
    s: Seeding,
    snapshot: Manifest,
    champion: Manifest,
    workdir: Path,
    stats: DistillStats,
    t0: float,
    log: Log = noop,
    meta: dict | None = None,
) -> Manifest:
    """Write the trained larger self as the candidate checkpoint (atomically: a `.partial` directory
    renamed at the end) with its training texts and manifest; return the manifest."""
    tok, state, slot, items = s.tok, s.state, s.slot, s.items
    out = Path(workdir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    state["history"] = state.get("history", []) + [
        {
            "cycle": state["cycle"],
            "snapshot": snapshot.digest,
            "expert": slot,
            "keys": entity_keys(s.docs),
            "subjects": subject_keys(s.docs),
            "confidence": learnt_confidence(s.student, tok, items) if slot is not None else None,
        }
    ]  # the keys: what `sleepcycle.routing` routes a question to this expert (and its elders) by
    if slot is None:
        models.save(s.student, tok, tmp)
        (tmp / "sleep.json").write_text(json.dumps({**state, "active": []}, indent=2))
    else:
        s.bank.freeze()
        save_checkpoint(s.bank, tok, tmp, state, base_dir=s.base_dir)
        s.anchor.save(tmp)
    write_jsonl(
        tmp / TRAINING_DATA,
        [
            {
                "kind": it.kind,
                "teacher": it.teacher,
                "text": tok.decode(it.student_prompt + it.sample, skip_special_tokens=True),
            }
            for it in items
        ],
    )
    metrics = {
        "seed/items": len(items),
        "seed/replay_items": len(items) - s.n_new,
        "seed/steps": stats.steps,
        "seed/tokens": stats.tokens,
        "seed/loss": stats.loss,
        "seed/divergence": stats.divergence,
        "seed/lti_reward": stats.lti_reward,
        **({"seed/anchor": stats.anchor} if stats.anchor == stats.anchor else {}),
        "seed/wall_clock_s": time.time() - t0,
    }
    manifest = Manifest.of_directory(
        tmp,
        "checkpoint",
        name=f"cycle-{state['cycle']}",
        parents={"snapshot": snapshot.digest, "champion": champion.digest},
        metrics=metrics,
        meta={"expert": slot, "cycle": state["cycle"], **(meta or {})},
    )
    manifest = manifest.publish(tmp, out)
    log(metrics)
    return manifest


def seed(
    cfg: Config,
    snapshot: Manifest,
    champion: Manifest,
    workdir: Path,
    log: Log = noop,
    replay: Sequence[str] = (),
    token_budget: int | None = None,
    run_seed: int = 0,
) -> Manifest:
    """Knowledge Seeding for one snapshot; returns the candidate checkpoint's manifest (see module doc)."""
    t0 = time.time()
    dc = cfg.distill
    s = prepare(cfg, snapshot, champion, log=log, replay=replay, run_seed=run_seed)
    trainer = s.trainer(cfg, run_seed)
    trainer.sample_teacher(s.items, dc.max_new_tokens)
    with s.bank.folded():  # a no-op unless a new expert trains on top of frozen ones
        stats = trainer.fit(
            s.items, dc.steps, token_budget=token_budget, log=log, desc=f"seed cycle {s.state['cycle']}"
        )
    s.remember()
    return write_candidate(s, snapshot, champion, workdir, stats, t0, log)
