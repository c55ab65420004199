"""Typed configuration: one frozen pydantic model per stage, unknown keys rejected, fields documented here.

A profile is a YAML file under `configs/` (``tiny`` for tests, ``default`` for the demo and bench, ``gpu``
for a real model pair). Dotted overrides such as ``distill.steps=4`` are applied on top:

    cfg = load_config("default", ["distill.steps=4", "world.days=3"])

Endpoints and secrets never live here: they come from the environment (see `sleepcycle.store`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorldConfig(Strict):
    seed: int = 0
    """Everything in the world (names, facts, documents, probes) is a function of this seed."""
    base_entities: int = 96
    """People known on day 0 (pretraining). Half of them have one fact withheld until a wake day."""
    days: int = 5
    """Wake days in the stream (one sleep cycle each)."""
    new_entities_per_day: int = 8
    """New people met on each wake day (one bio each, six facts)."""
    new_facts_per_day: int = 6
    """Withheld facts about day-0 people revealed per wake day."""
    updates_per_day: int = 4
    """Facts (city or employer) overwritten per wake day; the old answer then counts as wrong."""


class ModelConfig(Strict):
    """A tiny Llama (RMSNorm, SwiGLU, RoPE). ``size`` picks a preset; explicit fields override it."""

    path: str | None = None
    """A local Hugging Face causal LM directory (``save_pretrained`` layout with its tokenizer) that a new
    line starts from instead of the pretrained tiny model; ``size``, ``vocab_size``, ``max_positions`` and
    the ``pretrain`` section are then unused. Checked when used (`sleepcycle.pretrain`), not here."""
    size: Literal["micro", "small", "large"] = "small"
    vocab_size: int = 2048
    """Byte-level BPE vocabulary trained on the world corpus (the embedding dominates tiny models)."""
    max_positions: int = 384
    """Context window in tokens; the `in-context` baseline truncates its documents to fit it."""


class PretrainConfig(Strict):
    steps: int = 3000
    """Optimizer steps of base pretraining on day 0 plus the question-answering formats."""
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    base_paraphrases: int = 4
    """Differently templated bios per day-0 person in the corpus."""
    qa_fraction: float = 0.6
    """Share of day-0 people whose closed-book QA is trained; the rest are known from bios only."""
    mix: dict[str, float] = Field(default_factory=lambda: {"bio": 0.3, "qa": 0.2, "context_qa": 0.3, "write": 0.2})
    """Sampling weights of the example families (bios, closed-book QA, QA over documents in the prompt
    on freshly generated people, and the writing formats: questions, implications, rewrites)."""
    max_context_docs: int = 3
    """Documents in an in-context example: the relevant one plus up to this many minus one distractors."""
    fresh_mentors: float = Field(0.0, ge=0.0, le=1.0)
    """[ours] Share of the counterfactual people (in-context and writing examples) whose mentor is another
    new name rather than a day-0 person. At 0 every mentor a reader ever meets on a page is someone it was
    pretrained on, and the base learns a closed set of mentor names: asked "Who is the mentor of X?" over a
    document naming a mentor a wake day introduced, it answers with a day-0 person (0 right of the 15 such
    questions on the 5-day bench). Two-hop examples keep day-0 mentors (their second hop is memory). [ours] 0: at 0.5 the
    base reads such mentors a little better (3 of 15, names often half copied) but its in-context two-hop
    answers collapse (0.87 -> 0.09 right on day-0 mentors), and `sleep-nodream`'s multi-hop ACC falls by
    0.557 (seeds 0-1). At 0.1 the base reads none of them, and its two-hop answers fall to 0.09 and 0.54 on
    two pretraining seeds (0.87 and 0.81 at 0; bench/dream_composition.py, bench/README.md, stops 29-30).
    Keyed into the base's cache only when set (`Config.digest`)."""


class EvalConfig(Strict):
    batch_size: int = 64
    max_new_tokens: int = 8
    probes_per_day: int | None = 120
    """Cap on probes evaluated per snapshot (sampled deterministically); None evaluates all."""
    general_examples: int = 96
    """Size of the fixed reference set for held-out LM loss and KL drift."""


class TrainConfig(Strict):
    """Per-day training shared by the baselines and fast weights; the budget is what makes them comparable."""

    tokens_per_day: int = 60_000
    """Training tokens (through a backward pass) every method may spend per wake day."""
    batch_size: int = 16
    lr: float = 1e-3
    replay_buffer: float = 0.1
    """Bounded replay buffer: this fraction of all earlier records (day 0 included) is kept."""
    replay_ratio: float = 0.5
    """Share of each training batch drawn from the replay buffer when replay is on."""


ANCHOR_WITHOUT_ROUTING = 20.0
"""`DistillConfig.anchor` when it is left unset and ``routing=all``."""


