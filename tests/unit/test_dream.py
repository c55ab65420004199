"""Dreaming on the tiny profile: drift budget, no probe leakage, the random-expert switch, ReST-EM data."""

import json
import random
from pathlib import Path

import pytest
import torch

from sleepcycle.config import load_config
from sleepcycle.dream import (
    DREAM,
    Dream,
    DriftGuard,
    arm_random_expert,
    consolidate,
    consolidation_examples,
    dream,
    frozen_champion,
    restem_examples,
    seeding_replay,
    with_replay,
)
from sleepcycle.experts import ExpertBank, load_checkpoint
from sleepcycle.generate import sample_ids
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import pretrain
from sleepcycle.seed import seed
from sleepcycle.snapshot import take_snapshot
from sleepcycle.trainer import Example
from sleepcycle.world import World
from unit.helpers import NEW, bench_script, micro_model, old_logits_moved


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    cfg = load_config("tiny")
    champion = pretrain(cfg, workdir=root / "pretrained")
    world = World(cfg.world)
    snap = take_snapshot(
        [d.record() for d in world.documents(1)], root / "snaps", probes=[p.record() for p in world.probes(1)], day=1
    )
    return cfg, snap, seed(cfg, snap, champion, root / "seeded"), world


@pytest.mark.parametrize("random_expert", [False, True])
def test_dreams_are_written_hashed_and_never_contain_probe_questions(seeded, tmp_path, random_expert):
    _, snap, seeded_m, world = seeded
    cfg = load_config("tiny", [f"dream.random_expert={str(random_expert).lower()}"])
    out = dream(cfg, seeded_m, snap, tmp_path / "dreamed")
    rows = [json.loads(x) for x in (Path(out.uri) / "dreams.jsonl").read_text().splitlines()]
    assert rows and {"text", "kind", "importance", "reward"} <= set(rows[0])
    assert "dreams.jsonl" in out.files and out.parents["seeded"] == seeded_m.digest
    probes = [p.question for d in range(0, cfg.world.days + 1) for p in world.probes(d)]
    assert not any(q in r["text"] for q in probes for r in rows)
    stats = json.loads((Path(out.uri) / "dream_stats.json").read_text())
    assert {"distinct_2", "spread"} <= set(stats["rounds"][0]) and "dream/kl_drift" in stats["metrics"]
    assert bool(stats["rounds"][0]["random_expert_sources"]) == random_expert


def test_drift_budget_stops_a_run_that_exceeds_it(seeded, tmp_path):
    cfg, snap, seeded_m, _ = seeded
    strict = load_config("tiny", ["dream.drift_budget=0.0", "dream.on_drift=stop", "dream.steps=4", "dream.lr=0.5"])
    out = dream(strict, seeded_m, snap, tmp_path / "dreamed")
    note = out.meta["drift_note"]
    assert "exceeds" in note or "> budget" in note
    assert "stopped" in note
    assert len(out.meta["drift_history"]) == 1, "the run stopped at its first check"


def test_drift_budget_is_on_the_drift_dreaming_adds_to_the_seeded_model():
    """Seeding already moved the model from the champion: the budget bounds what consolidation adds on top."""
    dc = load_config("tiny", ["dream.drift_budget=0.05", "dream.on_drift=stop", "dream.steps=6"]).dream
    p = torch.nn.Parameter(torch.zeros(3))
    drifts = iter([0.40, 0.44, 0.46])  # the seeded model's drift, then two checks
    guard = DriftGuard(dc, [p], [{"lr": dc.lr}], lambda: next(drifts), lambda _: None)
    assert guard.start == 0.40 and guard.limit == pytest.approx(0.45)
    with torch.no_grad():
        p.add_(1.0)
    assert guard.check(0, 1.0) == "ok", "0.44 is within 0.05 of the seeded drift 0.40"
    with torch.no_grad():
        p.add_(1.0)
    assert guard.check(1, 1.0) == "stop" and "0.4600 > budget 0.4500" in guard.note
    assert torch.equal(p.detach(), torch.ones(3)), "reverted to the last step within the budget"


