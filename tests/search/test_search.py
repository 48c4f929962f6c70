"""kopt.optimize(model, "auto", budget=...): budget logic, honesty of the measurements, determinism."""

import functools

import keras
import numpy as np
import pytest

import kopt
from kopt.core.errors import InvalidArgumentError
from kopt.export import evaluate, weight_tensors, zipped_size
from kopt.search import BudgetNotMetWarning, Candidate
from kopt.search.walk import Search, _StopHopeless, hopeless_floor
from tests.optimize_testing import compile_model, digits, tiny_cnn, tiny_dense


@functools.lru_cache(maxsize=None)
def _trained(kind: str) -> list[np.ndarray]:
    keras.utils.set_random_seed(0)
    x, y, _, _ = digits()
    model = compile_model(tiny_dense() if kind == "dense" else tiny_cnn())
    model.fit(x, y, epochs=12, batch_size=32, verbose=0)
    return model.get_weights()


def trained(kind: str = "dense") -> keras.Model:
    model = compile_model(tiny_dense() if kind == "dense" else tiny_cnn())
    model.set_weights(_trained(kind))
    return model


def auto(model, budget, **kwargs):
    x, y, x_val, y_val = digits()
    options = dict(train_data=(x, y), validation_data=(x_val, y_val), epochs=1, batch_size=32, seed=7, verbose=0)
    options.update(kwargs)
    return kopt.optimize(model, "auto", budget=budget, **options)


def test_a_size_budget_stops_the_search_at_the_first_candidate_that_meets_it():
    model = trained()
    before = [w.copy() for w in model.get_weights()]
    optimizer = model.optimizer
    result = auto(model, kopt.Budget(max_accuracy_drop=0.05, max_size_bytes=10**7))
    for a, b in zip(before, model.get_weights(), strict=True):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)
    assert model.optimizer is optimizer and result.model is not model
    search = result.search
    assert len(search.candidates) == 1  # post-training int8 of the float model already fits
    assert "size" in search.stop_reason
    assert search.chosen == 0 and search.best.within_budget


def test_the_reported_figures_are_those_of_the_returned_tflite():
    result = auto(trained(), kopt.Budget(max_accuracy_drop=0.05, max_candidates=3))
    _, _, x_val, y_val = digits()
    best = result.search.best
    assert best.int8_accuracy == evaluate(result.tflite, x_val, y_val)
    assert best.zipped_bytes == zipped_size(result.tflite)
    assert best.drop == pytest.approx(result.search.baseline_accuracy - best.int8_accuracy)
    assert len(result.search.candidates) <= 3 and "candidate limit" in result.search.stop_reason
    # The chosen one is the smallest of those within the budget.
    within = [c for c in result.search.candidates if c.within_budget]
    assert best.zipped_bytes == min(c.zipped_bytes for c in within)
    # Its policy is plain data: it survives JSON and resolves to the settings the table shows.
    policy = kopt.Policy.from_json(result.policy.to_json())
    assert policy == result.policy
    plan = policy.resolve(trained())
    for layer, text in best.settings.items():
        sparsity = plan.layers[layer].prune.sparsity if plan.layers[layer].prune else None
        assert (sparsity is None) == ("sparse" not in text)
        if sparsity is not None:
            assert text.startswith(f"{sparsity:.0%} sparse")


def test_nothing_meets_the_budget_returns_the_closest_with_a_warning():
    with pytest.warns(BudgetNotMetWarning, match="no candidate meets the whole budget"):
        result = auto(trained(), kopt.Budget(max_accuracy_drop=0.05, max_size_bytes=1, max_candidates=2))
    search = result.search
    assert not any(c.within_budget for c in search.candidates)
    assert all("size budget" in c.status for c in search.candidates if c.drop <= 0.05)
    assert search.warnings and search.best.zipped_bytes == min(
        c.zipped_bytes for c in search.candidates if c.drop <= 0.05
    )
    assert result.report.warnings == search.warnings