class DistillConfig(Strict):
    """Knowledge Seeding (METHOD.md section 3). Defaults marked [ours] where the paper is silent."""

    @model_validator(mode="before")
    @classmethod
    def _anchor_follows_routing(cls, data):
        """An unset anchor is on where nothing else holds earlier days: without expert routing."""
        if isinstance(data, dict) and data.get("anchor") is None and data.get("routing") == "all":
            data = {**data, "anchor": ANCHOR_WITHOUT_ROUTING}
        return data

    memory: Literal["context", "fast_weights"] = "context"
    """Short-term memory of the teacher: wake documents in its prompt, or a fast expert trained on them."""
    expansion: Literal["expert", "full", "grow_depth", "grow_width", "given"] = "expert"
    """Larger self: a new low-rank expert (default), full fine-tuning (ablation), a grown copy (depth or
    width, function-preserving; experts are added on it in later cycles) or a given larger model."""
    student_path: str | None = None
    """For expansion=given: a local directory with a larger model of the same family (same tokenizer) to
    seed into. Checked when seeding grows into it, not here."""
    rank: int = 16
    expert_modules: Literal["mlp", "mlp+attention"] = "mlp"
    """Where a new expert's low-rank deltas sit: the MLP projections, or the attention projections (q/k/v/o)
    as well. A line keeps the layout its first expert was given (`experts.load_checkpoint`). [ours] mlp: on
    the 5-day bench (default base, seeds 0-4, `sleep-nodream`) the attention as well reads the wake days'
    facts in the held-out wordings more often (+0.050 +- 0.033 on all 580 probes, higher on 5 of 5; ACC
    +0.009, multi-hop -0.003), at a cost in general ability: LM loss on the general set +0.39 and KL drift
    from the day-0 champion after five days 0.96 against 0.57, and the in-context ceiling falls from 0.91 to
    0.67: the adapters, on in every teacher, read the prompt less. q/k alone carry half of the held-out gain
    (+0.027 +- 0.017, 5 of 5) at general loss +0.18; v/o alone +0.015 (4 of 5) at +0.24 (bench/README.md,
    stop 36)."""
    experts_per_level: int = 5
    """Level-1 capacity; when full, a deep sleep merges the experts into the base and resets the level."""
    routing: Literal["entity", "all"] = "entity"
    """[ours] Which level-1 experts answer a closed-book question (`sleepcycle.routing`): ``all`` (the paper:
    every active expert), or ``entity``: the experts up to the newest one whose snapshot named an entity the
    question names (every expert when it names none). Evaluation, the gate and the demo answer through it;
    training, teachers, the in-context ceilings, LM loss and KL drift use every expert either way. Not in
    the paper; the bench reports both rows (`matrices["all_experts"]`). sleep-nodream, seeds 0-4: entity
    ACC 0.796 BWT -0.014 (stop 25: the base keyed, the anchor off); on the same weights all gives 0.393 /
    -0.559, and all with the anchor at 20 (what ``routing=all`` sets when the anchor is left unset) 0.523 /
    -0.311 (stop 24; bench/README.md)."""
    routing_choice: Literal["confidence", "calibrated", "newest"] = "calibrated"
    """[ours] With routing=entity, a question that names entities several experts learnt about has several
    candidate prefixes: ``newest`` answers with the newest, ``confidence`` asks each and keeps the answer
    given with the highest mean token log-probability (one more forward pass per candidate). sleep-nodream,
    seeds 0-4 (stop 24, anchor 20): newest ACC 0.712 BWT -0.076 acquisition 0.801 of the ceiling;
    confidence 0.745 / -0.020 / 0.789 (an older prefix sometimes answers the newest day's question about an
    earlier person: most often the base, sure of a value an update replaced; bench/README.md stop 25).
    ``calibrated`` measures each candidate's log-probability against how sure its route is of what it
    learnt (`Router.reference`: its median on the questions it trained on, stored by each cycle and by
    pretraining): over five seeds (stop 25) sleep-nodream ACC +0.010 and acquisition +0.013 of the
    ceiling, BWT -0.002 and day-0 retention -0.008 against confidence; sleep +0.008, +0.011, -0.003 and
    -0.021: a trade of retention for acquisition with every name as a key. With ``routing_keys=subjects``
    it is not a trade: sleep-nodream ACC +0.014, BWT +0.003, acquisition +0.013, day 0 +0.005 against
    confidence with names, and the pair is the default (stop 25; chosen after seeing all five seeds of
    each part, bench/README.md)."""
    routing_margin: float = 0.0
    """[ours] With routing_choice=confidence: an older candidate answers instead of a newer one only when its
    mean token log-probability is higher by more than this (nats a token); 0 takes the most confident."""
    routing_keys: Literal["names", "subjects"] = "subjects"
    """[ours] What keys an expert (and the base) for routing=entity: ``names``, every entity its snapshot
    named, or ``subjects``, the entities its documents were about (named the most times in a document:
    a bio's person, not the mentor it names once; `routing.subject_keys`). [ours] subjects: with the
    calibrated choice it gains on every measure over names (bench/README.md, stop 25); a checkpoint that
    stored no subjects routes by its names."""
    steps: int = 300
    """Upper bound; the per-day token budget (train.tokens_per_day) usually stops it first. The lr's cosine
    runs over these steps, so a budget that stops at ~165 ends at about half the rate: scheduled to reach
    10% over the budget's steps instead, acquisition fell by 0.03-0.05 of the ceiling (bench/README.md)."""
    batch_size: int = 16
    lr: float = 6e-3
    """[ours] Without the activation anchor, 1e-2 moved day-1 knowledge as well but drifted (KL from the
    champion ~2 nats after 5 days) and wiped earlier days, and 3e-3 was the default. With the anchor
    holding earlier days, a larger step pays: on the 5-day bench (seed 0, anchor 20) ACC 0.339 at 3e-3,
    0.399 at 4.5e-3, 0.435 at 6e-3, 0.420 at 9e-3; at 4.5e-3 without the anchor 0.340 (bench/README.md)."""
    full_lr: float = 1e-3
    """Learning rate of a seeding that trains every weight of the model rather than a fresh expert:
    expansion=full, and the cycle that grows a line by grow_width or into a given model (`lr` then applies
    to the experts of later cycles). The sft baselines' train.lr; at 3e-3 (the expert's rate then), full fine-tuning
    collapsed (ACC 0 over 5 days, bench/README.md)."""
    lmbda: float = 0.25
    """On-policy fraction lambda of the GKD mix (0: teacher samples only, 1: student samples only)."""
    alpha: float = 0.8
    """Share of the update given to the divergence term against the Learning-to-Imitate RL term
    (gradients are mixed by norm, see `GeneralizedDistillation.step`). 0.95 over seeds 0-4 of the 5-day
    bench: sleep-nodream ACC +0.020 +- 0.018 and BWT +0.027 +- 0.014 against 0.8 on the same seed; the full
    cycle (`sleep`) ACC -0.006 +- 0.036, BWT +0.019 +- 0.034: no effect there (bench/README.md)."""
    gamma: float = 0.5
    """Weight of the semantic judge in the LTI reward (1-gamma on the Levenshtein reward)."""
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    """[ours] forward KL by default: on the tiny models it moved ~8 points more new knowledge per
    cycle than JSD_0.5 at the same budget (bench/README.md)."""
    beta: float = 0.5
    """JSD interpolation (0 = forward KL limit, 1 = reverse KL limit, as in GKD/TRL)."""
    lti: bool = True
    """The Learning-to-Imitate RL term (METHOD.md section 3). On the 5-day bench with 16 covering questions a
    document, off scored higher (seeds 0-2: ACC 0.569 against 0.523, BWT -0.298 against -0.342), and again
    on a base pretrained on another CPU (0.519 against 0.451), but not on seed 3 there (0.396 against 0.428;
    five seeds: +0.042 +- 0.044). At today's default (routing) off is ACC +0.015 +- 0.017 over five seeds
    (stop 31). On by default as half of the method (bench/README.md)."""
    lti_group: int = 4
    """Completions sampled per prefix; advantages are normalised within the group."""
    prefix_range: tuple[float, float] = (0.1, 0.9)
    z0_fraction: float = 0.5
    """Levenshtein threshold z0 as a fraction of the longer string. [ours] 0.2 looked better on seeds 0-2
    of the 5-day bench (sleep-nodream ACC 0.485 against 0.451, better on every seed) and was worse on the
    held-out seeds 3 and 4 (0.407 and 0.453 against 0.428 and 0.470); full `sleep` was 0.370 against 0.391.
    Over five seeds the paired difference is +0.013 +- 0.030: no effect, so 0.5 stays (bench/README.md)."""
    teacher: Literal["champion", "base"] = "base"
    """With memory=context, the frozen smaller self that reads the day's documents and answers the day's
    prompts: the level's base without experts (the base/ weights, which change only at a deep sleep), or the
    champion. The replay arm's teacher is the champion either way (it holds the earlier days). [ours] base:
    the champion's experts drift its reading of a document (in-context ceiling 0.68 on day 5 of seed 0),
    and distilling on the day's prompts towards the base also pulls the student back towards it. Over
    three seeds, ACC 0.281 against 0.225, acquisition 0.57 against 0.49, KL drift from the champion 0.33
    against 0.90 (bench/README.md)."""
    writer: Literal["champion", "base"] = "base"
    """Who writes the distillation prompts (questions and rewrite openings) from the day's documents: the
    champion, or the level's base without experts (the weights the experts sit on). `teacher` says who
    answers them. [ours] base: each expert drifts the champion's writing a little, and by
    day 5 of the bench the champion wrote broken questions ("Where doesse Krarnuek's mentor?") and
    acquisition fell 0.54 -> 0.12; with the base writing, acquisition 0.49 against 0.32 over three seeds
    (bench/README.md)."""
    questions_per_doc: int = 32
    """Questions kept for each document (from `question_drafts` drafts), besides document openings
    (a third as many of those). [ours] 32 (stop 33; before: 16, and 10 before that). Against 16 from 30
    drafts, on the 5-day bench (five seeds on each of two pretrained bases) `sleep-nodream` gains ACC
    +0.055 +- 0.022 / +0.050 +- 0.016 (higher on every seed), acquisition +0.084 / +0.053 of the in-context
    ceiling (0.97 / 0.93), multi-hop +0.050 / +0.013, with BWT unchanged (-0.003 / +0.000); it costs
    general loss +0.031 / +0.063, KL drift from the champion +0.031 / +0.066 and more learning time. Full
    `sleep` gains ACC +0.015 / +0.008 (bench/README.md, stop 33). Before routing (stop 23) more questions
    moved more in and lost more again: 16 against 10 (seeds 0-2) ACC 0.523 against 0.464, BWT -0.342
    against -0.216."""
    openings_per_doc: int | None = Field(None, ge=0)
    """Document openings kept for each document besides its questions: the writer starts a rewrite of the
    document, the student continues it, the teacher (with the document) scores the continuation, so a wake
    fact is also learnt as a statement. None: a third of `questions_per_doc` (10 at 32). [ours] Pretraining
    learnt the base's day-0 facts from bios in every statement template, and the base reads those facts in
    the held-out wordings 0.25 of the time; wake facts, learnt mostly through questions, are read half as
    often in the same wordings (bench/heldout_bound.py, stop 35). As many openings as questions (32) does
    not close that: held-out -0.000 +- 0.020, ACC -0.050 +- 0.017, multi-hop -0.064 against the default
    (five seeds; bench/README.md, stop 35)."""
    question_drafts: int = 60
    """Questions the writer drafts per document (sampled at T = 1); the valid, grounded, distinct ones are
    the pool that `questions_per_doc` are kept from. [ours] 60 with 32 kept (30 with 16 before stop 33):
    the kept questions cover 0.91 of a day's facts from 60 drafts, against 0.83 from 30 (bench/README.md)."""
    named_questions: bool = False
    """[ours] With `grounded_questions`, also drop a written question that names no one ("What work do?",
    "Who is the mentor of in?"): grounded passes it, for it names no one wrongly, and its teacher's answer
    then teaches the student a value for no one. 7% of the questions Seeding kept on the 5-day bench
    (second base, seed 4, 32 a document). Questions for Seeding, Dreaming's pairs and tau alike. [ours] off:
    on the 5-day bench (default base, five seeds) `sleep-nodream` ACC +0.001 +- 0.009, multi-hop
    -0.029 +- 0.089; `sleep` ACC +0.014 +- 0.025, held-out +0.009 +- 0.009 (higher on 5 of 5), multi-hop
    +0.034 +- 0.101; on a second pretrained base +0.012 / +0.013 ACC, held-out -0.011 / +0.002 (stop 33).
    At stop 35's defaults, by a rule fixed before the runs (fresh seeds 5-9 of both bases), `sleep` with it
    gains ACC +0.020 / +0.011 but held-out +0.000 / +0.011 and multi-hop +0.014 / -0.014: it stays off
    (bench/README.md, stop 36)."""
    cover_answers: bool = True
    """[ours] Keep the drafts that cover a document's facts: the teacher answers every draft (its sample
    then serves as the item's teacher sample), and each document keeps its questions round-robin over
    the distinct answers, one question per answer before a second wording of any (`seed.covering`).
    Off, the first valid drafts are kept. The writer repeats the facts it likes: on the 5-day bench the
    first ten drafts asked about 68% of a day's facts, so a third of the facts were never taught."""
    grounded_questions: bool = True
    """[ours] Keep only written questions that name things as their document does (`seed.grounded`: every
    capitalised word run occurs in it). The tiny writers splice and stutter new
    names ("Skosstoplam Vonthou Vonthou Trasdo"): 44% of the questions on the 5-day bench named no one in
    the document, and the student learnt the teacher's answers about people who do not exist."""
    temperature: float = 0.7
    """Sampling temperature of teacher and student rollouts (no gradient flows through sampling)."""
    replay: bool = True
    replay_fraction: float = 0.5
    """Share of distillation prompts drawn from earlier snapshots, with the champion as teacher (0.5, the
    share the sft-replay baseline gives its replay buffer; 0.3 let each cycle overwrite the one before)."""
    replay_fill: bool = False
    """Repeat the replay arm's prompts (each copy with its own teacher sample) when the buffer's records
    yield fewer than `replay_fraction` asks for. Off, a small buffer gives the arm a smaller share (on the
    bench's 10% buffer, 25-50% of the prompts). [ours] off: on seeds 0-2, ACC 0.135 and BWT -0.246 against
    0.141 and -0.235 (bench/README.md): more of the same few records does not hold more old facts."""
    replay_names: float = Field(0.0, ge=0.0, le=1.0)
    """[ours] Share of today's written questions that the replay arm also asks about an invented person, the
    first name of one buffered record's subject and the last name of another (`seed.ask_about_others`),
    answered closed-book by the champion: in the wordings the new expert is taught today, about people it
    is not taught, the answer should stay what the model said. Uses nothing beyond today's documents and
    the bounded buffer. [ours] 0 (off): on seeds 0-2 of the 5-day bench, 0.5 scored ACC 0.483 and BWT
    -0.286 against 0.451 and -0.349, acquisition 0.74 of the in-context ceiling against 0.77 (one seed of
    three worse on both); 1.0 forgot a little less and learnt less (0.436, -0.275, 0.68); the buffer's
    real names instead of invented ones changed nothing (0.453, -0.321). Re-run on five seeds at f36cb11
    (stop 23), paired with the default: ACC -0.009 +- 0.046, BWT +0.018 +- 0.034, acquisition -0.035 of
    the ceiling: no effect. bench/README.md."""
    self_replay: int = 0
    """[ours] Generative replay: texts the champion writes from an empty prompt (T = 1, up to 64 tokens)
    join the replay pool beside the buffer's records; the champion then writes questions about them and
    answers closed-book, as for any replayed record. No external data: it rehearses what the champion
    itself would say, so the arm exists even with no replay buffer (the paper's setting). [ours] 0 (off):
    64 on the 5-day bench fell from ACC 0.162 to 0.109 with KL drift 1.27 against 0.91 (bench/README.md); the
    tiny champion's unconditional samples are mostly invented people, and anchoring to them costs the
    day's learning."""
    replay_context: bool = False
    """The replay teacher (the champion) reads the replayed record in its prompt, as the context teacher
    reads the day's documents; off, it answers replay prompts from its weights alone. [ours] off: on, the
    5-day bench fell from ACC 0.162 to 0.067 with 5x the KL drift (bench/README.md): closed-book replay
    anchors the student to the champion, in-context replay pulls it towards a different distribution."""
    anchor: float = 0.0
    """Weight of the activation anchor (`sleepcycle.anchor`): a penalty on how much the new expert changes
    each expert-bearing projection's output on the inputs of the texts earlier cycles trained on, relative
    to the projection's own output there. The checkpoint keeps one input second-moment matrix per
    projection (no text). 0 = off (the moments are still collected, and the penalty is still logged).
    [ours] Left unset, it follows `routing`: 0 with ``entity``, 20 with ``all`` (`ANCHOR_WITHOUT_ROUTING`).
    With routing keying the base and each expert (stop 25), the anchor holds nothing routing does not and
    costs what it holds back: over five seeds (sleep-nodream) 20 gives ACC -0.076 and acquisition -0.110 of
    the ceiling, BWT and day-0 retention unchanged, but general loss -0.246 and KL drift -0.239 nats after
    five days (bench/README.md). Without routing it is what holds earlier days: BWT -0.370 at 20 against
    -0.559 at 0 (seed 0), and before routing 50, 100 and 200 forgot less (BWT -0.19, -0.15, -0.13) but
    learnt less (ACC 0.325, 0.300, 0.254 against 0.339 at 20, lr 3e-3). The ``sleep-nodream-anchor``
    ablation sets 20."""
    anchor_per_cycle: bool = False
    """[ours] Count the anchor once per earlier cycle (its average over them times their number) instead of
    once for their average, in Seeding and in Dreaming's consolidation. The average gives each earlier day
    1/k of the weight once k days are held, and on the 5-day bench the day just before is the one forgotten
    most, more so each day. Off: over five seeds
    (sleep-nodream) BWT +0.053 ± 0.034 but acquisition 0.72 of the in-context ceiling against 0.76 and ACC
    unchanged (+0.002), the trade of a stronger anchor (bench/README.md)."""
    anchor_first: bool = False
    """[ours] The first cycle of a line has no earlier cycle's moments, so its expert trains without the
    activation anchor (on the 5-day bench its output on any day's questions is 5-6x a later expert's).
    On: that cycle anchors on the replay arm's texts instead (questions about the bounded buffer's records
    with the champion's closed-book answers where already sampled), counted as one earlier cycle. Needs the
    replay arm. [ours] off: on the 5-day bench (sleep-nodream, seeds 0-4) ACC 0.421 against 0.465 (lower
    on every seed), BWT -0.337 against -0.318, acquisition 0.71 of the in-context ceiling against 0.76;
    day 1 learns less and the later days forget as much (bench/README.md)."""
    rollout_reuse: int = 4
    """Steps whose on-policy samples and LTI rollouts are drawn together (1 = fully on-policy)."""
    fast_steps: int = 60
    fast_lr: float = 1e-2
    max_new_tokens: int = 32