def test_the_step_that_spends_the_token_budget_is_measured_and_reverted_if_over():
    """A consolidation that its token budget ends between two scheduled checks is still measured on its
    last step: the bench's budget ended runs mid-interval, and their final drift went unchecked (0.118 to
    0.204 nats against a 0.05 budget, seed 0 day 4)."""
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    newest = bank.activate(bank.free_slot())
    cfg = load_config("tiny", ["dream.steps=60", "dream.lr=0.5", "dream.drift_budget=0.0", "dream.on_drift=stop"])
    before = [p.detach().clone() for p in bank.parameters(newest)]
    examples = [Example("", " Ada lives in Velmora. Ada keeps a heron.")]
    reference = [Example("", " Bo lives in Tarsk."), Example("", " Cy works at Nimbus Textiles.")]
    out = consolidate(cfg, bank, newest, tok, examples, reference, lambda _: None, token_budget=1)
    assert [h["step"] for h in out["drift_history"]] == [1], "one step ran, and it was measured"
    assert "stopped at step 1" in out["drift_note"]
    assert all(torch.equal(p, q) for p, q in zip(bank.parameters(newest), before)), "over budget: reverted"
    assert out["kl_drift"] == pytest.approx(out["seeded_kl_drift"])


def test_random_expert_changes_the_sampling_distribution_only_when_enabled(seeded):
    _, _, seeded_m, _ = seeded
    bank, tok, _ = load_checkpoint(Path(seeded_m.uri))
    newest = bank.active[-1]
    prompt = [tok("Document: x\nImplication:", add_special_tokens=False)["input_ids"]] * 4
    ids = torch.tensor(prompt)

    def draw(model):
        return sample_ids(model, prompt, 12, tok.eos_token_id, tok.pad_token_id, 1.0, torch.Generator().manual_seed(3))

    @torch.no_grad()
    def logits():
        return bank.model(ids).logits

    plain, plain_logits = draw(bank.model), logits()
    assert draw(bank.model) == plain  # same seed, same model: same samples
    chosen = arm_random_expert(bank, newest, torch.Generator().manual_seed(0), scale=0.5)
    assert chosen == ["random"] * len(chosen)  # one level-1 expert only: nothing older to borrow
    assert draw(bank.model) == plain and torch.equal(logits(), plain_logits)  # armed, not on: no change
    with bank.using(bank.active + [DREAM]):
        # The tiny profile's MLPs are weak, so a perturbation moves logits by a few hundredths: too little to
        # flip a seeded draw reliably, so the check is on the distribution itself.
        assert (logits() - plain_logits).abs().max() > 1e-3
    assert torch.equal(logits(), plain_logits)  # switched off again


def test_restem_keeps_only_rewarded_pairs():
    docs = ["Ada lives in Velmora."]
    dreams = [
        Dream(0, "implication", "", " Ada lives in Velmora.", reward=1.0),
        Dream(0, "implication", "", " Ada lives in Tarsk.", reward=0.0),
        Dream(0, "qa", "Question: Where does Ada live?\nAnswer:", " Velmora", reward=1.0),
        Dream(0, "rewrite", "", " Velmora is home to Ada.", reward=None),
    ]
    examples = restem_examples(dreams, docs)
    assert [e.target for e in examples] == [" Ada lives in Velmora.", " Where does Ada live?"]
    assert all(e.prompt.startswith("Document: Ada lives in Velmora.\n") for e in examples)


def test_the_cycle_that_grew_the_model_has_nothing_to_dream_into(tmp_path):
    """A grown (or given) larger self trained whole and has no expert: its candidate passes unchanged."""
    from sleepcycle.manifests import Manifest

    state = {"grown": "given", "active": [], "history": [{"cycle": 1, "snapshot": "s", "expert": None}]}
    (tmp_path / "sleep.json").write_text(json.dumps(state))
    grown = Manifest(kind="checkpoint", uri=str(tmp_path))
    assert dream(load_config("tiny"), grown, Manifest(kind="snapshot"), tmp_path / "dreamed") is grown
    assert not (tmp_path / "dreamed").exists()


