"""Shared classification metrics on a case small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from affectstream.models.metrics import classification_report, confusion_matrix, print_report

# 3 classes. true: a a a a b b c c c c ; pred: a a b c b b c c a c
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 2, 2, 0, 2])


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 1, 1], [0, 2, 0], [1, 0, 3]]


def test_report_by_hand():
    r = classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert r.n == 10
    assert r.accuracy == pytest.approx(7 / 10)
    # recall: a 2/4, b 2/2, c 3/4 ; precision: a 2/3, b 2/3, c 3/4
    assert r.recall == pytest.approx((0.5, 1.0, 0.75))
    assert r.precision == pytest.approx((2 / 3, 2 / 3, 0.75))
    f1 = [2 * p * q / (p + q) for p, q in zip(r.precision, r.recall, strict=True)]
    assert r.f1 == pytest.approx(tuple(f1))
    assert r.macro_f1 == pytest.approx(sum(f1) / 3)
    assert r.weighted_f1 == pytest.approx((4 * f1[0] + 2 * f1[1] + 4 * f1[2]) / 10)
    assert r.macro_recall == pytest.approx((0.5 + 1.0 + 0.75) / 3)
    assert r.support == (4, 2, 4)
    d = r.to_dict()
    assert d["per_class"]["b"]["recall"] == 1.0
    assert d["confusion"] == [[2, 1, 1], [0, 2, 0], [1, 0, 3]]


def test_absent_class_is_left_out_of_macro_averages():
    r = classification_report(np.array([0, 0, 1]), np.array([0, 0, 1]), ["a", "b", "c"])
    assert r.support == (2, 1, 0)
    assert r.macro_f1 == 1.0 and r.macro_recall == 1.0
    assert r.recall[2] == 0.0 and r.precision[2] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="no samples"):
        classification_report(np.array([], int), np.array([], int), ["a"])


def test_print_report_shows_numbers():
    from rich.console import Console

    console = Console(record=True, width=120)
    print_report(classification_report(Y_TRUE, Y_PRED, ["a", "b", "c"]), "demo", console)
    text = console.export_text()
    assert "accuracy=0.7000" in text and "confusion matrix" in text