class GenerationConfig(Strict):
    """Where completions are sampled: rollouts of seeding, dream sampling and evaluation (`sleepcycle.generate`)."""

    backend: Literal["hf", "vllm"] = "hf"
    """``hf``: in-process with the model being trained (any machine). ``vllm``: a vLLM engine on the GPU
    with experts served as LoRA adapters (the ``gpu`` extra), or, when ``SLEEPCYCLE_VLLM_URL`` is set, an
    OpenAI-compatible vLLM server at that address (started with ``--enable-lora``)."""
    batch_size: int = 64
    """Prompts per forward pass of the ``hf`` backend."""
    fast_decode: bool = True
    """``hf`` backend: decode Llama-family models (experts included) with `sleepcycle.fastdecode`, the
    same arithmetic as the HF forward without its per-module overhead; false: always the HF forward."""
    gpu_memory_utilization: float = 0.3
    """Share of GPU memory a vLLM engine may take (training shares the GPU with it)."""
    max_lora_rank: int = 128
    """Largest LoRA rank the vLLM engine accepts: the active experts are served as one adapter whose
    rank is the sum of theirs (rank x experts in use)."""
    max_loras: int = 4
    """Adapters a vLLM engine keeps on the GPU at once (teacher, student, champion views of one base)."""


class DistributedConfig(Strict):
    """Data-parallel training under DeepSpeed (`sleepcycle.distributed`; the ``distributed`` extra).
    How many ranks a stage runs on changes its result (each rank samples its own shard with its own seed),
    so this section is part of a stage's cache key like the rest of the config."""

    nproc: int = Field(1, ge=1)
    """Ranks of Knowledge Seeding and of Dreaming's consolidation. 1: in the caller's process
    (`sleepcycle.seed.seed`, `sleepcycle.dream.dream`). N > 1: the flow's stages launch ``sleepcycle
    seed-dist`` / ``dream-dist`` as a subprocess with N processes under `launcher`: one per GPU, or gloo
    processes on CPU (`sleepcycle.launch`)."""
    deepspeed: str = "zero2"
    """ZeRO config of seeding: ``zero1``, ``zero2`` or ``zero3`` (``configs/deepspeed/``), or a path to a
    DeepSpeed JSON. ZeRO-3 trains on teacher samples only (``distill.lmbda=0``, ``distill.lti=false``).
    Dreaming's consolidation trains one expert and runs without ZeRO (`sleepcycle.distributed`)."""
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    """``torchrun --standalone`` (any machine) or DeepSpeed's own ``deepspeed`` launcher (GPUs)."""


