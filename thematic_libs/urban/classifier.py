"""The appeal classifier: event codes for hotline appeals and enterprise appeals as people write them.

A multinomial logistic regression over event codes (optionally combined with a second one over the
major classes, as P(item | major) x P(major): `combine_majors`), over two kinds of features of the normalised text
(`text_features.normalise`: traditional to simplified, full-width to half-width, digits to 0):

- character 1..3-grams (tf-idf, sublinear), which survive typos, dialect words and the absence of
  word boundaries in Chinese better than a segmenter trained on newspaper text;
- one feature per event code: the catalogue's keyword score of the text (`keywords.keyword_scores`),
  so an item's official words still count where the labelled appeals did not use them.

It is trained on the labelled corpus of everyday appeals (`thematic_libs/urban/corpus/`), plus any
labels a district appends, and gives every appeal the best event code with its probability, the
runner-up and the top candidates. Below `min_confidence` it abstains: the appeal goes to human
triage with its candidates instead of becoming a ticket. A caller restricts the candidates to the
majors that fit its source (hotline: 01-06; enterprise appeals: 07); probabilities are renormalised
over those.

Versions live in the model store (`model_store.py`); the platform uses the promoted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from thematic_libs.config import load_section
from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban.keywords import keyword_scores, keyword_table
from thematic_libs.urban.text_features import NgramCounter, normalise

ENTERPRISE_MAJOR_CODES = ("07",)
# Bumped whenever the features or the model change meaning, so a fingerprint never matches an older model.
FEATURES_VERSION = 2
KEYWORD_SCALE = 4.0  # a 4-character keyword scores 1.0 before `keyword_weight`
CHUNK = 50_000  # texts per chunk: bounded memory, and two chunks at a time on two cores

RESULT_SCHEMA = pa.schema(
    [
        pa.field("event_code", pa.string()),  # null: sent to triage
        pa.field("confidence", pa.float64()),  # probability of the best candidate
        pa.field("candidate_code", pa.string()),  # best candidate, also when abstaining
        pa.field("runner_up_code", pa.string()),
        pa.field("runner_up_confidence", pa.float64()),
        pa.field(
            "candidates",
            pa.list_(pa.struct([pa.field("event_code", pa.string()), pa.field("confidence", pa.float64())])),
        ),
    ]
)


@dataclass(frozen=True)
class ClassifierConfig:
    """`classifier:` section of `thematic_libs/urban/defaults.yaml`, with the district's overrides."""

    min_confidence: float
    candidates: int
    max_ngram: int
    min_df: int
    keyword_weight: float
    regularisation_c: float
    combine_majors: bool
    promote_floors: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls) -> ClassifierConfig:
        return cls(**load_section("thematic_libs.urban", "classifier"))

    def training_parameters(self) -> dict[str, Any]:
        """What changes the trained model (the fingerprint covers these, not the abstention threshold)."""
        return {
            "max_ngram": self.max_ngram,
            "min_df": self.min_df,
            "keyword_weight": self.keyword_weight,
            "regularisation_c": self.regularisation_c,
            "combine_majors": self.combine_majors,
        }


