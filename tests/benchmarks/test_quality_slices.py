"""The quality benchmark trains on what a refresh trains on."""

import numpy as np

from benchmarks.quality import training_slice


def test_whole_training_set_keeps_the_refresh_order() -> None:
    texts = [f"issue {i}" for i in range(20)]
    targets = np.arange(40).reshape(20, 2)
    for seed in (42, 43):
        picked_texts, picked_targets = training_slice((texts, targets), 20, seed)
        assert picked_texts == texts
        np.testing.assert_array_equal(picked_targets, targets)


def test_a_slice_is_a_seeded_draw_in_dataset_order() -> None:
    texts = [f"issue {i}" for i in range(20)]
    targets = np.arange(20).reshape(20, 1)
    first, first_targets = training_slice((texts, targets), 8, 42)
    again, _ = training_slice((texts, targets), 8, 42)
    other, _ = training_slice((texts, targets), 8, 43)
    assert first == again and first != other
    order = [texts.index(t) for t in first]
    assert order == sorted(order) and len(set(order)) == 8
    assert [f"issue {int(i)}" for i in first_targets[:, 0]] == first
