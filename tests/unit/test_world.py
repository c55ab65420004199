import random
import re

from sleepcycle.config import WorldConfig
from sleepcycle.pretrain import Corpus
from sleepcycle.world import (
    QA_PROMPT,
    RELATIONS,
    World,
    claims,
    iter_probe_templates,
    normalize_answer,
    split_qa,
)


def test_world_is_deterministic_by_seed():
    a, b, c = World(WorldConfig(seed=1)), World(WorldConfig(seed=1)), World(WorldConfig(seed=2))
    assert [d.text for d in a.documents(2)] == [d.text for d in b.documents(2)]
    assert [p.question for p in a.probes(3)] == [p.question for p in b.probes(3)]
    assert [d.text for d in a.documents(2)] != [d.text for d in c.documents(2)]


def test_six_typed_relations_and_day_stream_contents():
    cfg = WorldConfig(days=4)
    world = World(cfg)
    assert len(RELATIONS) >= 6
    for day in range(1, cfg.days + 1):
        kinds = {f.kind for f in world.facts_of_day(day)}
        assert kinds == {"new_entity", "new_fact", "update"}
        new_people = {f.subject for f in world.facts_of_day(day) if f.kind == "new_entity"}
        assert len(new_people) == cfg.new_entities_per_day
        assert sum(f.kind == "update" for f in world.facts_of_day(day)) == cfg.updates_per_day


def test_update_makes_the_old_answer_wrong():
    world = World(WorldConfig())
    update = next(f for f in world.facts if f.kind == "update")
    old = world.current(update.subject, update.relation, update.day - 1)
    assert old is not None and old != update.value
    # A probe from an earlier snapshot about the same fact, evaluated after the update, expects the new value.
    first_day = min(f.day for f in world.facts if (f.subject, f.relation) == (update.subject, update.relation))
    probes = [
        p
        for p in world.probes(first_day, as_of=update.day)
        if p.subject == update.subject and p.relation == update.relation and p.kind == "fact"
    ]
    assert probes and all(p.answer == update.value for p in probes)
    before = [
        p
        for p in world.probes(first_day, as_of=update.day - 1)
        if p.subject == update.subject and p.relation == update.relation and p.kind == "fact"
    ]
    assert all(p.answer == old for p in before)


def test_multihop_probes_combine_facts_from_different_days():
    world = World(WorldConfig())
    hops = [p for d in range(1, 6) for p in world.probes(d) if p.kind == "multihop"]
    assert hops
    for p in hops:
        mentor = world.current(p.subject, "mentor", p.day)
        mentor_day = min(f.day for f in world.facts if f.subject == mentor)
        assert mentor_day < p.day, "the mentor's facts were learned on an earlier day"
        assert p.answer == world.current(mentor, p.relation, p.day)


def test_every_probe_holds_each_drawn_heldout_and_multihop_probe_and_every_wording_and_hop_beside():
    world = World(WorldConfig())
    for day in range(1, 6):
        every = world.every_probe(day, as_of=5)
        drawn = [p for p in world.probes(day, as_of=5) if p.kind in ("heldout", "multihop")]
        assert set(drawn) <= set(every)
        facts = world.facts_of_day(day)
        assert sum(p.kind == "heldout" for p in every) == sum(len(RELATIONS[f.relation].heldout) for f in facts)
        hops = [p for p in every if p.kind == "multihop"]
        assert sum(p.kind == "multihop" for p in drawn) < len(hops) <= 3 * world.cfg.new_entities_per_day
        for p in hops:
            assert p.answer == world.current(world.current(p.subject, "mentor", 5), p.relation, 5)
            assert p.template in RELATIONS[p.relation].hop_probe, "a probe names the wording it was asked in"
        for p in every:
            if p.kind == "heldout":
                assert p.template in RELATIONS[p.relation].heldout
    assert world.every_probe(0) == []


def test_heldout_wordings_never_appear_in_training_text():
    cfg_world = WorldConfig()
    world = World(cfg_world)
    from sleepcycle.config import Config

    corpus = Corpus(world, Config())
    import random

    rng = random.Random(0)
    texts = [
        e.prompt + e.target + "".join(a + b for a, b in e.turns)
        for e in [corpus.sample(rng) for _ in range(3000)] + corpus.qa_examples
    ]
    texts += [d.text for day in range(1, 6) for d in world.documents(day)]
    blob = "\n".join(texts)
    for template in iter_probe_templates("heldout"):
        pattern = re.escape(template).replace(r"\{s\}", ".+?")
        assert not re.search(pattern, blob), template


