"""The Edge TPU rule table is consistent with itself and with Coral's compiled models."""

import pytest
from export_testing import EDGETPU_PAIRS, compiler_mapped_ops, fixture_path

from kopt.export import edgetpu_rules as rules
from kopt.export.flatbuffer import load

pytestmark = pytest.mark.backends


def test_every_rule_names_known_limits_and_advisories():
    for name, rule in rules.EDGETPU_OPS.items():
        assert set(rule.limits) <= set(rules.LIMITS), name
        assert set(rule.advisories) <= set(rules.ADVISORIES), name
        assert rule.max_version >= max(1, rule.verified_version), name
        assert rule.evidence, name
        if set(rule.limits) & {"constant_parameters", "weight_zero_point", "bias_scale"}:
            assert name in rules.WEIGHTED_OP_INPUTS
    assert not set(rules.UNSUPPORTED_OP_HINTS) & set(rules.EDGETPU_OPS)
    assert set(rules.FIXED_OUTPUT_PARAMS) >= {
        n for n, r in rules.EDGETPU_OPS.items() if "fixed_output_params" in r.limits
    }


@pytest.mark.parametrize("name", EDGETPU_PAIRS)
def test_verified_versions_cover_the_ops_corals_compiler_mapped(name):
    ops = load(fixture_path(name)).main.operators
    mapped, _ = compiler_mapped_ops(name)
    for op in (ops[i] for i in mapped):
        assert op.name in rules.EDGETPU_OPS, op.name
        assert op.version <= rules.EDGETPU_OPS[op.name].verified_version, (op.name, op.version)


def test_every_limit_and_partitioning_rule_has_a_source():
    assert set(rules.LIMIT_SOURCES) == set(rules.LIMITS)
    assert all(source.strip() for source in rules.LIMIT_SOURCES.values())
    assert {"single_segment", "downstream_of_cpu", "independent_branches", "leading_cpu_ops"} <= set(rules.PARTITIONING)


def test_known_parse_failures_are_above_the_maximum():
    # Versions the compiler refused in google-coral/edgetpu issues #631, #147/#845, #879, #384.
    for name, version in [("CONV_2D", 6), ("TRANSPOSE_CONV", 3), ("QUANTIZE", 3), ("RSQRT", 2)]:
        assert version > rules.EDGETPU_OPS[name].max_version
