"""Base pretraining of the tiny models on day 0 of the world, plus the formats every later stage needs.

The corpus mixes four families of examples (weights in `PretrainConfig.mix`):
- ``bio``: day-0 bios, several paraphrases per person (the base knowledge);
- ``qa``: closed-book questions on day-0 facts, for a share of the people only ("mixed training": the
  rest are known from bios alone, which is how later knowledge arrives), one- and two-hop;
- ``context_qa``: questions answered from documents in the prompt, about *freshly generated* people
  whose facts exist only in those documents (with distractor documents and updates), so the model
  learns a real in-context skill rather than answering from memory (ENV.md calibration);
- ``write``: the writing formats used during sleep: write a question about a document (``ask``
  wordings only), write an implication (a restated fact, or a two-hop fact that needs memory), rewrite.

Evaluation-only wordings (``heldout``) never appear here; ``probe`` wordings appear only as closed-book
questions on day-0 people. A run is cached under ``$SLEEPCYCLE_HOME/pretrained/<digest>`` keyed by the
world, model and pretraining config and `CORPUS_VERSION`. With ``model.path`` set (the ``gpu`` profile) nothing
is trained: the given model's files become the base checkpoint (`import_base`).

Beside the weights the checkpoint's sleep.json holds ``base_keys``, the entities the day-0 bios name: what
`sleepcycle.routing` lets the base alone answer (`key_base`).

    sleepcycle pretrain --config default
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel

from sleepcycle import models
from sleepcycle.config import Config
from sleepcycle.experts import SLEEP_JSON, read_state
from sleepcycle.manifests import Manifest
from sleepcycle.routing import entity_keys, self_confidence, subject_keys
from sleepcycle.trainer import Example, Log, noop, train
from sleepcycle.world import (
    DOC_PREFIX,
    HOP_RELATIONS,
    QA_PROMPT,
    RELATIONS,
    WRITE_IMPLICATION,
    WRITE_QUESTION,
    WRITE_REWRITE,
    Fact,
    Person,
    World,
    render,
)

CORPUS_VERSION = "1"


def home() -> Path:
    return Path(os.environ.get("SLEEPCYCLE_HOME", Path.home() / ".cache" / "sleepcycle"))


def context_prompt(docs: list[str], question: str) -> str:
    return "".join(DOC_PREFIX.format(d=d) for d in docs) + QA_PROMPT.format(q=question)


def closed_prompt(question: str) -> str:
    return QA_PROMPT.format(q=question)


class Corpus:
    """Samples pretraining examples for one world (deterministic given the rng)."""

    def __init__(self, world: World, cfg: Config):
        self.world, self.cfg = world, cfg
        pc = cfg.pretrain
        self.base_docs = [d.text for d in world.base_documents(pc.base_paraphrases)]
        rng = random.Random(f"qa-people-{cfg.world.seed}")
        base = [p for p in world.people if world.current(p, "city", 0) is not None]
        self.base_people = base
        self.qa_people = rng.sample(base, int(len(base) * pc.qa_fraction))
        self.qa_examples = [e for p in self.qa_people for e in self._closed_qa(p)]

    def _closed_qa(self, subject: str) -> list[Example]:
        w, out = self.world, []
        for rel in RELATIONS.values():
            value = w.current(subject, rel.name, 0)
            if value is None:
                continue
            for t in rel.ask + rel.probe:
                out.append(Example(closed_prompt(render(t, subject)), " " + value))
        mentor = w.current(subject, "mentor", 0)
        for hop in HOP_RELATIONS:
            value = w.current(mentor, hop.name, 0) if mentor else None
            if value is None:
                continue
            for t in hop.hop_ask + hop.hop_probe:
                out.append(Example(closed_prompt(render(t, subject)), " " + value))
        return out

    def fresh(self, rng: random.Random) -> Person:
        """A counterfactual person: new name, random facts, a day-0 person as mentor (or, for a share
        `pretrain.fresh_mentors` of them, another new name)."""
        return self.world.fresh_person(rng, self.cfg.pretrain.fresh_mentors)

    def _bio(self, rng: random.Random, p: Person, rels: list[str] | None = None) -> str:
        facts = [Fact(0, p.name, r, v, "base") for r, v in p.facts.items() if rels is None or r in rels]
        return self.world.bio(rng, p.name, facts)

    def _hop_value(self, p: Person, hop: str) -> str | None:
        return self.world.current(p.facts["mentor"], hop, 0)

    def sample(self, rng: random.Random) -> Example:
        family = rng.choices(list(self.cfg.pretrain.mix), weights=list(self.cfg.pretrain.mix.values()))[0]
        return getattr(self, f"_sample_{family}")(rng)

    def _sample_bio(self, rng: random.Random) -> Example:
        return Example("", rng.choice(self.base_docs))

    def _sample_qa(self, rng: random.Random) -> Example:
        return rng.choice(self.qa_examples)

    def _question(self, rng: random.Random, p: Person, rel: str) -> tuple[str, str]:
        wording = rng.choice(RELATIONS[rel].ask + RELATIONS[rel].probe)
        return QA_PROMPT.format(q=render(wording, p.name)), " " + p.facts[rel]

    def _hop_question(self, rng: random.Random, p: Person) -> tuple[str, str] | None:
        hops = [h for h in HOP_RELATIONS if self._hop_value(p, h.name) is not None]
        if not hops:
            return None
        hop = rng.choice(hops)
        return QA_PROMPT.format(q=render(rng.choice(hop.hop_ask + hop.hop_probe), p.name)), " " + str(
            self._hop_value(p, hop.name)
        )

    def _sample_context_qa(self, rng: random.Random) -> Example:
        """Several questions about documents in the prompt, each answer trained (one pass per context).

        Half the time short notes about several people (one or two facts each, some updated by a later
        note): binding a fact to the right name is learnt fastest on short contexts. Otherwise a full
        bio among distractor documents, with a two-hop question now and then."""
        docs: list[str] = []
        turns: list[tuple[str, str]] = []
        if rng.random() < 0.5:
            for _ in range(rng.randint(2, 4)):
                p = self.fresh(rng)
                for rel in rng.sample(list(RELATIONS), rng.randint(1, 2)):
                    if RELATIONS[rel].updatable and rng.random() < 0.25:
                        old = p.facts[rel]
                        p.facts[rel] = rng.choice([v for v in RELATIONS[rel].pool if v != old])
                        docs.append(render(rng.choice(RELATIONS[rel].doc), p.name, old))
                        later = render(rng.choice(RELATIONS[rel].update), p.name, p.facts[rel])
                        docs.insert(rng.randint(len(docs), len(docs)), later)
                    else:
                        docs.insert(
                            rng.randint(0, len(docs)), render(rng.choice(RELATIONS[rel].doc), p.name, p.facts[rel])
                        )
                    turns.append(self._question(rng, p, rel))
        else:
            p = self.fresh(rng)
            docs = [self._bio(rng, p)]
            for _ in range(rng.randint(0, self.cfg.pretrain.max_context_docs - 1)):
                docs.insert(rng.randint(0, len(docs)), self._bio(rng, self.fresh(rng)))
            turns = [self._question(rng, p, rel) for rel in rng.sample(list(RELATIONS), rng.randint(2, 5))]
            hop = self._hop_question(rng, p) if rng.random() < 0.5 else None
            if hop:
                turns.insert(rng.randint(0, len(turns)), hop)
        rng.shuffle(turns)
        first, rest = turns[0], turns[1:]
        prefix = "".join(DOC_PREFIX.format(d=d) for d in docs)
        return Example(prefix + first[0], first[1], tuple(("\n" + q, a) for q, a in rest))

    def _sample_write(self, rng: random.Random) -> Example:
        return self._write(rng)

    def _write(self, rng: random.Random) -> Example:
        """The writing formats, several outputs per document (each trained): questions (``ask``
        wordings only), implications (a restated fact, or a two-hop fact whose second hop is memory),
        or one rewrite."""
        p = self.fresh(rng)
        prefix = DOC_PREFIX.format(d=self._bio(rng, p))
        kind = rng.choices(["question", "implication", "rewrite"], weights=[0.45, 0.4, 0.15])[0]
        if kind == "rewrite":
            return Example(prefix + WRITE_REWRITE, " " + self._bio(rng, p))
        outs = []
        for _ in range(rng.randint(3, 5)):
            hops = [h for h in HOP_RELATIONS if self._hop_value(p, h.name) is not None]
            hop = rng.choice(hops) if hops and rng.random() < 0.3 else None
            rel = rng.choice(list(RELATIONS))
            if kind == "question":
                text = (
                    render(rng.choice(hop.hop_ask), p.name) if hop else render(rng.choice(RELATIONS[rel].ask), p.name)
                )
            elif hop:
                text = render(hop.implication, p.name, self._hop_value(p, hop.name), m=p.facts["mentor"])
            else:
                text = render(rng.choice(RELATIONS[rel].doc), p.name, p.facts[rel])
            outs.append(text)
        head = WRITE_QUESTION if kind == "question" else WRITE_IMPLICATION
        return Example(prefix + head, " " + outs[0], tuple(("\n" + head, " " + o) for o in outs[1:]))

    def tokenizer_texts(self, n_fresh: int = 2000) -> list[str]:
        rng = random.Random(f"tok-{self.cfg.world.seed}")
        examples = self.qa_examples + [self.sample(rng) for _ in range(n_fresh)]
        return list(self.base_docs) + [e.prompt + e.target + "".join(a + b for a, b in e.turns) for e in examples]


def pretrain(cfg: Config, workdir: Path | None = None, log: Log = noop, force: bool = False) -> Manifest:
    """Train the tokenizer and the `cfg.model.size` model on day 0; return the checkpoint manifest.

    Cached: a second call with the same config returns the stored checkpoint without training. With
    ``model.path`` set, the model there is imported instead (`import_base`)."""
    key = cfg.digest("world", "model", "pretrain") + f"-v{CORPUS_VERSION}"
    out = Path(workdir) if workdir else home() / "pretrained" / key
    if not force and (out / "manifest.json").exists():
        manifest = Manifest.read(out)
        manifest.verify(out)
        if not cfg.model.path and "base_confidence" not in read_state(out):  # cached before bases were keyed
            manifest = key_base(out, cfg, manifest)
        return manifest.model_copy(update={"uri": str(out)})  # where it is now (a cache can be moved)
    if cfg.model.path:
        return import_base(cfg, out, key)
    t0 = time.time()
    torch.manual_seed(cfg.pretrain.seed)
    world = World(cfg.world)
    corpus = Corpus(world, cfg)
    tokenizer = models.train_tokenizer(corpus.tokenizer_texts(), cfg.model.vocab_size)
    model = models.build_model(cfg.model, tokenizer, seed=cfg.pretrain.seed)
    rng = random.Random(f"pretrain-{cfg.pretrain.seed}")
    pc = cfg.pretrain
    examples = [corpus.sample(rng) for _ in range(pc.steps * pc.batch_size)]
    stats = train(
        model,
        tokenizer,
        examples,
        steps=pc.steps,
        batch_size=pc.batch_size,
        lr=pc.lr,
        warmup=pc.warmup,
        weight_decay=pc.weight_decay,
        seed=pc.seed,
        log=log,
        desc="pretrain",
    )
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    models.save(model, tokenizer, tmp)
    write_base_keys(tmp, corpus, model, tokenizer)
    manifest = Manifest.of_directory(
        tmp,
        "checkpoint",
        name=f"base-{cfg.model.size}",
        metrics={
            "pretrain_loss": stats["loss"],
            "pretrain_tokens": stats["tokens"],
            "parameters": models.count_parameters(model),
            "wall_clock_s": time.time() - t0,
        },
        meta={"config_key": key, "size": cfg.model.size},
    )
    manifest = manifest.publish(tmp, out)
    return manifest


def confidence_texts(corpus: Corpus, n: int = 64) -> list[str]:
    """The closed-book questions (with answers) of the pretraining corpus that `base_confidence` is measured
    on: a fixed sample of `n`."""
    asked = random.Random("base-confidence").sample(corpus.qa_examples, min(n, len(corpus.qa_examples)))
    return [e.prompt + e.target for e in asked]


def write_base_keys(directory: Path, corpus: Corpus, model: PreTrainedModel, tokenizer) -> None:
    """The checkpoint's sleep.json with no experts, the entities of the day-0 bios as ``base_keys``, the
    people they are about as ``base_subjects`` (`routing.subject_keys`), and how sure the base is of what
    it learnt as ``base_confidence`` (`routing.self_confidence` on 64 of its closed-book questions)."""
    docs = list(corpus.base_docs)
    sure = self_confidence(model.eval(), tokenizer, confidence_texts(corpus))
    state = {
        "active": [],
        "cycle": 0,
        "base_keys": entity_keys(docs),
        "base_subjects": subject_keys(docs),
        "base_confidence": sure,
    }
    (Path(directory) / SLEEP_JSON).write_text(json.dumps(state, indent=2))


def key_base(out: Path, cfg: Config, manifest: Manifest) -> Manifest:
    """Add the routing keys (`write_base_keys`) to a base cached before pretraining wrote them, in place:
    the weights are those of the same config, so the cache entry stays; only its manifest gains the file."""
    model, tokenizer = models.load(out)
    write_base_keys(out, Corpus(World(cfg.world), cfg), model, tokenizer)
    keyed = Manifest.of_directory(out, "checkpoint", name=manifest.name, metrics=manifest.metrics, meta=manifest.meta)
    keyed.write(out)
    return keyed


_PICKLED = (".bin", ".pth", ".pt")


def import_base(cfg: Config, out: Path, key: str = "") -> Manifest:
    """The base checkpoint of a line that starts from a given model (``model.path``): the directory's
    top-level files (weights, config, tokenizer) copied to `out` with a manifest. Pickled weights are left
    behind when safetensors exist; subdirectories (e.g. ``original/``) are not copied."""
    t0 = time.time()
    src = Path(cfg.model.path or "")
    model, _ = models.load(src)  # a clear error before anything is copied
    parameters = models.count_parameters(model)
    del model
    files = [p for p in sorted(src.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix == ".safetensors" for p in files):
        files = [p for p in files if p.suffix not in _PICKLED]
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in files:
        shutil.copy2(p, tmp / p.name)
    manifest = Manifest.of_directory(
        tmp,
        "checkpoint",
        name=f"base-{src.name}",
        metrics={"parameters": parameters, "wall_clock_s": time.time() - t0},
        meta={"config_key": key, "source": str(src)},
    )
    manifest = manifest.publish(tmp, out)
    return manifest
