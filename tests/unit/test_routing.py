"""Entity-keyed expert routing: the keys a snapshot gives and the prefix of experts a prompt gets."""

from sleepcycle.routing import Router, entity_keys
from sleepcycle.world import QA_PROMPT


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
    groups = r.groups(["Who is Doud Todrak?", "Hello there.", "Who taught Doud Todrak?"])
    assert groups == {("e00", "e01"): [0, 2], None: [1]}


def test_a_deep_sleep_drops_the_merged_experts_keys():
    state = _state()
    state["deep_sleeps"] = [{"cycle": 3, "merged": ["e00", "e01", "e02"]}]
    state["active"] = ["e00"]
    state["history"].append({"cycle": 3, "expert": "e00", "keys": ["Skilhou Pasto"]})
    r = Router.from_state(state)
    assert r.experts == (("e00", frozenset({"Skilhou Pasto"})),)
    assert r.route("Who is Doud Todrak?") is None