class DreamConfig(Strict):
    enabled: bool = True
    dreams_per_doc: int = 24
    """Dreams written per document and round. [ours] 24 (stop 35; was 12, before that 6), with
    ``importance=grad_norm``: writing twice the pairs selection keeps (about 350 well-formed a round for the
    192 + 64 kept) lets the importance choose what Seeding left out (see `importance`). At 24 with the cosine
    (stop 34) there is no multi-hop gain over 12 (+0.003 against `sleep` of then, five seeds); at stop 32 (16
    Seeding questions a document) 24 traded multi-hop for ACC. Distilled pairs (`consolidation`) pay more the
    more distinct ones a day rehearses, each fewer times. Targeting harder loses: at 48 (256 kept of about
    twice as many) multi-hop falls 0.067 +- 0.032 and ACC 0.019 against 24 (five seeds; bench/README.md,
    stops 32-35)."""
    kinds: tuple[str, ...] = ("qa",)
    """Which dreams to write: ``implication``, ``qa`` (a question the writer asks about the document, and its
    answer), ``rewrite``. [ours] question-answer pairs only (stop 32; before: all three). Pairs are the kind
    that teaches a closed-book probe (`bench/dream_transfer.py`, stop 27): a perfect statement put 7-11% of
    a checkpoint's wrong answers right, a perfect pair 32-100%. Distilled with the same settings, the three
    kinds together trail pairs alone (seeds 0-2 against `sleep-nodream`: ACC -0.060 against -0.044,
    multi-hop -0.024 against +0.016; stop 32)."""
    random_expert: bool = False
    """While sampling dreams, switch on one random extra expert per layer (the paper's diversity switch).
    [ours] off by default: while the drifted champion wrote the dreams it raised the KL drift from the
    champion in every run and cost ACC in five runs of six; with the base writing (`writer`) it moves no
    knowledge measure and costs general ability (five seeds at the stop-32 defaults: ACC -0.027 +- 0.027,
    multi-hop -0.014 +- 0.111, general loss +0.032 +- 0.060 against `sleep`; bench/README.md,
    `sleep+random-expert`)."""
    writer: Literal["model", "base", "routed"] = "base"
    """Who writes the dreams and tau's questions: the seeded model (every active expert), or the level's base
    with only the newest expert on (the one ReST-EM trains), so older experts' drift stays out of writing;
    ``routed`` adds, per document, the route the router gives it among the older experts (the dreams
    only: `dream.dream_writers`).
    tau's answers come from the seeded model with the context either way. [ours] base, as
    `distill.writer` (bench/README.md)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of the statement dreams (implications, rewrites); 0 is greedy. The pairs'
    questions are written as Seeding's are (`seed.write_questions`), their answers greedily. [ours] 1: at 0.4
    more dreams are true (0.38 against 0.27) and a third more are two-hop, with no measurable effect on the
    5-day bench (seeds 0-2: ACC +0.002, held-out +0.006, multi-hop -0.006 against `sleep`)."""
    grounded: bool = False
    """[ours] Keep an implication or rewrite only as far as it names people and places as its document
    does, in whole sentences (`seed.grounded_prefix`), as `distill.grounded_questions` does for questions:
    the tiny writers garble and splice names, and consolidation taught the garbled ones. [ours] off: on the
    5-day bench (seed 0, a first version that did not check a sentence's first word) it halved the dreams
    written (75-122 a day against 182-212), the reward rate fell (0.13-0.41 against 0.25-0.44) and ACC
    fell from 0.413 to 0.368: the garbled dreams are not what holds Dreaming back (bench/README.md)."""
    min_confidence: float | None = None
    """[ours] Keep only dreams whose mean token log-probability under tau's teacher reading the dream's
    document is at least this (`dream.verify`); the importance ranks the rest. None: every dream is ranked.
    [ours] off: on the 5-day bench (seeds 0-2) -0.7 doubles the share of kept dreams that are true (0.56
    against 0.28) and changes nothing measurable (ACC -0.001, multi-hop -0.007 against `sleep`); -0.4
    (0.69 true, mostly question-answer pairs) costs ACC 0.028 and multi-hop 0.061, general loss +0.27
    (bench/README.md, stop 27)."""
    random_expert_scale: float = 0.1
    """Size of a random extra expert when no older expert exists: |B A| / |W| per projection."""
    importance: Literal["grad_norm", "grad_cosine", "random"] = "grad_norm"
    """Per-dream score for selection: the norm of the dream's SFT gradient w.r.t. the newest expert
    (default), its cosine to tau's gradient, or random. [ours] The norm keeps the pairs whose answer, the
    writer's with the document, would move the seeded expert most: what Seeding has not yet moved into the
    weights. It pays only where selection drops pairs (`dreams_per_doc` 24). Against the cosine at 24 a
    document (five seeds, stop 34): multi-hop +0.066 +- 0.042 on all 116 probes, ACC +0.010 (5 of 5);
    random selection of the same pairs loses multi-hop 0.048. Made the default (stop 35) by a rule fixed
    before its runs: on fresh seeds 5-9 of two pretrained bases, against 12 a document with the cosine, ACC
    +0.024 / +0.039, held-out (all 580) +0.004 / +0.004, multi-hop (all 116) +0.034 / +0.005
    (bench/README.md, stops 34-35)."""
    keep_top: int = 192
    keep_random: int = 64
    """Selection keeps the `keep_top` most important dreams plus `keep_random` others at random. [ours]
    192 + 64 (was 24 + 8): a distilled dream only chooses what is rehearsed, so a poor one costs little,
    while rehearsing 32 a day ~30 times each over-fits them (distilled pairs, 24 + 8 kept: ACC
    -0.138 +- 0.026 against `sleep-nodream`, seeds 0-2; stop 32). The bench writes 110-170 well-formed
    pairs a round at 12 a document, so selection kept every one of them there; at 24 (the default) it keeps
    about 250 of 350 well-formed a day. The random share matters once selection drops pairs: 256 + 0 at 24
    a document loses held-out (-0.010 +- 0.009, lower on 5 of 5 seeds) and ACC (-0.018) against 192 + 64
    (stop 35)."""
    lora_rank: int = 4
    inner_steps: int = 4
    inner_lr: float = 3e-2
    restem_rounds: int = 1
    """ReST-EM rounds: SFT of the dream writer on rewarded (context, dream) pairs, then dream again. Without
    them, on the 5-day bench (five seeds, stop 32): ACC -0.015 +- 0.018, held-out +0.017 +- 0.010 (higher on
    every seed), multi-hop -0.011 +- 0.074 against `sleep`; on a second pretrained base held-out is
    -0.017 +- 0.009 (lower on every seed): the held-out effect is the base's (bench/README.md)."""
    curriculum: bool = True
    """Consolidate the kept dreams easy to hard by the student's loss (else in random order; five seeds
    without it: ACC +0.012 +- 0.010, multi-hop -0.003 +- 0.085; stop 32)."""
    steps: int = 60
    lr: float = 3e-3
    budget_share: float = 0.3
    """Share of the per-day training-token budget that Dreaming spends (Knowledge Seeding gets the rest).
    [ours] On the 5-day bench (seeds 0-4) every measure but held-out paraphrases falls as the share grows:
    ACC 0.465 / 0.423 / 0.359 and multi-hop 0.339 / 0.266 / 0.231 at 0 / 0.15 / 0.3 (bench/README.md);
    0.3 is kept so that the Dreaming rows and ablations stay comparable. What Dreaming's share buys depends
    on whether Seeding has saturated: `sleep` matches Seeding alone on the same Seeding tokens (42k and 84k
    a day), and trails `sleep-nodream` by ACC 0.171 / 0.055 / 0.010 at 30k / 60k / 120k tokens a day; at 240k
    the two tie (five seeds: ACC +0.001, held-out +0.012, multi-hop +0.004; bench/README.md, stop 28).
    At 32 questions a document (stop 33) Dreaming's 18k tokens add ACC +0.070 and multi-hop +0.154 to the
    42k of Seeding they follow; given to Seeding, the same tokens add +0.106 and +0.171."""
    drift_budget: float = 0.05
    """Max KL drift Dreaming may add: KL(champion || model) on the fixed reference set may exceed the seeded
    model's own drift by this much; beyond it the run stops (or halves lr). The budget is on the increase
    because Seeding itself moves the model 0.06-0.31 nats on the bench: an absolute 0.05 reverted every
    consolidation step until this was fixed."""
    on_drift: Literal["stop", "shrink"] = "shrink"
    consolidation: Literal["sft", "distill"] = "distill"
    """How the kept dreams are learnt: SFT on their tokens, or distillation from the teacher reading each
    dream's document (`dream.DistilledLoss`: the dream picks what is rehearsed, the teacher's full
    distribution is the target). [ours] distill (stop 32; before: sft). Half the pairs the tiny writer
    answers itself are false (stop 27), and SFT learns them as written; distilled, the question is the
    dream's and the answer the document's. With pairs only and every pair kept (above), on the 5-day bench
    (five seeds on each of two pretrained bases, Seeding at 16 questions a document) `sleep` against
    `sleep-nodream`: ACC +0.004 +- 0.033 / +0.020 +- 0.018, multi-hop +0.073 +- 0.039 / +0.046 +- 0.053
    (higher on 5 / 4 seeds of 5), held-out -0.004 +- 0.019 / +0.001 +- 0.012; against SFT on the three kinds, the default before: ACC +0.059 /
    +0.051, multi-hop +0.142 / +0.058 (bench/README.md, stop 32). The gain is what more distinct questions
    distilled from that teacher give: Seeding with 32 questions a document instead of 16 gains as much alone
    (ACC +0.055, multi-hop +0.050), and since that is the default (stop 33) `sleep` against `sleep-nodream`
    is ACC -0.036 +- 0.019 / -0.021 +- 0.017 (lower on every seed), held-out +0.006 / -0.004, multi-hop
    -0.017 +- 0.140 / +0.018 +- 0.140 on the two bases: Dreaming no longer adds what Seeding lacks."""
    replay_share: float = Field(0.0, ge=0.0, lt=1.0)
    """[ours] Share of each consolidation batch given to this cycle's Seeding replay arm (the champion's
    closed-book answers about the bounded buffer's records, read from the seeded checkpoint), so that
    rehearsing the new knowledge also rehearses the old. [ours] 0 (off): at 0.5 on the 5-day bench
    (seed 0) ACC 0.346 against 0.413, BWT -0.361 against -0.339; the day-0 people were held better
    (0.64 against 0.61 after day 5), the wake days' people worse: the bounded buffer is mostly day 0
    (bench/README.md)."""


