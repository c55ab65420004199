"""Entity-keyed expert routing: the keys a snapshot gives and the prefix of experts a prompt gets."""

from dataclasses import replace

import pytest
import torch

from sleepcycle.evaluate import Question, answers, is_correct, scored_answers
from sleepcycle.experts import ExpertBank, load_checkpoint, save_checkpoint
from sleepcycle.generate import HFGenerator
from sleepcycle.routing import RoutedModel, Router, entity_keys, routed_accuracy, self_confidence, subject_keys
from sleepcycle.world import QA_PROMPT
from unit.helpers import batch, micro_model


def test_keys_are_names_not_sentence_openers():
    docs = [
        "In free time, Jouvo Vefla likes archery. Jouvo Vefla lives in Thornbury.",
        "Thornbury is where Doud Todrak lives.",
    ]
    assert entity_keys(docs) == ["Doud Todrak", "Jouvo Vefla", "Thornbury"]
    assert entity_keys(["Rain fell. Archery is fun."]) == []  # lone words seen only opening a sentence
    assert entity_keys(["In Thornbury it rains."]) == ["Thornbury"]  # the opener "In" is not part of it
    assert entity_keys(["Jouvo Vefla's mentor Rumvos Zindro works at Yarrow Farms."]) == [
        "Jouvo Vefla",
        "Rumvos Zindro",
        "Yarrow Farms",
    ]


def _state():
    return {
        "active": ["e00", "e01", "e02"],
        "history": [
            {"cycle": 1, "expert": "e00", "keys": ["Jouvo Vefla"]},
            {"cycle": 2, "expert": "e01", "keys": ["Doud Todrak", "Jouvo Vefla"]},
            {"cycle": 3, "expert": "e02", "keys": ["Skilhou Pasto"]},
        ],
    }


def test_route_is_the_prefix_up_to_the_newest_expert_that_named_it():
    r = Router.from_state(_state())
    assert r.route(QA_PROMPT.format(q="Where does Doud Todrak live?")) == ["e00", "e01"]
    assert r.route(QA_PROMPT.format(q="What is the home city of Jouvo Vefla's mentor?")) == ["e00", "e01"]
    assert r.route(QA_PROMPT.format(q="Where does Skilhou Pasto live?")) is None  # the newest: every expert
    assert r.route(QA_PROMPT.format(q="Where does Nobody Known live?")) is None
    assert r.route("Doud Todraks and Jouvo Vefla Trasdo") is None  # a longer name is another entity
    # the candidates, oldest first: every prefix that ends at an expert the prompt names
    assert r.candidates("Who taught Jouvo Vefla?") == [("e00",), ("e00", "e01")]
    assert r.candidates("Did Jouvo Vefla meet Skilhou Pasto?") == [("e00",), ("e00", "e01"), None]
    assert r.candidates("Hello there.") == [None]


def test_after_a_deep_sleep_the_merged_experts_keys_route_to_the_base_alone():
    state = _state()
    state["deep_sleeps"] = [{"cycle": 4, "merged": ["e00", "e01", "e02"]}]
    state["active"] = ["e00", "e01"]  # slots reused after the deep sleep hold new experts
    state["history"] += [
        {"cycle": 4, "expert": "e00", "keys": ["Skilhou Pasto", "Mira Dost"]},
        {"cycle": 5, "expert": "e01", "keys": ["Tane Oru"]},
    ]
    r = Router.from_state(state)
    assert r.experts == (("e00", frozenset({"Skilhou Pasto", "Mira Dost"})), ("e01", frozenset({"Tane Oru"})))
    assert r.base == {"Jouvo Vefla", "Doud Todrak", "Skilhou Pasto"}
    assert r.route("Who is Doud Todrak?") == []  # merged: the base as it stood, without the newer experts
    assert r.candidates("Where does Skilhou Pasto live?") == [(), ("e00",)]
    assert r.route("Where does Skilhou Pasto live?") == ["e00"]  # named again since: up to that expert
    assert r.route("Where does Mira Dost live?") == ["e00"]
    assert r.route("Where does Tane Oru live?") is None
    assert r.route("Who is Nobody Known?") is None
    # with no expert since the deep sleep, the base is every expert there is
    assert Router((), frozenset({"Doud Todrak"})).route("Who is Doud Todrak?") is None