@pytest.mark.parametrize("writer", ["base", "model"])
def test_dream_writer_runs_with_the_newest_expert_only_or_with_all(seeded, tmp_path, monkeypatch, writer):
    import sleepcycle.dream as dreaming

    cfg, _, first, world = seeded
    snap2 = take_snapshot(
        [d.record() for d in world.documents(2)],
        tmp_path / "snaps",
        probes=[p.record() for p in world.probes(2)],
        day=2,
    )
    second = seed(cfg, snap2, first, tmp_path / "seeded2")
    seen = []
    generate, write = dreaming.generate_dreams, dreaming.write_questions

    def spy(real, at):
        def call(*a, **k):
            seen.append(list(a[at].base_model.active_adapter))
            return real(*a, **k)

        return call

    monkeypatch.setattr(dreaming, "generate_dreams", spy(generate, 1))
    monkeypatch.setattr(dreaming, "write_questions", spy(write, 0))  # QA dreams' and tau's questions
    dreaming.prepare(load_config("tiny", [f"dream.writer={writer}", "dream.restem_rounds=0"]), second, snap2)
    assert len(seen) >= 2
    assert all(active == (["e01"] if writer == "base" else ["e00", "e01"]) for active in seen), seen


def _consolidate_new_dream(weight: float) -> float:
    """Consolidate a NEW-text dream into a fresh expert over a bank anchored on OLD texts; return how much the
    logits on the OLD texts moved."""
    cfg = load_config("tiny", [f"distill.anchor={weight}", "dream.steps=30", "dream.lr=1e-2"])

    def train(bank, tok, anchor, slot):
        consolidate(cfg, bank, slot, tok, [Dream(0, "rewrite", "", NEW).example()], [], lambda _: None, anchor=anchor)

    return old_logits_moved(train)


def test_consolidation_is_held_by_the_anchor_of_earlier_cycles():
    free, anchored = _consolidate_new_dream(0.0), _consolidate_new_dream(100.0)
    assert free > 0 and anchored < 0.5 * free


def test_consolidation_spreads_the_seeding_replay_arm_between_the_dreams_at_its_share(tmp_path):
    rows = [
        {"kind": "qa", "teacher": "new", "text": "Question: Where does Ada live?\nAnswer: Velmora"},
        {"kind": "qa", "teacher": "champion", "text": "Question: Where does Bo live?\nAnswer: Tarsk"},
        {"kind": "statement", "teacher": "champion", "text": "Cy works at Nimbus Textiles."},
    ]
    (tmp_path / "training_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = seeding_replay(Manifest.of_directory(tmp_path, "checkpoint", name="seeded"))
    assert replay == [
        Example("Question: Where does Bo live?\nAnswer:", " Tarsk"),
        Example("", "Cy works at Nimbus Textiles."),
    ]

    dreams = [Example("", f" dream {i}") for i in range(6)]
    many = [Example("Question: q\nAnswer:", f" old {j}") for j in range(10)]
    mixed = with_replay(dreams, many, 0.5, random.Random(0))
    assert [x for x in mixed if x in dreams] == dreams, "the dreams keep their curriculum order"
    assert len(mixed) == 12 and all(sum(x in many for x in mixed[k : k + 4]) == 2 for k in range(0, 12, 4))
    assert with_replay(dreams, many, 0.0, random.Random(0)) == dreams
    assert sorted(x.target for x in with_replay(dreams, replay, 0.5, random.Random(0)) if x not in dreams) == sorted(
        x.target for x in replay
    ), "a smaller arm than the share asks for is used whole"


def test_consolidation_examples_carry_the_seeded_checkpoints_replay_arm_only_when_asked(tmp_path):
    rows = [
        {"kind": "qa", "teacher": "champion", "text": f"Question: Where does Bo{i} live?\nAnswer: Tarsk"}
        for i in range(8)
    ]
    (tmp_path / "training_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seeded = Manifest.of_directory(tmp_path, "checkpoint", name="seeded")
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    dreams = [Dream(0, "rewrite", "", f" Ada{i} lives in Velmora.") for i in range(4)]
    for share, replayed in ((0.0, 0), (0.5, 4)):
        cfg = load_config("tiny", [f"dream.replay_share={share}"])
        out = consolidation_examples(cfg, seeded, bank, tok, dreams, random.Random(0))
        assert sorted(x.target for x in out if x.prompt == "") == sorted(d.target for d in dreams)
        assert sum(x.target == " Tarsk" for x in out) == replayed


def _bank_with_a_trained_looking_expert():
    """A micro expert bank with one active expert whose A and B are both non-zero (a fresh expert has
    B = 0, so A's gradient would be zero)."""
    torch.manual_seed(0)
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=2)
    params = bank.parameters(bank.activate(bank.free_slot()))
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)
    return bank, tok, params


