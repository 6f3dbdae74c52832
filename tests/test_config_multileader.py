"""The ``[multi_leader]`` section: policies per prefix, resolvers imported at load, topology."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorusdb.core.causal import LWW, RESOLVER, SIBLINGS
from chorusdb.core.multileader import MultiLeaderSettings
from chorusdb.server.config import parse_config
from test_config_leader import error_for, leader_doc

RESOLVER_NAME = "chorusdb.core.causal:winner"        # any importable callable will do


def multi_doc(section: dict | None = None) -> dict:
    doc = leader_doc()
    doc["cluster"]["mode"] = "multi-leader"
    if section is not None:
        doc["multi_leader"] = section
    return doc


def test_without_a_section_the_defaults_apply():
    config = parse_config(multi_doc(), Path("."))
    assert config.multi_leader == MultiLeaderSettings()
    assert config.core_settings is config.multi_leader


def test_a_full_section_parses_to_the_core_settings():
    config = parse_config(multi_doc({
        "policy": "lww", "topology": "ring", "siblings_max": 4, "clock_offset_ms_max": 250,
        "policies": [{"prefix": "cart:", "policy": "siblings"},
                     {"prefix": "doc:", "policy": "resolver", "resolver": RESOLVER_NAME}]}),
        Path("."))
    settings = config.multi_leader
    assert (settings.default_policy, settings.topology, settings.siblings_max,
            settings.clock_offset_ms_max) == (LWW, "ring", 4, 250)
    (cart, doc) = settings.policies
    assert (cart.prefix, cart.policy, cart.resolver) == (b"cart:", SIBLINGS, None)
    assert (doc.prefix, doc.policy) == (b"doc:", RESOLVER) and callable(doc.resolver)


@pytest.mark.parametrize("section, field, says", [
    ({"policy": "newest"}, "multi_leader.policy", "siblings"),
    ({"topology": "mesh"}, "multi_leader.topology", "star"),
    ({"siblings_max": 0}, "multi_leader.siblings_max", ""),
    ({"quorum": 2}, "multi_leader.quorum", "one of the keys"),
    ({"policy": "resolver"}, "multi_leader.resolver", "module:function"),
    ({"resolver": RESOLVER_NAME}, "multi_leader.resolver", "only with"),
    ({"policy": "resolver", "resolver": "nowhere.at_all:f"}, "multi_leader.resolver",
     "cannot import"),
    ({"policy": "resolver", "resolver": "no-colon"}, "multi_leader.resolver", "module:function"),
    ({"policies": {"prefix": "a"}}, "multi_leader.policies", "array of tables"),
    ({"policies": [{"prefix": "a", "policy": "lww"}, {"prefix": "a", "policy": "lww"}]},
     "multi_leader.policies[1].prefix", "no other policy"),
    ({"policies": [{"prefix": "a", "policy": "lww", "ttl": 1}]},
     "multi_leader.policies[0].ttl", "one of the keys"),
])
def test_a_bad_value_names_its_field(section, field, says):
    error = error_for(multi_doc(section))
    assert error.field == field and says in str(error)


def test_the_section_needs_multi_leader_mode():
    doc = leader_doc()
    doc["multi_leader"] = {"policy": "lww"}
    error = error_for(doc)
    assert error.field == "multi_leader" and "multi-leader" in str(error)