def test_the_pretraining_corpus_keys_the_base():
    state = {**_state(), "base_keys": ["Doud Todrak", "Old Maren"], "base_confidence": -0.003}
    for h, sure in zip(state["history"], (-0.02, -0.05, -0.04)):
        h["confidence"] = sure
    r = Router.from_state(state)
    assert r.base == {"Doud Todrak", "Old Maren"}
    # how sure each route is of what it learnt: the base's, else its newest expert's
    assert [r.reference(x) for x in [(), ("e00",), ("e00", "e01"), None]] == [-0.003, -0.02, -0.05, -0.04]
    assert r.candidates("Where does Old Maren live?") == [()]  # named by no expert: the base alone
    assert r.candidates("Where does Doud Todrak live?") == [(), ("e00", "e01")]  # learnt more about since
    assert r.candidates("Where does Skilhou Pasto live?") == [None]
    assert r.candidates("Hello there.") == [None]
    # a deep sleep adds the merged experts' keys to the corpus's
    deep = {**state, "deep_sleeps": [{"cycle": 4, "merged": ["e00", "e01", "e02"]}], "active": []}
    assert Router.from_state(deep).base == {"Doud Todrak", "Old Maren", "Jouvo Vefla", "Skilhou Pasto"}


def test_subject_keys_are_what_each_document_is_about():
    bio = "Jouvo Vefla lives in Thornbury. Jouvo Vefla was mentored by Doud Todrak. Jouvo Vefla likes chess."
    note = "Doud Todrak has moved to Elderfen."
    assert subject_keys([bio]) == ["Jouvo Vefla"]  # the mentor and the city are named once, the person 3 times
    assert subject_keys([note]) == ["Doud Todrak", "Elderfen"]  # a tie: both
    assert subject_keys([bio, note]) == ["Doud Todrak", "Elderfen", "Jouvo Vefla"]
    assert subject_keys(["Jouvo Vefla Trasdo met Jouvo Vefla. Jouvo Vefla Trasdo left."]) == ["Jouvo Vefla Trasdo"]
    assert subject_keys(["no names here", ""]) == []


def test_with_subject_keys_an_expert_that_only_mentioned_someone_is_no_route_for_them():
    state = {
        **_state(),
        "base_keys": ["Doud Todrak", "Old Maren"],
        "base_subjects": ["Old Maren"],
    }
    state["history"][1]["subjects"] = ["Jouvo Vefla"]  # day 2 named Doud Todrak, but only as someone's mentor
    names, subjects = Router.from_state(state), Router.from_state(state, keys="subjects")
    assert names.candidates("Where does Doud Todrak live?") == [(), ("e00", "e01")]
    assert subjects.candidates("Where does Doud Todrak live?") == [None]  # nothing was about him
    assert subjects.candidates("Where does Old Maren live?") == [()]
    assert subjects.candidates("Who taught Jouvo Vefla?") == [("e00",), ("e00", "e01")]
    # entries written before subjects were stored route by their names
    assert subjects.candidates("Where does Skilhou Pasto live?") == [None]
    with pytest.raises(ValueError, match="unknown routing keys"):
        Router.from_state(state, keys="topics")


def _two_expert_checkpoint(path):
    """A micro checkpoint with experts e00 (keyed "Ada Velm") and e01 (keyed "Bo Tarsk"), both non-zero."""
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    torch.manual_seed(0)
    for _ in range(2):
        name = bank.activate(bank.free_slot())
        with torch.no_grad():
            for p in bank.parameters(name):
                p.add_(torch.randn_like(p) * 0.5)
    history = [{"cycle": 1, "expert": "e00", "keys": ["Ada Velm"]}, {"cycle": 2, "expert": "e01", "keys": ["Bo Tarsk"]}]
    save_checkpoint(bank, tok, path, state={"cycle": 2, "history": history})
    return tok