def test_example_grads_give_each_row_its_own_gradient_in_one_pass():
    from sleepcycle.dream import _flat_grad, example_grads
    from sleepcycle.trainer import collate, encode

    bank, tok, params = _bank_with_a_trained_looking_expert()
    texts = [Example("", NEW), Example("Question: Where does Ada Velm live?\nAnswer:", " Velmora"), Example("", "Bo")]
    enc = encode(tok, texts, 128)
    assert len({len(ids) for ids, _ in enc}) == 3  # rows of different lengths: padding must not leak in
    grads = example_grads(bank.model, params, collate(enc, tok.pad_token_id))
    assert grads is not None and grads.shape == (3, sum(p.numel() for p in params))
    for row, e in zip(grads, enc):
        alone = _flat_grad(bank.model, params, collate([e], tok.pad_token_id))
        assert alone.norm() > 0
        torch.testing.assert_close(row, alone, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in params)
    # a parameter that is not a bias-free Linear's weight cannot be split by row
    norm = bank.model.get_base_model().model.norm.weight
    assert example_grads(bank.model, [*params, norm], collate(enc, tok.pad_token_id)) is None


@pytest.mark.parametrize("kind", ["grad_norm", "grad_cosine"])
def test_importance_is_each_dreams_gradient_norm_or_its_cosine_to_taus_and_selection_keeps_the_largest(kind):
    from sleepcycle.dream import Tau, _flat_grad, importance, select
    from sleepcycle.trainer import collate, encode

    bank, tok, params = _bank_with_a_trained_looking_expert()
    dreams = [
        Dream(0, "qa", "Question: Where does Ada Velm live?\nAnswer:", " Velmora"),
        Dream(0, "qa", "Question: Who employs Bo Tarsk?\nAnswer:", " Halden Foods"),
        Dream(0, "implication", "", NEW),
        Dream(0, "rewrite", "", "Bo"),
    ]
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    tau = Tau([(0, enc("Question: Where does Ada Velm live?\nAnswer:"), enc(" Velmora"))])
    cfg = load_config("tiny", [f"dream.importance={kind}"])
    importance(cfg, bank, bank.active[-1], tok, dreams, tau, random.Random(0))

    alone = [_flat_grad(bank.model, params, collate(encode(tok, [d.example()], 128), tok.pad_token_id)) for d in dreams]
    if kind == "grad_norm":
        expected = [g.norm().item() for g in alone]
    else:
        rows = [(q + a, [False] * len(q) + [True] * len(a)) for _, q, a in tau.rows]
        target = _flat_grad(bank.model, params, collate(rows, tok.pad_token_id))
        expected = [torch.nn.functional.cosine_similarity(g, target, dim=0).item() for g in alone]
    assert [d.importance for d in dreams] == pytest.approx(expected, rel=1e-3, abs=1e-5)
    assert len(set(expected)) == len(dreams)  # the scores tell the dreams apart
    kept = select(dreams, 2, 0, random.Random(0))
    assert {id(d) for d in kept} == {id(d) for d in sorted(dreams, key=lambda d: -d.importance)[:2]}
    assert all(d.kept for d in kept) and sum(d.kept for d in dreams) == 2