def _synthetic(drops_and_sizes):
    return [
        Candidate(index=i, label=f"c{i}", path=[], parent=None, quantization="ptq", settings={}, keras_accuracy=None,
                  int8_accuracy=0.9 - d, drop=d, tflite_bytes=s, zipped_bytes=s, ratio=None, sparsity=0.0, steps=0,
                  seconds=0.0, status="accuracy drop" if d > 0.01 else "within budget")
        for i, (d, s) in enumerate(drops_and_sizes)
    ]


def test_choice_when_no_candidate_is_accurate_enough_is_the_most_accurate():
    search = Search.__new__(Search)  # only the choice logic, no model needed
    search.budget = kopt.Budget(max_accuracy_drop=0.01)
    search.candidates = _synthetic([(0.05, 100), (0.02, 300), (0.02, 200), (0.10, 10)])
    chosen, notes = search._choose()
    assert chosen == 2  # smallest drop (0.02), the smaller of the two
    assert "no candidate stays within the accuracy budget" in notes[0] and "#2" in notes[0]
    search.candidates = _synthetic([(0.005, 100), (0.02, 10), (0.0, 50)])
    assert search._choose() == (2, [])  # the smallest within budget, no warning


def test_same_seed_same_search():
    budget = kopt.Budget(max_accuracy_drop=0.05, max_candidates=4)
    first = auto(trained(), budget)
    second = auto(trained(), budget)
    rows = lambda r: [(c.label, c.int8_accuracy, c.sparsity, c.steps) for c in r.search.candidates]  # noqa: E731
    assert rows(first) == rows(second)
    # Bit-identical int8 weights (the flatbuffers' input tensor names carry Keras's global counters).
    for a, b in zip(weight_tensors(first.tflite), weight_tensors(second.tflite), strict=True):
        np.testing.assert_array_equal(a.values, b.values)
    # The walk: PTQ of the float model, then the pruning ladder, each rung from the one before.
    labels = [c.label for c in first.search.candidates]
    assert labels[0] == "float + PTQ" and labels[1].startswith("prune ")
    prune = [c for c in first.search.candidates if c.label.startswith("prune")]
    assert [c.sparsity for c in prune] == sorted(c.sparsity for c in prune)
    assert all(c.parent is not None for c in prune)


def test_edgetpu_target_reports_mapping_and_saves_the_chart(tmp_path):
    result = auto(trained("cnn"), kopt.Budget(max_accuracy_drop=0.05, target="edgetpu", max_candidates=2))
    best = result.search.best
    assert best.edgetpu is not None and result.edgetpu.fully_mapped
    paths = result.save(tmp_path)
    assert {"search_json", "search_markdown", "pareto", "tflite"} <= set(paths)
    assert "## Sensitivity (prune" in paths["search_markdown"].read_text()


def test_budget_errors_are_named():
    model = trained()
    with pytest.raises(InvalidArgumentError, match="only applies to policy='auto'"):
        auto_args = dict(train_data=digits()[:2], budget=kopt.Budget())
        kopt.optimize(model, "pcqat", **auto_args)
    with pytest.raises(InvalidArgumentError, match="must be a kopt.Budget"):
        kopt.optimize(model, "auto", train_data=digits()[:2], budget={"max_accuracy_drop": 0.01})
    with pytest.raises(InvalidArgumentError, match="lower=True"):
        kopt.optimize(model, "auto", train_data=digits()[:2], lower=False)
    inputs = keras.Input((4,))
    regression = keras.Model(inputs, keras.layers.Dense(1)(inputs), name="regressor")
    regression.compile("adam", "mse")
    with pytest.raises(InvalidArgumentError, match="regressor.*None, 1"):
        kopt.optimize(regression, "auto", train_data=(np.zeros((8, 4)), np.zeros(8)))


def test_without_validation_data_the_search_warns():
    with pytest.warns(UserWarning, match="no validation_data"):
        auto(trained(), kopt.Budget(max_accuracy_drop=0.05, max_size_bytes=10**7), validation_data=None)


