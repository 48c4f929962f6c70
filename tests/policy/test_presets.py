"""kopt.policy.presets: every named preset builds, knobs apply where they make sense, errors list the choices."""

import pytest

from kopt.policy import Policy, PolicyError
from kopt.policy.presets import PRESET_NAMES

pytestmark = pytest.mark.backends


def test_every_preset_builds_and_round_trips():
    assert set(PRESET_NAMES) == {"prune", "prune_2x4", "cluster", "qat", "ptq", "pqat", "cqat", "pcqat", "edgetpu", "micro"}
    for name in PRESET_NAMES:
        policy = Policy.preset(name)
        assert policy.name == name
        assert Policy.from_json(policy.to_json()) == policy


def test_preset_contents():
    assert Policy.preset("prune_2x4").prune.m_by_n == (2, 4)
    assert Policy.preset("ptq").quantize.mode == "ptq"
    assert Policy.preset("pqat").quantize.scheme == "prune_preserve"
    assert Policy.preset("cqat").quantize.scheme == "cluster_preserve"
    pcqat = Policy.preset("pcqat")
    assert pcqat.cluster.preserve_sparsity and pcqat.quantize.scheme == "prune_cluster_preserve"
    assert Policy.preset("edgetpu").target == "edgetpu"
    assert Policy.preset("prune").quantize is None


def test_knobs_override_the_preset():
    policy = Policy.preset("pcqat", sparsity=0.75, number_of_clusters=8, per_channel=True, bits=4, m_by_n=(2, 4))
    assert policy.prune.sparsity == 0.75 and policy.prune.m_by_n == (2, 4)
    assert (policy.cluster.number_of_clusters, policy.cluster.per_channel) == (8, True)
    assert policy.quantize.bits == 4


def test_unknown_preset_lists_valid_names():
    with pytest.raises(PolicyError, match=r"Unknown preset 'pqcat'; valid presets: \['prune', .*'edgetpu', 'micro'\]"):
        Policy.preset("pqcat")


def test_unknown_or_inapplicable_knobs_are_rejected():
    with pytest.raises(PolicyError, match=r"unknown keyword\(s\) \['clusters'\]"):
        Policy.preset("cluster", clusters=8)
    with pytest.raises(PolicyError, match=r"Preset 'qat' does not prune, so sparsity= does not apply"):
        Policy.preset("qat", sparsity=0.5)
    with pytest.raises(PolicyError, match=r"prune.sparsity must be a number in \[0, 1\), got 1.5"):
        Policy.preset("prune", sparsity=1.5)