def test_a_routed_checkpoint_answers_each_question_with_the_experts_of_its_route(tmp_path):
    tok = _two_expert_checkpoint(tmp_path / "ckpt")
    answerer, _ = RoutedModel.load(tmp_path / "ckpt", choice="newest")
    bank, _, _ = load_checkpoint(tmp_path / "ckpt")
    with bank.using(["e00"]):
        first_only = bank.merged().eval()
    every = bank.merged().eval()
    ids, mask = batch(tok)
    with torch.no_grad():
        got = answerer.model(["e00"])(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(got, first_only(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
        assert not torch.allclose(got, every(input_ids=ids, attention_mask=mask).logits, atol=1e-3)
    # each question is scored against what its own route's model answers, in the caller's order
    asked = [
        "Where does Ada Velm live?",
        "Where does Bo Tarsk live?",
        "Where is Velmora?",
        "Who owns Ada Velm's parrot?",
    ]
    expected = [first_only, every, every, first_only]
    preds = [answers(m, tok, [Question(q, "")])[0] for q, m in zip(asked, expected)]
    wrong = [
        answers(m, tok, [Question(q, "")])[0]
        for q, m in zip(asked, [every if m is first_only else first_only for m in expected])
    ]
    assert preds != wrong, "the two routes answer differently, or this test could not tell them apart"
    qs = [Question(q, p) for q, p in zip(asked, preds)]
    assert routed_accuracy(answerer, tok, qs) == (1.0, [True] * 4)
    assert routed_accuracy(answerer, tok, [])[1] == []
    # routing "all" (the paper) answers everything with every expert
    flat, _ = RoutedModel.load(tmp_path / "ckpt", routing="all")
    assert not flat.routes and flat.model(["e00"]) is flat.all
    flat_preds = answers(every, tok, qs)
    assert routed_accuracy(flat, tok, qs)[1] == [is_correct(p, q.answer) for p, q in zip(flat_preds, qs)]
    with pytest.raises(ValueError, match="unknown routing"):
        RoutedModel.load(tmp_path / "ckpt", routing="subject")
    with pytest.raises(ValueError, match="unknown routing choice"):
        RoutedModel.load(tmp_path / "ckpt", choice="vote")


def test_scored_answers_are_the_greedy_answers_with_their_mean_token_log_probability():
    model, tok = micro_model()
    qs = [Question("Where does Ada Velm live?", ""), Question("Who is Bo Tarsk?", "")]
    scored = scored_answers(model, tok, qs, max_new_tokens=6)
    assert [t for t, _ in scored] == answers(model, tok, qs, max_new_tokens=6)
    prompt = tok(QA_PROMPT.format(q=qs[1].question), add_special_tokens=False)["input_ids"]
    out = tok(scored[1][0], add_special_tokens=False)["input_ids"]
    gen = HFGenerator(tok.eos_token_id, tok.pad_token_id).sample(model, [prompt], 6, 0.0, None)[0]
    gen = list(gen)[: list(gen).index(tok.eos_token_id) + 1] if tok.eos_token_id in gen else list(gen)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + gen])).logits[0].float(), -1)
    expected = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(gen)) / len(gen)
    assert out and scored[1][1] == pytest.approx(expected, abs=1e-4) and expected < 0