def test_consolidation_loss_packs_the_dreams_and_matches_the_padded_batch():
    from sleepcycle.distill import packable
    from sleepcycle.dream import sft_loss
    from sleepcycle.trainer import collate, encode, lm_loss

    bank, tok, params = _bank_with_a_trained_looking_expert()
    assert packable(bank.model.get_base_model())  # the packed path is the one under test
    texts = [Example("", NEW), Example("Question: Where does Ada Velm live?\nAnswer:", " Velmora"), Example("", "Bo")]
    texts += [Example("", "Ada Velm works at"), Example("", "Bo Tarsk")]
    chunk = encode(tok, texts, 128)
    padded = lm_loss(bank.model, collate(chunk, tok.pad_token_id))
    packed = sft_loss(bank.model, chunk, tok.pad_token_id)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-6)
    g_padded = torch.autograd.grad(padded, params)
    g_packed = torch.autograd.grad(packed, params)
    for a, b in zip(g_packed, g_padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_written_checkpoints_manifest_names_where_it_lives(seeded, tmp_path):
    cfg, snap, seeded_m, _ = seeded
    out = dream(cfg, seeded_m, snap, tmp_path / "dreamed")
    for m in (seeded_m, out):  # not the `.partial` directory it was written in before the rename
        assert Manifest.read(Path(m.uri)).uri == m.uri and Path(m.uri).is_dir()


def test_a_dream_as_a_lesson_gives_its_teacher_the_document_and_its_student_the_opening():
    from sleepcycle.dream import lesson

    docs = ["Ada Velm lives in Velmora. Ada Velm works at Corvid Systems."]
    qa = lesson(Dream(0, "qa", "Question: Where does Ada Velm live?\nAnswer:", " Velmora"), docs)
    assert (qa.student, qa.target, qa.by) == ("Question: Where does Ada Velm live?\nAnswer:", " Velmora", "context")
    assert qa.teacher == f"Document: {docs[0]}\n" + qa.student
    st = lesson(Dream(0, "implication", "", "Ada Velm works at Corvid Systems."), docs)
    assert (st.student, st.target) == ("Ada Velm", " works at Corvid Systems.")
    assert st.teacher == f"Document: {docs[0]}\nImplication: Ada Velm"


def test_distilled_consolidation_matches_the_teacher_reading_the_document():
    """`DistilledLoss` is the mean over dreams of the per-token divergence between the level's base reading
    the dream's document and the student without it (checked by hand with plain forward passes), and
    consolidating on it brings the student closer to that teacher."""
    from sleepcycle.distill import divergence
    from sleepcycle.dream import DistilledLoss, lesson

    cfg = load_config(
        "tiny", ["dream.consolidation=distill", "dream.steps=20", "dream.lr=1e-2", "dream.drift_budget=100"]
    )
    bank, tok, _ = _bank_with_a_trained_looking_expert()
    slot = bank.activate(bank.free_slot())
    docs = ["Bo Tarsk is a baker by trade. Bo Tarsk owns a parrot.", "Ada Velm lives in Velmora."]
    lessons = [
        lesson(Dream(0, "rewrite", "", "Bo Tarsk owns a parrot."), docs),
        lesson(Dream(1, "qa", "Question: Where does Ada Velm live?\nAnswer:", " Velmora"), docs),
    ]
    champion = frozen_champion(bank, slot)
    loss = DistilledLoss(cfg, bank, tok, lessons, champion)
    teacher = bank.unloaded()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731

    def logp(model, prompt, target):
        ids = torch.tensor([prompt + target])
        return torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float(), -1)

    with torch.no_grad():
        by_hand = []
        for x in lessons:
            target = enc(x.target) + [tok.eos_token_id]
            t, s = logp(teacher, enc(x.teacher), target), logp(bank.model, enc(x.student), target)
            by_hand.append(divergence(t, s, cfg.distill.divergence, cfg.distill.beta).mean())
        before = loss([0, 1])
    torch.testing.assert_close(before, torch.stack(by_hand).mean(), rtol=1e-4, atol=1e-5)
    out = consolidate(cfg, bank, slot, tok, lessons, [], lambda _: None)
    with torch.no_grad():
        after = loss([0, 1])
    assert out["tokens"] == 20 * loss.tokens([0, 1]) and after < 0.5 * before