def test_written_questions_use_ask_wordings_only():
    """What the model learns to *write* never uses probe or held-out wordings."""
    import random

    from sleepcycle.config import Config
    from sleepcycle.world import WRITE_QUESTION

    world = World(WorldConfig())
    corpus = Corpus(world, Config())
    rng = random.Random(0)
    written = []
    for _ in range(400):
        e = corpus._write(rng)
        if e.prompt.endswith(WRITE_QUESTION):
            written += [e.target.strip()] + [t.strip() for _, t in e.turns]
    asks = [re.escape(t).replace(r"\{s\}", ".+") for t in iter_probe_templates("ask")]
    assert written and all(any(re.fullmatch(a, q) for a in asks) for q in written)


def test_normalize_answer():
    assert normalize_answer("The Velmora.") == "velmora"
    assert normalize_answer("  an  Astronomer ") == "astronomer"


def test_a_qa_text_splits_into_its_question_and_answer_and_other_texts_do_not():
    assert split_qa(QA_PROMPT.format(q="Where does Ada live?") + " Velmora") == ("Where does Ada live?", " Velmora")
    assert split_qa(QA_PROMPT.format(q="Where does Ada live?")) == ("Where does Ada live?", "")
    assert split_qa("Ada lives in Velmora.") is None
    assert split_qa("Question: Where does Ada live?") is None  # no answer marker


def test_every_document_and_probe_states_only_what_holds_on_its_day_and_garbled_text_states_nothing():
    world = World(WorldConfig(days=3))
    for day in range(1, 4):
        for doc in world.documents(day):
            said = claims(doc.text)
            assert said and all(world.holds(c, day) for c in said), doc.text
        for p in world.probes(day):
            said = claims(QA_PROMPT.format(q=p.question) + " " + p.answer)
            assert said and all(world.holds(c, day) for c in said), p.question
    person = next(f for f in world.facts_of_day(1) if f.kind == "new_entity" and f.relation == "mentor")
    mentor, city = person.value, world.current(person.value, "city", 1)
    two_hop = f"{person.subject}'s mentor {mentor} lives in {city}."
    assert claims(two_hop) == [(person.subject, ("mentor",), mentor), (mentor, ("city",), city)]
    assert all(world.holds(c, 1) for c in claims(two_hop))
    other = next(c for c in ("Tarsk", "Velmora") if c != city)
    assert not world.holds(claims(f"{mentor} lives in {other}.")[0], 1)
    asked = claims(QA_PROMPT.format(q=f"Where does the mentor of {person.subject} live?") + f" {city}")
    assert asked == [(person.subject, ("mentor", "city"), city)] and world.holds(asked[0], 1)
    assert not world.holds((person.subject, ("mentor",), mentor), 0)  # not yet met on day 0
    for garbled in (
        f"{mentor} lives in {city}.. is a carpenter.",
        "Elderfen is a surgeon by trade..",
        QA_PROMPT.format(q=f"Where does the mentor of {person.subject}?") + f" {city}",
    ):
        assert claims(garbled) is None, garbled


def test_fresh_mentors_put_unknown_mentors_on_the_page_and_leave_the_default_corpus_and_cache_key_alone():
    from sleepcycle.config import Config

    world = World(WorldConfig(days=2))
    default = [world.fresh_person(random.Random(i)) for i in range(40)]
    assert [p.facts for p in default] == [world.fresh_person(random.Random(i), 0.0).facts for i in range(40)]
    assert all(p.facts["mentor"] in world.base_people for p in default)
    fresh = [world.fresh_person(random.Random(i), 1.0) for i in range(40)]
    assert all(p.facts["mentor"] not in world.people and p.facts["mentor"] != p.name for p in fresh)
    half = [world.fresh_person(random.Random(i), 0.5).facts["mentor"] in world.base_people for i in range(200)]
    assert 60 < sum(half) < 140

    cfg = Config(world=WorldConfig(days=2), pretrain={"fresh_mentors": 1.0})
    corpus = Corpus(world, cfg)
    rng = random.Random(0)
    mentors = [corpus.fresh(rng).facts["mentor"] for _ in range(10)]
    assert not set(mentors) & set(world.people)
    # the new field is keyed only when set: caches made before it existed stay valid
    key = Config().digest("world", "model", "pretrain")
    assert key == Config(pretrain={"fresh_mentors": 0.0}).digest("world", "model", "pretrain")
    assert key != Config(pretrain={"fresh_mentors": 0.5}).digest("world", "model", "pretrain")
    assert "fresh_mentors" in Config().model_dump()["pretrain"]  # and still recorded with every run