def test_with_confidence_a_question_gets_the_answer_its_most_confident_candidate_gives(tmp_path):
    tok = _two_expert_checkpoint(tmp_path / "ckpt")
    answerer, _ = RoutedModel.load(tmp_path / "ckpt", choice="confidence")
    both = [Question(q, "") for q in ("Did Ada Velm meet Bo Tarsk?", "Is Bo Tarsk older than Ada Velm?")]
    assert all(answerer.router.candidates(q.question) == [("e00",), None] for q in both)
    first, every = scored_answers(answerer.model(["e00"]), tok, both), scored_answers(answerer.all, tok, both)
    expected = [max(a, b, key=lambda x: x[1])[0] for a, b in zip(first, every)]
    assert [a[0] for a in first] != [b[0] for b in every], "the candidates answer differently"
    qs = [Question(q.question, e) for q, e in zip(both, expected)]
    assert routed_accuracy(answerer, tok, qs) == (1.0, [True, True])
    # with a margin no older route clears, the newest candidate answers (every expert, here)
    answerer.margin = float("inf")
    newest = [Question(q.question, text) for q, (text, _) in zip(both, every)]
    assert all(text for text, _ in every) and routed_accuracy(answerer, tok, newest) == (1.0, [True, True])
    answerer.margin = 0.0
    # a question with one candidate is answered by it, confidence or not
    asked = "Where does Ada Velm live?"
    only = Question(asked, answers(answerer.model(["e00"]), tok, [Question(asked, "")])[0])
    assert routed_accuracy(answerer, tok, [only])[1] == [True]


def test_calibrated_weighs_each_routes_answer_against_how_sure_it_is_of_what_it_learnt(tmp_path):
    tok = _two_expert_checkpoint(tmp_path / "ckpt")
    answerer, _ = RoutedModel.load(tmp_path / "ckpt", choice="calibrated")
    both = [Question(q, "") for q in ("Did Ada Velm meet Bo Tarsk?", "Is Bo Tarsk older than Ada Velm?")]
    first, every = scored_answers(answerer.model(["e00"]), tok, both), scored_answers(answerer.all, tok, both)
    assert [a[0] for a in first] != [b[0] for b in every], "the candidates answer differently"

    def right(refs):
        (c0, c1), picks = refs, []
        for (a, sa), (b, sb) in zip(first, every):
            picks.append(a if sa - c0 > sb - c1 else b)  # the newer answers unless the older is surer
        return [Question(q.question, e) for q, e in zip(both, picks)]

    # no references stored (an older checkpoint): plain confidence
    assert answerer.router.confidence == (None, None)
    assert routed_accuracy(answerer, tok, right((0.0, 0.0))) == (1.0, [True, True])
    # a route sure of everything it learnt must be surer still to win
    for refs in ((0.0, -10.0), (-10.0, 0.0), (-0.5, -0.1)):
        answerer.router = replace(answerer.router, confidence=refs)
        assert routed_accuracy(answerer, tok, right(refs)) == (1.0, [True, True]), refs
    assert right((0.0, -10.0)) != right((-10.0, 0.0))


def test_self_confidence_is_the_median_score_of_the_greedy_answers_to_the_questions_among_texts():
    model, tok = micro_model()
    texts = [QA_PROMPT.format(q=q) + " x" for q in ("Who is Ada Velm?", "Where is Bo Tarsk?", "Why?")]
    scores = sorted(
        s
        for _, s in scored_answers(
            model, tok, [Question(q, "") for q in ("Who is Ada Velm?", "Where is Bo Tarsk?", "Why?")]
        )
    )
    assert self_confidence(model, tok, [*texts, "a statement, not a question"]) == pytest.approx(scores[1])
    assert self_confidence(model, tok, texts, limit=1) == pytest.approx(
        scored_answers(model, tok, [Question("Who is Ada Velm?", "")])[0][1]
    )
    assert self_confidence(model, tok, ["no question here"]) is None


def test_without_routing_an_unset_anchor_is_on():
    from sleepcycle.config import ANCHOR_WITHOUT_ROUTING, load_config

    assert load_config("tiny").distill.anchor == 0.0  # routing holds the earlier days
    assert load_config("tiny", ["distill.routing=all"]).distill.anchor == ANCHOR_WITHOUT_ROUTING > 0
    assert load_config("tiny", ["distill.routing=all", "distill.anchor=0"]).distill.anchor == 0.0
    assert load_config("tiny", ["distill.anchor=5"]).distill.anchor == 5.0