def test_the_routed_writer_writes_each_document_with_the_older_route_of_whom_it_names():
    from sleepcycle.dream import dream_writers

    model, _ = micro_model()
    bank = ExpertBank(model, rank=4, capacity=4)
    for _ in range(3):
        bank.activate(bank.free_slot(), trainable=False)
    state = {
        "active": ["e00", "e01", "e02"],
        "base_keys": ["Old Maren"],
        "history": [
            {"cycle": 1, "expert": "e00", "keys": ["Jouvo Vefla"]},
            {"cycle": 2, "expert": "e01", "keys": ["Doud Todrak"]},
            {"cycle": 3, "expert": "e02", "keys": ["Skilhou Pasto"]},  # this cycle's: the one dreaming
        ],
    }
    docs = [
        "Skilhou Pasto was mentored by Doud Todrak. Skilhou Pasto lives in Tarsk.",  # a day-2 mentor
        "Skilhou Pasto counts Old Maren as a mentor.",  # a day-0 mentor: the base knows her
        "Skilhou Pasto enjoys chess.",  # names no one learnt before
        "Jouvo Vefla has moved to Tarsk.",  # an update about a day-1 person
    ]
    cfg = load_config("tiny", ["dream.writer=routed", "distill.routing_keys=names"])
    groups = dream_writers(cfg, bank, state, "e02", docs, ["e02"])
    assert sorted(groups) == [(["e00", "e01", "e02"], [0]), (["e00", "e02"], [3]), (["e02"], [1, 2])]
    base = load_config("tiny", ["dream.writer=base"])
    assert dream_writers(base, bank, state, "e02", docs, ["e02"]) == [(["e02"], [0, 1, 2, 3])]


def test_verify_scores_what_each_dream_trains_with_its_document_in_front_of_the_teacher():
    """A dream's confidence is the mean log-probability of its trained tokens (a pair's answer, a statement
    whole, end of text included) after its document and prompt, checked by hand with one forward pass per
    dream; batching several dreams of different lengths changes nothing."""
    from sleepcycle.dream import verify

    bank, tok, _ = _bank_with_a_trained_looking_expert()
    model = bank.model.eval()
    docs = ["Bo Tarsk is a baker by trade. Bo Tarsk owns a parrot.", "Ada Velm lives in Velmora."]
    dreams = [
        Dream(0, "rewrite", "", "Bo Tarsk owns a parrot. Bo Tarsk is a baker by trade."),
        Dream(1, "qa", "Question: Where does Ada Velm live?\nAnswer:", " Velmora"),
        Dream(1, "implication", "", "Ada Velm lives in Velmora."),
    ]
    verify(model, tok, docs, dreams)
    heads = ["Document: " + docs[0] + "\nRewrite:", "Document: " + docs[1] + "\nQuestion: Where does Ada Velm live?\nAnswer:",
             "Document: " + docs[1] + "\nImplication:"]  # fmt: skip
    tails = [" Bo Tarsk owns a parrot. Bo Tarsk is a baker by trade.", " Velmora", " Ada Velm lives in Velmora."]
    for d, head, tail in zip(dreams, heads, tails):
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        prompt, target = enc(head), enc(tail) + [tok.eos_token_id]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([prompt + target])).logits[0, :-1].log_softmax(-1)
        want = logp[len(prompt) - 1 :].gather(1, torch.tensor(target)[:, None]).mean()
        assert d.confidence == pytest.approx(float(want), abs=1e-5)


def test_dreams_below_the_confidence_floor_are_recorded_but_never_kept(seeded, tmp_path):
    cfg, snap, seeded_m, _ = seeded
    floor = load_config("tiny", ["dream.min_confidence=0.0"])  # a mean log-probability is never above 0
    out = dream(floor, seeded_m, snap, tmp_path / "dreamed")
    rows = [json.loads(x) for x in (Path(out.uri) / "dreams.jsonl").read_text().splitlines()]
    assert rows and all(r["confidence"] < 0 and not r["kept"] for r in rows)
    assert out.meta["drift_note"] == "no dreams kept" and out.metrics["dream/kept"] == 0
    assert [r["verified"] for r in out.meta["rounds"]] == [0] * (cfg.dream.restem_rounds + 1)