class GateConfig(Strict):
    min_acquisition: float = 0.3
    min_bwt: float = -0.05
    max_general_loss_delta: float = 0.25
    max_kl_drift: float = 0.1


class FlowConfig(Strict):
    """The Prefect sleep-cycle flow (flows/sleep_cycle.py, flows/deploy.py) and the wake buffer that feeds it.
    Only orchestration lives here: nothing in this section changes what a cycle computes."""

    pressure_threshold: int = 200
    """Wake records waiting for a snapshot that make the model sleep (sleep pressure = waiting / this);
    the sleep-pressure deployment starts a cycle when it is reached."""
    pressure_check_minutes: int = 15
    """How often the sleep-pressure deployment looks at the wake buffer."""
    nightly_cron: str = "0 3 * * *"
    """The nightly deployment's schedule (cron, in `timezone`)."""
    timezone: str = "UTC"
    max_lateness_s: float = 7200
    """A scheduled run starting later than this after its slot is stale: it is skipped, not run late."""
    approval: Literal["auto", "pause", "suspend"] = "auto"
    """How a passed gate waits for a person: ``suspend`` ends the process (no worker held; the run needs a
    deployment and re-runs from cached stages when resumed), ``pause`` keeps the process waiting;
    ``auto`` suspends deployment runs and pauses the others."""
    approval_timeout_s: int = 3 * 24 * 3600
    """After this the approval request expires: state "expired", nothing promoted."""
    lock_wait_s: float = 60
    """How long a second cycle of the same line waits for the line lock before it is refused."""
    lock_lease_s: float = 120
    """Lease of the line lock (renewed while the cycle runs; Prefect needs >= 60). A holder that crashed on
    the host of the next run is released at once; one that crashed elsewhere frees the lock within this."""
    stage_retries: int = 0
    """Prefect retries of a stage that raised (a resumed re-run never recomputes completed stages)."""