def test_hopeless_fine_tuning_stops_after_the_schedule():
    floor = hopeless_floor(0.9, 0.01)
    assert floor == pytest.approx(0.87)
    stopper = _StopHopeless(floor, min_epochs=2)
    stopper.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopper.model.stop_training = False  # as fit sets it
    stopper.on_epoch_end(0, {"val_accuracy": 0.5})  # still within the schedule: keep going
    assert not stopper.model.stop_training
    stopper.on_epoch_end(1, {"val_accuracy": 0.88, "accuracy": 0.1})
    assert not stopper.model.stop_training
    stopper.on_epoch_end(2, {"val_accuracy": 0.80})
    assert stopper.model.stop_training and stopper.stopped_at == 3


def test_m_by_n_budget_prunes_with_the_pattern():
    result = auto(trained(), kopt.Budget(max_accuracy_drop=0.2, m_by_n=(2, 4), max_candidates=2))
    assert [c.label for c in result.search.candidates] == ["float + PTQ", "prune 2:4 + PTQ"]
    assert result.search.chosen == 1  # within the loose budget and smaller
    kernel = np.asarray(keras.ops.convert_to_numpy(result.model.get_layer("hidden").kernel))
    blocks = kernel.T.reshape(-1, 4)  # TFLite's [out, in] layout: groups of 4 consecutive inputs
    assert np.all((blocks == 0).sum(axis=1) >= 2)
    stored = [t.values for t in weight_tensors(result.tflite) if t.values.shape == kernel.T.shape]
    assert stored and np.all((stored[0].reshape(-1, 4) == 0).sum(axis=1) >= 2)


@pytest.mark.backends
def test_auto_runs_under_every_backend():
    result = auto(trained(), kopt.Budget(max_accuracy_drop=0.2, max_candidates=2))
    assert [c.label for c in result.search.candidates][:1] == ["float + PTQ"]
    assert len(result.search.candidates) == 2 and result.tflite is not None
    _, _, x_val, y_val = digits()
    assert result.search.best.int8_accuracy == evaluate(result.tflite, x_val, y_val)


def test_micro_flash_budget_returns_a_tflm_compressed_candidate_that_fits():
    pytest.importorskip("tflite_micro")
    from kopt.export import check_micro, load_tflite, to_tflite

    model = trained()
    x, _, _, _ = digits()
    plain = len(to_tflite(model, representative_data=x[:100]))
    budget = kopt.Budget(max_accuracy_drop=0.1, target="micro", max_flash_bytes=plain - 600, max_candidates=4)
    result = auto(model, budget)
    first, best = result.search.candidates[0], result.search.best
    assert first.label == "float + PTQ" and first.status.startswith("flash") and first.flash_bytes > plain - 600
    assert best.within_budget and "cluster" in best.label and best.flash_bytes <= plain - 600
    assert not any(c.label.startswith("prune") for c in result.search.candidates)  # pruning saves no flash in TFLM
    report = check_micro(result.tflite)  # the returned file is the compressed one, as measured
    assert report.runs and report.compressed_tensors >= 1
    assert (report.flash_bytes, report.arena_bytes) == (best.flash_bytes, best.arena_bytes)
    assert any(op.custom_code == "TFLM_DECODE" for op in load_tflite(result.tflite).main.operators)
    assert "TFLM flash" in result.search.table()


def test_micro_choice_is_the_most_accurate_that_fits():
    search = Search.__new__(Search)
    search.budget = kopt.Budget(max_accuracy_drop=0.05, target="micro", max_flash_bytes=1000)
    search.candidates = _synthetic([(0.001, 5000), (0.004, 900), (0.002, 950), (0.003, 800)])
    for c in search.candidates:
        c.flash_bytes, c.status = c.zipped_bytes, "within budget" if c.zipped_bytes <= 1000 else "flash"
    assert search._choose() == (2, [])  # 0.2 pt below float: the most accurate of the three that fit
