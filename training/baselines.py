"""Classic baselines trained on the same split: the transformer has to beat them to earn its cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import MultinomialNB
from skmultilearn.problem_transform import BinaryRelevance

from training.metrics import decide, macro_average_precision, scores, tune_thresholds


def naive_bayes(
    label_names: list[str], train: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray]
) -> dict[str, Any]:
    """Chapter 9's baseline: BinaryRelevance(MultinomialNB) on word counts.

    Labels without a training positive are never predicted (a one-class Naive Bayes could only
    say no), and their probabilities are 0."""
    vectorizer = CountVectorizer()
    x_train = vectorizer.fit_transform(train[0])
    present = train[1].sum(axis=0) > 0
    model = BinaryRelevance(classifier=MultinomialNB(), require_dense=[False, True])
    model.fit(x_train, sparse.csr_matrix(train[1][:, present]))
    x_test = vectorizer.transform(test[0])
    predicted = np.zeros(test[1].shape, dtype=int)
    predicted[:, present] = model.predict(x_test).toarray()
    probabilities = np.zeros(test[1].shape)
    probabilities[:, present] = model.predict_proba(x_test).toarray()
    return scores(label_names, test[1], predicted) | {
        "macro_ap": macro_average_precision(test[1], probabilities)
    }


def fit_tfidf_logreg(
    label_names: list[str], train: tuple[list[str], np.ndarray]
) -> Callable[[list[str]], np.ndarray]:
    """TF-IDF word 1-2 grams + one-vs-rest logistic regression; returns its probability function
    (0 for labels without a training positive)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    x_train = vectorizer.fit_transform(train[0])
    present = train[1].sum(axis=0) > 0
    model = OneVsRestClassifier(LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000))
    model.fit(x_train, train[1][:, present])

    def probabilities(texts: list[str]) -> np.ndarray:
        full = np.zeros((len(texts), len(label_names)))
        full[:, present] = model.predict_proba(vectorizer.transform(texts))
        return full

    return probabilities


def tfidf_logreg(
    label_names: list[str],
    train: tuple[list[str], np.ndarray],
    validation: tuple[list[str], np.ndarray],
    test: tuple[list[str], np.ndarray],
) -> dict[str, Any]:
    """The stronger classic baseline, thresholds tuned on validation as the transformer's are."""
    probabilities = fit_tfidf_logreg(label_names, train)
    thresholds = tune_thresholds(label_names, validation[1], probabilities(validation[0]), f1_floor=0.0)
    # A baseline gets every label it has seen; labels absent from validation get the shared threshold.
    present = train[1].sum(axis=0) > 0
    thresholds.reliable = {name: bool(present[i]) for i, name in enumerate(label_names)}
    test_probabilities = probabilities(test[0])
    return scores(label_names, test[1], decide(test_probabilities, label_names, thresholds)) | {
        "macro_ap": macro_average_precision(test[1], test_probabilities)
    }