class Config(Strict):
    profile: str = "default"
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    eval: EvalConfig = EvalConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    generation: GenerationConfig = GenerationConfig()
    distributed: DistributedConfig = DistributedConfig()
    dream: DreamConfig = DreamConfig()
    gate: GateConfig = GateConfig()
    flow: FlowConfig = FlowConfig()

    def digest(self, *sections: str) -> str:
        """A content hash of the named sections (all if none), for caches keyed on config. A field added
        after caches existed (`KEYED_WHEN_SET`) counts only when it differs from its default, so that adding
        it does not orphan every cached base."""
        data = self.model_dump(mode="json")
        for section, name in KEYED_WHEN_SET:
            if data[section][name] == type(self).model_fields[section].default.model_dump(mode="json")[name]:
                del data[section][name]
        if sections:
            data = {k: data[k] for k in sections}
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


KEYED_WHEN_SET = [("pretrain", "fresh_mentors")]
"""(section, field) pairs that `Config.digest` keys on only when they differ from the default."""


class ConfigError(ValueError):
    """A config that cannot be loaded: unknown profile or key, bad value. The message is one clear line."""


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(node: Any) -> Any:
    """``${NAME}`` in the string values of a profile becomes the variable's value (model directories differ
    per machine: ``${SLEEPCYCLE_MODEL_DIR}/Qwen2.5-0.5B``). An unset variable is left as written, so the
    profile still loads; the path fails with a clear message where it is used (`sleepcycle.models.load`)."""
    if isinstance(node, str):
        return _ENV_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), node)
    if isinstance(node, dict):
        return {k: expand_env(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v) for v in node]
    return node


def _parse_scalar(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = _parse_scalar(raw)
    return data


def load_config(profile: str | Path = "default", overrides: list[str] | None = None) -> Config:
    """Load a profile by name (``configs/NAME.yaml``) or path (``${NAME}`` in its strings expanded from the
    environment, see `expand_env`), then apply dotted overrides."""
    path = Path(profile)
    if not path.suffix:
        path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no config profile {str(profile)!r} (known: {known})")
    data = expand_env(yaml.safe_load(path.read_text()) or {})
    data = apply_overrides(data, overrides or [])
    try:
        return Config(**data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{path.name}: {where}: {err['msg']}") from None
