"""Knowledge Seeding on the tiny profile: what trains, what must not change, what must never leak."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sleepcycle.anchor import Anchor
from sleepcycle.config import ConfigError, load_config
from sleepcycle.experts import load_checkpoint, load_for_inference, read_state
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import pretrain
from sleepcycle.routing import Router, entity_keys, subject_keys
from sleepcycle.seed import (
    SeedError,
    ask_about_others,
    build_items,
    covering,
    grounded,
    grounded_prefix,
    prepare,
    seed,
    subjects,
    trained_texts,
    write_questions,
)
from sleepcycle.snapshot import SnapshotError, read_documents, take_snapshot
from sleepcycle.world import QA_PROMPT, World


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cfg = load_config("tiny")
    champion = pretrain(cfg, workdir=home / "pretrained")
    return cfg, champion, home


def test_the_base_carries_the_entities_of_its_pretraining_corpus(tiny, tmp_path):
    cfg, champion, _ = tiny
    world = World(cfg.world)
    keys = read_state(Path(champion.uri))["base_keys"]
    assert set(world.base_people) <= set(keys) and "sleep.json" in champion.files
    assert not set(keys) & {p for p in world.people if p not in world.base_people}, "no later person"
    # a base cached before pretraining wrote them gains them in place, and its manifest still verifies
    old = tmp_path / "old"
    shutil.copytree(champion.uri, old)
    (old / "sleep.json").unlink()
    Manifest.of_directory(old, "checkpoint", name=champion.name, metrics=champion.metrics).write(old)
    again = pretrain(cfg, workdir=old)
    again.verify(old)
    assert read_state(old)["base_keys"] == keys and again.files == champion.files
    assert set(read_state(old)["base_subjects"]) == set(world.base_people), "a bio is about its person"
    assert -20 < read_state(old)["base_confidence"] <= 0


def _snapshot(cfg, root, day=1, canary=True):
    world = World(cfg.world)
    records = [d.record() for d in world.documents(day)]
    probes = [p.record() for p in world.probes(day)]
    if canary:  # a probe no model could write by itself: if it reaches training, the data path leaks
        probes.append({"question": "Which zebra-crossing did Qxv Canary paint?", "answer": "the blue one"})
    return take_snapshot(records, root, probes=probes, day=day)


def test_seeding_trains_only_the_new_expert_and_never_sees_probes(tiny, tmp_path):
    cfg, champion, home = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots")
    first = seed(cfg, snap, champion, tmp_path / "c1")
    snap2 = _snapshot(cfg, tmp_path / "snapshots", day=2)
    second = seed(cfg, snap2, first, tmp_path / "c2")
    bank1, _, state1 = load_checkpoint(Path(first.uri))
    bank2, _, state2 = load_checkpoint(Path(second.uri))
    assert state1["active"] == ["e00"] and state2["active"] == ["e00", "e01"]
    # each expert's routing keys are the entities its own snapshot named, carried on by later cycles
    assert state1["history"][0]["keys"] == entity_keys(read_documents(snap)) != []
    assert state2["history"][-1]["keys"] == entity_keys(read_documents(snap2)) != []
    assert state2["history"][-1]["subjects"] == subject_keys(read_documents(snap2)) != []
    assert set(state2["history"][-1]["subjects"]) < set(state2["history"][-1]["keys"])
    # how sure the route ending at each expert is of what it learnt (routing_choice=calibrated): the tiny
    # writer's texts are statements, no question among them, so there is nothing to be sure of
    assert [h["confidence"] for h in state2["history"]] == [None, None]
    written = [json.loads(x) for x in (Path(second.uri) / "training_data.jsonl").read_text().splitlines()]
    assert trained_texts(Path(second.uri)) == [r["text"] for r in written if r["teacher"] == "new"] != []
    assert Router.from_state(state2).confidence == (None, None)
    assert state2["history"][0] == state1["history"][0]
    # the base is byte-identical and the earlier expert bit-identical after the second seeding
    assert first.files["base/model.safetensors"] == second.files["base/model.safetensors"]
    assert first.files["base/model.safetensors"] == Manifest.read(Path(champion.uri)).files["model.safetensors"]
    old = load_file(str(Path(first.uri) / "experts/e00/adapter_model.safetensors"))
    again = load_file(str(Path(second.uri) / "experts/e00/adapter_model.safetensors"))
    assert old.keys() == again.keys() and all(torch.equal(old[k], again[k]) for k in old)
    new = load_file(str(Path(second.uri) / "experts/e01/adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and new[k].abs().sum() > 0 for k in new), "the new expert trained"
    # no probe question (and certainly not the canary) reaches any training text
    probes = [json.loads(x)["question"] for x in (Path(snap.uri) / "probes.jsonl").read_text().splitlines()]
    for ckpt in (first, second):
        texts = [json.loads(x)["text"] for x in (Path(ckpt.uri) / "training_data.jsonl").read_text().splitlines()]
        assert texts
        assert not any(q in t for q in probes for t in texts)
    assert second.parents == {"snapshot": second.parents["snapshot"], "champion": first.digest}
    # the activation anchor gathers one cycle of input moments per seeding, and the checkpoint carries them
    assert Anchor.load(Path(first.uri)).cycles == 1 and Anchor.load(Path(second.uri)).cycles == 2
    # the next seeding's trainer holds the penalty on the new expert's parameters (B = 0: nothing yet)
    s = prepare(cfg, snap, second)
    penalty = s.trainer(cfg, 0).regularizer
    assert penalty is not None and s.slot == "e02" and float(penalty().detach()) == 0.0
    assert {id(p) for a, b, *_ in penalty.terms for p in (a, b)} == {id(p) for p in s.params}


def test_experts_on_the_attention_train_there_and_the_line_keeps_that_layout(tiny, tmp_path):
    _, champion, _ = tiny
    cfg = load_config("tiny", ["distill.expert_modules=mlp+attention"])
    snap = _snapshot(cfg, tmp_path / "snapshots")
    first = seed(cfg, snap, champion, tmp_path / "c1")
    assert read_state(Path(first.uri))["modules"] == "mlp+attention"
    new = load_file(str(Path(first.uri) / "experts/e00/adapter_model.safetensors"))
    trained = {k.split(".lora_B.")[0].rsplit(".", 1)[-1] for k in new if "lora_B" in k and new[k].abs().sum() > 0}
    assert {"q_proj", "o_proj", "down_proj"} <= trained
    with pytest.raises(SeedError, match="sit on 'mlp\\+attention', not 'mlp'") as refused:
        prepare(load_config("tiny"), _snapshot(cfg, tmp_path / "snapshots", day=2), first)
    assert not (tmp_path / "c2").exists() and "failed to load" in str(refused.value)


def test_snapshot_with_no_usable_documents_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(SnapshotError, match="no usable documents"):
        take_snapshot([], tmp_path / "snaps")
    with pytest.raises(SnapshotError, match="must not be empty"):
        take_snapshot([{"text": "   "}], tmp_path / "snaps")
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())


def test_champion_that_fails_to_load_is_a_clear_error_and_writes_nothing(tiny, tmp_path):
    cfg, champion, _ = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(SeedError, match="failed to load"):
        seed(cfg, snap, Manifest(kind="checkpoint", uri=str(broken)), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # a damaged activation anchor beside good weights is the same clear error, before any training
    damaged = tmp_path / "damaged"
    shutil.copytree(champion.uri, damaged)
    (damaged / "anchor.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SeedError, match="failed to load: .*anchor.safetensors: not an activation anchor"):
        seed(cfg, snap, Manifest(kind="checkpoint", uri=str(damaged)), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_full_level_deep_sleeps_into_the_base_and_its_keys_then_route_to_the_base(tiny, tmp_path):
    cfg, champion, _ = tiny
    cfg = cfg.model_copy(
        update={
            "distill": cfg.distill.model_copy(update={"experts_per_level": 2}),
            "world": cfg.world.model_copy(update={"days": 3}),
        }
    )
    snaps = [_snapshot(cfg, tmp_path / "snapshots", day=d) for d in (1, 2, 3)]
    c1 = seed(cfg, snaps[0], champion, tmp_path / "c1")
    c2 = seed(cfg, snaps[1], c1, tmp_path / "c2")
    c3 = seed(cfg, snaps[2], c2, tmp_path / "c3")  # the level holds two experts: this cycle deep-sleeps first
    _, tok, state = load_checkpoint(Path(c3.uri))
    assert state["deep_sleeps"] == [{"cycle": 3, "merged": ["e00", "e01"]}] and state["active"] == ["e00"]
    # the new base is the merged level: with the fresh expert off, it answers as the cycle-2 champion did
    merged2, _ = load_for_inference(Path(c2.uri))
    base3, _ = load_for_inference(Path(c3.uri) / "base")
    ids = tok(["Question: Where does Ada Velm live?\nAnswer:"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(base3(input_ids=ids).logits, merged2(input_ids=ids).logits, atol=1e-4)
    assert c3.files["base/model.safetensors"] != c2.files["base/model.safetensors"]
    router = Router.from_state(state)
    merged_only = set(entity_keys(read_documents(snaps[0]))) - set(entity_keys(read_documents(snaps[2])))
    assert merged_only and router.base >= merged_only
    name = sorted(k for k in merged_only if " " in k)[0]
    assert router.route(QA_PROMPT.format(q=f"Where does {name} live?")) == []


def test_unknown_config_key_is_refused():
    from sleepcycle.config import ConfigError

    with pytest.raises(ConfigError, match="distill.stepz"):
        load_config("tiny", ["distill.stepz=3"])


@pytest.mark.parametrize(("expansion", "lr"), [("expert", 3e-3), ("full", 1e-3)])
def test_full_fine_tuning_trains_at_its_own_learning_rate(tiny, tmp_path, expansion, lr):
    from sleepcycle.seed import prepare

    cfg, champion, _ = tiny
    cfg = load_config("tiny", [f"distill.expansion={expansion}", "distill.lr=3e-3", "distill.full_lr=1e-3"])
    s = prepare(cfg, _snapshot(cfg, tmp_path / "snapshots"), champion, write_prompts=False)
    trainer = s.trainer(cfg, run_seed=0)
    assert [g["lr"] for g in trainer.opt.param_groups] == [lr]
    assert (s.slot is None) == (expansion == "full")


def test_seeding_into_a_given_model_with_a_padded_vocabulary_trains_on_the_shared_part(tiny, tmp_path):
    # Models of one family pad their vocabularies to different sizes: the divergences compare the
    # tokenizer's shared part (grow.check_tokenizers), or the teacher's and student's logits differ in size.
    from sleepcycle import models

    cfg, champion, _ = tiny
    larger, tok = models.load(champion.uri)
    larger.resize_token_embeddings(larger.config.vocab_size + 24)
    with torch.no_grad():  # make the padding rows likely: rollouts that could sample them would (and crash)
        head = larger.get_output_embeddings().weight
        head[len(tok) :] = head[tok.eos_token_id] * 3
    models.save(larger, tok, tmp_path / "larger")
    given = ["distill.expansion=given", f"distill.student_path={tmp_path / 'larger'}", "distill.steps=4"]
    cfg = load_config("tiny", [*given, "distill.questions_per_doc=2", "distill.lmbda=1.0"])
    out = seed(cfg, _snapshot(cfg, tmp_path / "snapshots"), champion, tmp_path / "c1")
    student, _ = models.load(out.uri)
    assert student.config.vocab_size == larger.config.vocab_size and out.metrics["seed/steps"] > 0


def test_self_replay_fills_the_replay_arm_without_a_buffer_and_leaves_the_new_items_alone(tiny, tmp_path):
    # Generative replay: the champion's own texts feed the replay arm, so it exists with no external data.
    from sleepcycle.seed import prepare, self_records

    cfg, champion, _ = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots")
    off = prepare(cfg, snap, champion)
    on = prepare(load_config("tiny", ["distill.self_replay=16"]), snap, champion)
    assert len(off.items) == off.n_new, "no buffer and no self-replay: no replay arm"
    assert on.n_new == off.n_new and len(on.items) > on.n_new
    assert all(it.teacher == "champion" for it in on.items[on.n_new :])
    assert all(it.teacher_prompt == it.student_prompt for it in on.items[on.n_new :]), "closed-book"
    # the arm draws from its own generator: the day's items are exactly those of a run without it
    assert [(it.student_prompt, it.teacher_prompt) for it in on.items[: on.n_new]] == [
        (it.student_prompt, it.teacher_prompt) for it in off.items
    ]
    texts = self_records(on.teachers["champion"], on.tok, 16, seed=0)
    assert texts == self_records(on.teachers["champion"], on.tok, 16, seed=0)
    assert texts and all(len(t.split()) >= 5 for t in texts)


def test_replay_fill_gives_the_arm_its_share_when_the_buffer_is_small(tiny, tmp_path):
    from sleepcycle.seed import prepare

    cfg, champion, _ = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots", day=2)
    old = [d.record()["text"] for d in World(cfg.world).documents(1)][:1]  # a one-record buffer
    runs = {
        fill: prepare(load_config("tiny", [f"distill.replay_fill={fill}"]), snap, champion, replay=old)
        for fill in (False, True)
    }
    short, filled = runs[False], runs[True]
    want = round(filled.n_new * cfg.distill.replay_fraction / (1 - cfg.distill.replay_fraction))
    assert 0 < len(short.items) - short.n_new < want, "one record writes fewer replay prompts than the share"
    assert len(filled.items) - filled.n_new == want
    replayed = filled.items[filled.n_new :]
    assert {tuple(it.student_prompt) for it in replayed} == {
        tuple(it.student_prompt) for it in short.items[short.n_new :]
    }
    assert all(it.teacher == "champion" and not it.sample for it in replayed)


def test_subjects_are_the_two_word_names_that_open_a_sentence():
    docs = ["Zouhin Flibi lives in Tarsk. Zouhin Flibi works at Tidewater Energy.", "In spring, Pumfliak Viak moved."]
    assert subjects(docs) == {"Zouhin Flibi"}, "a name inside a sentence or after a comma is not a subject"
    assert subjects(["Gloza Simes keeps a cat! Dodi Katil? Anna"]) == {"Gloza Simes", "Dodi Katil"}


def test_todays_questions_are_asked_about_people_made_of_the_buffers_name_parts():
    import random

    today, others = {"Zouhin Flibi", "Pumfliak Viak"}, ["Gloza Simes", "Dodi Katil"]
    questions = ["Where does Zouhin Flibi live?", "What is a city?", "Who mentored Pumfliak Viak?"]
    twins = ask_about_others(questions, today, others, random.Random(0))
    assert len(twins) == 2, "a question that names none of today's people has no twin"
    for pattern, twin in zip((r"Where does (\w+) (\w+) live\?", r"Who mentored (\w+) (\w+)\?"), twins):
        m = re.fullmatch(pattern, twin)
        assert m and m[1] in {"Gloza", "Dodi"} and m[2] in {"Simes", "Katil"}, twin
    assert twins == ask_about_others(questions, today, others, random.Random(0)), "deterministic by its generator"
    assert ask_about_others(questions, today, [], random.Random(0)) == [], "no buffer: no twins"


def test_replay_names_add_closed_book_twins_of_todays_questions_to_the_replay_arm(tiny, tmp_path, monkeypatch):
    """`distill.replay_names`: a share of the day's questions, asked about invented people from the buffer's
    name parts, join the replay arm with the champion as their closed-book teacher. The tiny profile's model
    writes no valid question, so scripted items stand in for the written ones."""
    import sleepcycle.seed as seeding
    from sleepcycle.distill import Item

    cfg, champion, _ = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots", day=2)
    person = sorted(subjects(read_documents(snap)))[0]
    old = [d.record()["text"] for d in World(cfg.world).documents(1)][:4]
    _, tok = load_for_inference(Path(champion.uri))
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731

    def scripted(c, t, writer, docs, teacher, *a, **k):
        if teacher == "new":
            asked = [f"Where does {person} live?", f"Who employs {person}?", "What is a city?", f"Is {person} tall?"]
            return [Item(enc(QA_PROMPT.format(q=q)), enc(QA_PROMPT.format(q=q)), "new") for q in asked]
        return [Item(enc(QA_PROMPT.format(q="Who?")), enc(QA_PROMPT.format(q="Who?")), "champion")]

    monkeypatch.setattr(seeding, "build_items", scripted)
    runs = {
        share: prepare(load_config("tiny", [f"distill.replay_names={share}"]), snap, champion, replay=old)
        for share in (0.0, 0.5, 1.0)
    }
    replayed = len(runs[0.0].items) - runs[0.0].n_new  # the buffer's own prompts, one per record here
    assert replayed > 0 and len(runs[1.0].items) - runs[1.0].n_new == replayed + 3, "3 of the 4 name a person"
    assert 1 <= len(runs[0.5].items) - runs[0.5].n_new - replayed <= 2, "half of the 4 get a twin"
    firsts, lasts = {t.split()[0] for t in subjects(old)}, {t.split()[1] for t in subjects(old)}
    for r in (runs[0.5], runs[1.0]):
        for it in r.items[r.n_new + replayed :]:
            assert it.teacher == "champion" and it.teacher_prompt == it.student_prompt, "closed-book champion"
            q = tok.decode(it.student_prompt)
            m = re.fullmatch(r"Question: (Where does|Who employs|Is) (\w+) (\w+)( live| tall)?\?\nAnswer:", q)
            assert m and m[2] in firsts and m[3] in lasts, q
    new = [it.student_prompt for it in runs[0.0].items]
    assert [it.student_prompt for it in runs[1.0].items[: len(new)]] == new, "the other items are unchanged"


def test_the_level_base_writes_the_prompts_and_the_configured_teacher_answers(tiny, tmp_path, monkeypatch):
    # distill.writer: the experts drift the champion's writing; the base under them writes the prompts.
    import sleepcycle.seed as seeding

    cfg, champion, _ = tiny
    first = seed(cfg, _snapshot(cfg, tmp_path / "snapshots"), champion, tmp_path / "c1")
    day2 = _snapshot(cfg, tmp_path / "snapshots", day=2)
    base = load_file(str(Path(first.uri) / "base/model.safetensors"))
    writers = []
    build = seeding.build_items
    monkeypatch.setattr(
        seeding, "build_items", lambda c, t, writer, *a, **k: writers.append(writer) or build(c, t, writer, *a, **k)
    )
    for who in ("base", "champion"):
        s = seeding.prepare(load_config("tiny", [f"distill.writer={who}"]), day2, first)
        writer = writers[-1]
        weights = {k: v for k, v in writer.state_dict().items() if k in base}
        assert weights.keys() == {k for k in base if k in writer.state_dict()} and weights
        same_as_base = all(torch.equal(weights[k], base[k]) for k in weights)
        assert same_as_base == (who == "base"), "the base writes without e00; the champion writes with it"
        assert (writer is s.teachers["champion"]) == (who == "champion")
        assert {it.teacher for it in s.items} == {"new"}
        assert (s.teachers["new"] is writer) == (who == "base"), "distill.teacher=base: the base reads the day"
    s = seeding.prepare(load_config("tiny", ["distill.teacher=champion"]), day2, first)
    assert s.teachers["new"] is s.teachers["champion"] and writers[-1] is not s.teachers["champion"]


def test_a_written_question_is_grounded_only_if_it_names_things_as_its_document_does():
    doc = "Zouhin Flibi lives in Tarsk. Zouhin Flibi works at Tidewater Energy. Pumfliak Viak mentored Zouhin Flibi."
    assert grounded("Where does Zouhin Flibi live?", doc)
    assert grounded("In which city does Zouhin Flibi's mentor live?", doc)  # first word and possessive aside
    assert grounded("Who mentored Pumfliak Viak?", doc)
    assert grounded("What is the capital of the city?", doc)  # no names: nothing to check
    assert not grounded("Who taught Zouhin Zouhin Flibi the craft?", doc)  # a stuttered name
    assert not grounded("What is home to Zouhin Viak?", doc)  # two people's names spliced
    assert not grounded("Which company employs Zouhin Flibi at Nimbus Textiles?", doc)  # a name from nowhere
    # distill.named_questions: a question must also name someone the document names
    assert grounded("Where does Zouhin Flibi live?", doc, named=True)
    assert not grounded("What is the capital of the city?", doc, named=True)
    assert not grounded("Who is the mentor of in?", doc, named=True)
    assert not grounded("What work do?", doc, named=True)


def test_a_written_statement_is_kept_in_whole_grounded_sentences_up_to_the_first_that_is_not():
    doc = "Zouhin Flibi lives in Tarsk. By profession, Zouhin Flibi is a baker. Pumfliak Viak mentored Zouhin Flibi."
    whole = "Tarsk is where Zouhin Flibi lives. Zouhin Flibi's mentor Pumfliak Viak is a baker."
    assert grounded_prefix(whole, doc) == whole  # a name as first word, a possessive
    assert grounded_prefix("By profession, Zouhin Flibi is a baker. Zouhin Flibi was mentored", doc) == (
        "By profession, Zouhin Flibi is a baker."  # cut at the token limit: the broken sentence goes
    )
    assert grounded_prefix("Zouhin Flibi lives in Tarsk. Zouhinflibi keeps a cat. Zouhin Flibi bakes.", doc) == (
        "Zouhin Flibi lives in Tarsk."  # a garbled first word ends it, the sentences after it too
    )
    assert (
        grounded_prefix("Zouhin Flibi lives in Tarsk. Pumfliak Flibi lives in Tarsk.", doc)
        == "Zouhin Flibi lives in Tarsk."
    )
    assert grounded_prefix("Vomrol looks after an iguana.", doc) == ""  # nothing grounded is left


def test_grounded_question_writing_keeps_grounded_questions_only_and_at_most_per_doc(tiny):
    """The filter and the cap of `write_questions(ground=True)`. The tiny profile's model writes no valid question
    at all, so the drafts come from a scripted sampler (a stand-in for the writer's samples, nothing else)."""
    cfg, champion, _ = tiny
    model, tok = load_for_inference(Path(champion.uri))
    doc = "Zouhin Flibi lives in Tarsk. Pumfliak Viak mentored Zouhin Flibi."
    drafts = [
        "Where does Zouhin Flibi live?",
        "Who taught Zouhin Zouhin Flibi the craft?",
        "Where does Zouhin Flibi live?",  # a duplicate
        "Who mentored Zouhin Flibi?",
        "Where does Pumfliak Viak live?",  # grounded, but the third of a document that keeps two
        "What is home to Zouhin Viak?",
    ]

    class Scripted:
        def __init__(self, texts=drafts):
            self.prompts, self.texts = 0, texts

        def sample(self, model, prompts, max_new_tokens, temperature=1.0, generator=None):
            self.prompts += len(prompts)
            ids = [tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in self.texts]
            return [ids[k % len(ids)] for k in range(len(prompts))]

    plain, scripted = write_questions(model, tok, [doc], 3, torch.Generator(), Scripted()), Scripted()
    kept = write_questions(model, tok, [doc, doc], 3, torch.Generator(), scripted, ground=True)
    assert scripted.prompts == 12, "twice as many drafts as questions kept"
    # per document: 6 drafts; the stuttered, duplicated and spliced ones go, and the cap keeps three
    assert kept == [(i, q) for i in (0, 1) for q in (drafts[0], drafts[3], drafts[4])]
    three_good = Scripted([drafts[0], drafts[3], drafts[4], drafts[1]])
    two = write_questions(model, tok, [doc], 2, torch.Generator(), three_good, ground=True)
    assert two == [(0, drafts[0]), (0, drafts[3])], "the cap: the third grounded draft is not kept"
    assert (0, "Who taught Zouhin Zouhin Flibi the craft?") in plain, "without ground, garbled names pass"


def test_covering_asks_every_answer_once_before_any_answer_twice():
    drafts = [  # (document, the teacher's answer) in draft order
        (0, " Tarsk"),
        (0, " tarsk.\nQuestion: Who?"),  # the same answer (normalised, first line)
        (0, " hedgehog"),
        (1, " chess"),
        (0, ""),  # no answer: last
        (0, " Tarsk"),
        (0, " Nimbus Textiles"),
        (1, " chess"),
    ]
    assert covering(drafts, 3) == [0, 2, 3, 6, 7], "one question per answer first; document 1 on its own"
    assert covering(drafts, 4) == [0, 1, 2, 3, 6, 7], "then a second wording, in draft order"
    assert covering(drafts, 5) == [0, 1, 2, 3, 5, 6, 7], "a third wording before the empty answer"
    assert covering(drafts, 6) == [0, 1, 2, 3, 4, 5, 6, 7], "the empty answer only when nothing else is left"
    assert covering(drafts, 1) == [0, 3]
    assert covering([], 3) == []


def test_answered_drafts_are_kept_by_covering_with_their_answers_as_teacher_samples(tiny):
    """`build_items` with an answerer: the teacher answers every valid draft, the kept questions cover the
    most answers, and each kept item carries its answer as its teacher sample. The tiny profile's model
    writes no valid question, so a scripted sampler stands in for the writer's and the teacher's samples."""
    cfg, champion, _ = tiny
    cfg = load_config("tiny", ["distill.question_drafts=4", "distill.questions_per_doc=2"])
    model, tok = load_for_inference(Path(champion.uri))
    doc = "Zouhin Flibi lives in Tarsk. Zouhin Flibi keeps a hedgehog."
    questions = [
        "Where does Zouhin Flibi live?",
        "Which city is home to Zouhin Flibi?",
        "What pet does Zouhin Flibi keep?",
    ]
    answers = {questions[0]: " Tarsk", questions[1]: " Tarsk", questions[2]: " hedgehog"}

    class Scripted:
        def __init__(self):
            self.asked = 0

        def sample(self, model, prompts, max_new_tokens, temperature=1.0, generator=None):
            texts = [tok.decode(p) for p in prompts]
            outs = []
            for k, t in enumerate(texts):
                if t.endswith("Write a question:"):
                    out = questions[k % 4] if k % 4 < 3 else "Where does Zouhin Zouhin Flibi live?"  # 4th: garbled
                elif t.endswith("Answer:"):
                    self.asked += 1
                    out = answers[t.split("Question: ")[-1].removesuffix("\nAnswer:")]
                else:
                    out = " Zouhin Flibi lives in Tarsk."
                outs.append(tok(out, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            return outs

    scripted = Scripted()
    items = build_items(cfg, tok, model, [doc], "new", True, torch.Generator(), scripted, answerer=model)
    qa = [it for it in items if it.kind == "qa"]
    assert scripted.asked == 3, "the teacher answers every valid, grounded draft"
    kept = [tok.decode(it.student_prompt) for it in qa]
    assert kept == [f"Question: {questions[0]}\nAnswer:", f"Question: {questions[2]}\nAnswer:"], "Tarsk once, hedgehog"
    assert [tok.decode(it.sample, skip_special_tokens=True) for it in qa] == [" Tarsk", " hedgehog"]
    assert all(tok.decode(it.teacher_prompt).startswith("Document: " + doc) for it in qa)
    plain = build_items(
        load_config("tiny", ["distill.question_drafts=4", "distill.questions_per_doc=2", "distill.cover_answers=false"]),
        tok, model, [doc], "new", True, torch.Generator(), Scripted(), answerer=model,
    )  # fmt: skip
    assert [tok.decode(it.student_prompt) for it in plain if it.kind == "qa"][1] == f"Question: {questions[1]}\nAnswer:"
    assert all(not it.sample for it in plain), "off: the first valid drafts, sampled later by the trainer"


@pytest.mark.parametrize(("openings", "expected"), [(None, 3), (0, 0), (5, 5)])
def test_each_document_keeps_its_configured_number_of_openings_as_statement_items(tiny, openings, expected):
    """`distill.openings_per_doc`: the writer starts that many rewrites of each document, each distinct opening
    is a statement item (the student continues it, the teacher reads the document); None keeps a third of
    `questions_per_doc`, 0 none."""
    cfg, champion, _ = tiny
    sets = ["distill.questions_per_doc=9", "distill.cover_answers=false"]
    cfg = load_config("tiny", [*sets, *([f"distill.openings_per_doc={openings}"] if openings is not None else [])])
    model, tok = load_for_inference(Path(champion.uri))
    doc = "Zouhin Flibi lives in Tarsk."

    class Scripted:
        def sample(self, model, prompts, max_new_tokens, temperature=1.0, generator=None):
            texts = [tok.decode(p) for p in prompts]
            outs = [f" Opening{k} Flibi lives in Tarsk." for k in range(len(texts))]
            return [tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for o in outs]

    items = build_items(cfg, tok, model, [doc], "new", True, torch.Generator(), Scripted())
    statements = [tok.decode(it.student_prompt) for it in items if it.kind == "statement"]
    assert len(statements) == len(set(statements)) == expected
    assert all(s.startswith("Opening") for s in statements)


def test_a_negative_number_of_openings_is_refused_with_the_key_named():
    with pytest.raises(ConfigError, match="distill.openings_per_doc"):
        load_config("tiny", ["distill.openings_per_doc=-1"])


def test_the_first_cycle_anchors_on_the_replay_arms_texts_only_when_asked(tiny, tmp_path):
    cfg, champion, _ = tiny
    snap = _snapshot(cfg, tmp_path / "snapshots", day=2)
    old = [d.record()["text"] for d in World(cfg.world).documents(1)]
    on_cfg = load_config("tiny", ["distill.anchor_first=true"])
    off = prepare(cfg, snap, champion, replay=old)
    assert not off.anchor and off.trainer(cfg, 0).regularizer is None, "no earlier cycle: no anchor by default"
    on = prepare(on_cfg, snap, champion, replay=old)
    assert on.anchor.cycles == 1 and on.trainer(on_cfg, 0).regularizer is not None
    replayed = [it.student_prompt + it.sample for it in on.items[on.n_new :]]  # answers, where already sampled
    assert replayed, "the buffer gave the replay arm prompts"
    expected = Anchor()
    expected.update(on.student, replayed, on.tok.pad_token_id)
    assert on.anchor.moments.keys() == expected.moments.keys()
    assert all(torch.allclose(on.anchor.moments[k], expected.moments[k]) for k in expected.moments)
    # with no replay arm there is nothing to anchor on
    assert not prepare(on_cfg, snap, champion).anchor