def test_dream_precision_checks_a_runs_dreams_against_the_world_and_rescores_old_ones(seeded, tmp_path):
    """bench/dream_precision.py on a one-day run laid out as the bench leaves it: every dream is checked,
    and a dream written before dreams carried their confidence gets the one `verify` gave it."""
    import shutil

    from sleepcycle.world import claims

    cfg, snap, seeded_m, world = seeded
    out = dream(cfg, seeded_m, snap, tmp_path / "dreamed")
    work = tmp_path / "run"
    (work / "snapshots").mkdir(parents=True)
    (work / "snapshots" / "s").symlink_to(Path(snap.uri))
    (work / "cycle-1").mkdir()
    (work / "cycle-1" / "seeded").symlink_to(Path(seeded_m.uri))
    shutil.copytree(out.uri, work / "cycle-1" / "dreamed")
    written = [json.loads(x) for x in (work / "cycle-1" / "dreamed" / "dreams.jsonl").read_text().splitlines()]
    old = [{k: v for k, v in r.items() if k != "confidence"} for r in written]
    (work / "cycle-1" / "dreamed" / "dreams.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"method": "sleep", "seed": 0, "days": 1, "config": cfg.model_dump(mode="json")}))

    bench = bench_script("dream_precision")
    result = bench.main([str(run), "--workdir", str(work), "--json", str(tmp_path / "out.json")])

    rows = result["dreams"]
    assert len(rows) == len(written) and json.loads((tmp_path / "out.json").read_text())["kinds"]["all"]
    for r, w in zip(rows, written):
        assert r["confidence"] == pytest.approx(w["confidence"], abs=1e-4)
        said = claims(w["text"])
        assert r["garbled"] == (said is None) and r["true"] == bool(said and all(world.holds(c, 1) for c in said))
    assert result["kinds"]["all"]["stages"]["written"]["n"] == len(written)
    assert result["kinds"]["all"]["stages"]["kept"]["n"] == sum(w["kept"] for w in written)
    assert bench.auc([{"true": True, "s": 2.0}, {"true": False, "s": 1.0}, {"true": False, "s": 2.0}], "s") == 0.75


@pytest.mark.parametrize("temperature", [0.0, 0.4])
def test_statement_dreams_are_sampled_at_the_configured_temperature(temperature):
    """Implications and rewrites are drawn at ``dream.temperature``; the pairs' answers stay greedy."""
    from sleepcycle.dream import generate_dreams

    model, tok = micro_model()
    calls = []

    class Recorder:
        def sample(self, model, prompts, max_new_tokens, temperature=0.0, generator=None):
            calls.append((len(prompts), temperature))
            return [tok(" Where does Ada Velm live?", add_special_tokens=False)["input_ids"]] * len(prompts)

    cfg = load_config("tiny", [f"dream.temperature={temperature}", "dream.dreams_per_doc=3"])
    docs = ["Ada Velm lives in Velmora.", "Bo Tarsk owns a parrot."]
    dreams = generate_dreams(cfg, model, tok, docs, torch.Generator().manual_seed(0), sampler=Recorder())
    statements = [d for d in dreams if d.kind != "qa"]
    assert statements and calls[0] == (len(statements), temperature)
    assert calls[-1][1] == 0.0 and any(d.kind == "qa" for d in dreams)


def test_dream_transfer_trains_each_arm_from_the_same_weights(seeded):
    """bench/dream_transfer.py on the tiny run's seeded checkpoint: every arm starts from the same answers,
    the arm without dreams changes none, and each dream arm writes one dream per wrong probe and wording."""
    cfg, _, seeded_m, world = seeded
    bench = bench_script("dream_transfer")
    rows = bench.main([seeded_m.uri, "--profile", "tiny", "--steps", "2", "--kinds", "fact"])
    (row,) = rows
    arms = row["arms"]
    assert row["day"] == 1 and row["probes"] == sum(p.kind == "fact" for p in world.probes(1))
    assert len({a["right_before"] for a in arms.values()}) == 1
    assert arms["none"] == {
        "right_before": arms["none"]["right_before"],
        "wrong_put_right": 0,
        "right_lost": 0,
        "dreams": 0,
    }
    wrong = row["probes"] - arms["none"]["right_before"]
    probe = next(p for p in world.probes(1) if p.kind == "fact")
    per_probe = {arm: len(bench.dreams_for(world, probe, 1, arm)) for arm in ("statement", "qa")}
    assert wrong > 0 and all(arms[arm]["dreams"] == wrong * n for arm, n in per_probe.items())  # 4 wordings a relation


def nodream_run(seeded, tmp_path: Path, days: int) -> tuple[Path, Manifest]:
    """A sleep-nodream bench run's JSON over `days` of the tiny world, its champion the fixture's base."""
    cfg, _, seeded_m, _ = seeded
    base = pretrain(cfg, workdir=Path(seeded_m.uri).parent / "pretrained")  # the fixture's, cached
    run = tmp_path / "run.json"
    payload = {"method": "sleep-nodream", "seed": 0, "days": days, "config": cfg.model_dump(mode="json")}
    run.write_text(json.dumps({**payload, "champion": {"uri": base.uri}}))
    return run, base


def test_dream_composition_scores_every_two_hop_question_with_both_readers(seeded, tmp_path):
    """bench/dream_composition.py on a two-day run laid out as the bench leaves it: one row per (new person,
    hop relation) and reader; on day 1 both readers are the base, so every way scores the same for both;
    the closed-book hop about the true mentor does not depend on the reader."""
    cfg, _, seeded_m, world = seeded
    run, _ = nodream_run(seeded, tmp_path, days=2)
    work = tmp_path / "run"
    (work / "cycle-1").mkdir(parents=True)
    (work / "cycle-1" / "seeded").symlink_to(Path(seeded_m.uri))
    bench = bench_script("dream_composition")
    result = bench.main([str(run), "--workdir", str(work), "--json", str(tmp_path / "out.json")])

    rows = result["rows"]
    for day in (1, 2):
        items = bench.items_of(world, day)
        assert items and all(world.current(it["x"], "mentor", day) == it["m"] for it in items)
        assert all(world.current(it["m"], it["hop"], day) == it["answer"] for it in items)
        by_reader = {r: [x for x in rows if x["day"] == day and x["reader"] == r] for r in ("base", "checkpoint")}
        assert [len(v) for v in by_reader.values()] == [len(items)] * 2
        for b, c in zip(*by_reader.values()):
            assert b["hop 2, true mentor"] == c["hop 2, true mentor"]
            if day == 1:
                assert all(b[w] == c[w] for w in (*bench.WAYS, "hop 1"))
    assert result["summary"]["base | all"]["n"] == len(rows) // 2
    assert json.loads((tmp_path / "out.json").read_text())["summary"] == result["summary"]


def test_dream_composition_direct_scores_a_base_as_the_composition_scores_seedings_teacher(seeded, tmp_path):
    """`--direct` on the base gives, per mentor origin, the share of the composition's base rows whose
    direct answer is right: the quick check of what a pretraining change does to Seeding's two-hop label."""
    run, base = nodream_run(seeded, tmp_path, days=1)
    bench = bench_script("dream_composition")
    rows = bench.main([str(run), "--workdir", str(tmp_path / "run"), "--json", str(tmp_path / "rows.json")])["rows"]
    direct = bench.main([str(run), "--direct", f"tiny={base.uri}", "--json", str(tmp_path / "direct.json")])
    base_rows = [r for r in rows if r["reader"] == "base"]
    assert direct["tiny"]["all"]["n"] == len(base_rows) > 0
    assert direct["tiny"]["all"]["direct"] == sum(r["direct"] for r in base_rows) / len(base_rows)
    assert json.loads((tmp_path / "direct.json").read_text()) == direct


def test_dream_composition_refuses_a_missing_run_or_base_and_writes_nothing(tmp_path, capsys):
    bench = bench_script("dream_composition")
    out = tmp_path / "out.json"
    for argv in ([str(tmp_path / "none.json"), "--json", str(out)], ["--direct", f"b={tmp_path}", "--json", str(out)]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "no such run JSON" in err and "not a model checkpoint" in err