def data_fingerprint(texts: Sequence[str], codes: Sequence[str], config: ClassifierConfig) -> str:
    """SHA-256 over the training rows (order-free), the training parameters and the library versions."""
    digest = hashlib.sha256()
    header = {
        "features": FEATURES_VERSION,
        "sklearn": sklearn.__version__,
        "parameters": config.training_parameters(),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for code, text in sorted(zip(codes, texts, strict=True)):
        digest.update(f"{code}\t{text}\n".encode())
    return digest.hexdigest()


@dataclass
class AppealClassifier:
    """A trained model: n-gram vocabulary, idf weights, keyword table, classes and coefficients."""

    counter: NgramCounter
    idf: TfidfTransformer
    keywords: pl.DataFrame
    model: LogisticRegression  # event codes
    major_model: LogisticRegression | None  # major classes (first two digits), on the same features
    parameters: dict[str, Any]

    @property
    def classes(self) -> np.ndarray:
        return self.model.classes_

    @classmethod
    def fit(cls, texts: Sequence[str], codes: Sequence[str], config: ClassifierConfig) -> AppealClassifier:
        normalised = normalise(texts).to_list()
        counter = NgramCounter.fit(normalised, config.max_ngram, config.min_df)
        keywords = keyword_table().with_columns(normalise(keyword_table().get_column("keyword")).alias("keyword"))
        idf = TfidfTransformer(sublinear_tf=True).fit(counter.counts(normalised))
        model = LogisticRegression(C=config.regularisation_c, max_iter=2000)
        major_model = LogisticRegression(C=config.regularisation_c, max_iter=2000) if config.combine_majors else None
        classifier = cls(counter, idf, keywords, model, major_model, config.training_parameters())
        features = classifier._features(normalised)
        labels = np.asarray(codes)
        fits = [(model, labels)]
        if major_model is not None:
            fits.append((major_model, np.array([code[:2] for code in labels])))
        # One BLAS thread per fit, the two fits side by side: L-BFGS-B's vector updates are too small for
        # OpenBLAS's threads, which only contend. Same coefficients (to 1e-11); on 2 cores the whole training took
        # 4.7 s instead of 7.9 s (bench/RESULTS.md, issue 16), which a new home pays on its first urban run.
        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=len(fits)) as pool:
            for fitted in [pool.submit(estimator.fit, features, y) for estimator, y in fits]:
                fitted.result()
        return classifier

    def _features(self, normalised: list[str]) -> sp.csr_matrix:
        ngrams = self.idf.transform(self.counter.counts(normalised))
        scores = keyword_scores(pl.Series("text", normalised), self.keywords)
        code_index = {code: i for i, code in enumerate(sorted(self.keywords.get_column("event_code").unique()))}
        columns = scores.get_column("event_code").replace_strict(code_index, return_dtype=pl.Int64).to_numpy()
        weight = self.parameters["keyword_weight"] / KEYWORD_SCALE
        keyword_matrix = sp.csr_matrix(
            (scores.get_column("score").to_numpy() * weight, (scores.get_column("row").to_numpy(), columns)),
            shape=(len(normalised), len(code_index)),
        )
        return sp.hstack([ngrams, keyword_matrix], format="csr")

    def probabilities(self, texts: Sequence[str | None] | pl.Series) -> np.ndarray:
        """texts x classes probabilities; an empty or null text gets all zeros (nothing to go on)."""
        series = texts if isinstance(texts, pl.Series) else pl.Series("text", list(texts), dtype=pl.String)
        chunks = [series.slice(start, CHUNK) for start in range(0, series.len(), CHUNK)] or [series]
        with ThreadPoolExecutor(max_workers=2) as pool:
            parts = list(pool.map(self._chunk_probabilities, chunks))
        return np.vstack(parts) if parts else np.zeros((0, len(self.classes)))

    def _chunk_probabilities(self, texts: pl.Series) -> np.ndarray:
        """P(item) from the item model or, with `combine_majors`, P(item | its major) from the item model
        x P(major) from the major model, which learns what separates the classes (construction from
        street order) from every appeal of a class at once, not from one item's few dozen."""
        normalised = normalise(texts)
        features = self._features(normalised.to_list())
        items = self.model.predict_proba(features)
        if self.major_model is None:
            items[(normalised.str.len_chars() == 0).to_numpy()] = 0.0
            return items
        majors = self.major_model.predict_proba(features)
        item_major = np.searchsorted(self.major_model.classes_, [str(code)[:2] for code in self.classes])
        in_major = np.zeros((items.shape[0], len(self.major_model.classes_)))
        np.add.at(in_major.T, item_major, items.T)
        probabilities = items / np.maximum(in_major[:, item_major], 1e-300) * majors[:, item_major]
        probabilities[(normalised.str.len_chars() == 0).to_numpy()] = 0.0
        return probabilities

    def classify(
        self,
        texts: Sequence[str | None] | pl.Series | pa.Array | pa.ChunkedArray,
        major_codes: Iterable[str] = URBAN_MAJOR_CODES,
        min_confidence: float = 0.0,
        candidates: int = 3,
    ) -> pa.Table:
        """RESULT_SCHEMA rows aligned with `texts`; candidates only from `major_codes`.

        `event_code` is null (triage) when the best candidate's probability is below `min_confidence`
        or the text is empty.
        """
        series = texts if isinstance(texts, pl.Series) else pl.Series("text", texts, dtype=pl.String)
        majors = set(major_codes)
        allowed = np.array([str(code)[:2] in majors for code in self.classes])
        if not allowed.any():
            raise ValueError(f"no event code of majors {sorted(major_codes)} in this model; retrain with such labels")
        probabilities = self.probabilities(series)[:, allowed]
        classes = self.classes[allowed]
        totals = probabilities.sum(axis=1, keepdims=True)
        probabilities = np.divide(probabilities, totals, out=np.zeros_like(probabilities), where=totals > 0)
        return _result_table(probabilities, classes, min_confidence, candidates)

    def describe(self) -> dict[str, Any]:
        return {
            "classes": [str(c) for c in self.classes],
            "ngram_features": len(self.counter.vocabulary),
            "keyword_features": int(self.keywords.get_column("event_code").n_unique()),
            **self.parameters,
        }


def _result_table(probabilities: np.ndarray, classes: np.ndarray, min_confidence: float, keep: int) -> pa.Table:
    n, width = probabilities.shape
    keep = max(1, min(keep, width))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :keep]
    top = np.take_along_axis(probabilities, order, axis=1)
    codes = classes[order].astype(object)
    empty = top[:, 0] <= 0.0
    best = np.where(empty, None, codes[:, 0])
    decided = ~empty & (top[:, 0] >= min_confidence)
    runner_code = codes[:, 1] if keep > 1 else np.full(n, None, dtype=object)
    runner_conf = top[:, 1] if keep > 1 else np.full(n, np.nan)
    offsets = np.arange(0, n * keep + 1, keep, dtype=np.int32)
    structs = pa.StructArray.from_arrays(
        [pa.array(codes.reshape(-1), pa.string()), pa.array(top.reshape(-1), pa.float64())],
        names=["event_code", "confidence"],
    )
    candidate_lists = pa.ListArray.from_arrays(pa.array(offsets), structs, mask=pa.array(empty))
    return pa.table(
        {
            "event_code": pa.array(np.where(decided, codes[:, 0], None), pa.string()),
            "confidence": pa.array(top[:, 0], pa.float64()),
            "candidate_code": pa.array(best, pa.string()),
            "runner_up_code": pa.array(np.where(empty, None, runner_code), pa.string()),
            "runner_up_confidence": pa.array(np.where(empty, np.nan, runner_conf), pa.float64(), from_pandas=True),
            "candidates": candidate_lists.cast(RESULT_SCHEMA.field("candidates").type),
        },
        schema=RESULT_SCHEMA,
    )
