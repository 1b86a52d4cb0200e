"""The trained appeal classifier: held-out floors, abstention, retraining, reload, labels, the CLI, speed."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban import evaluation
from thematic_libs.urban.classifier import ENTERPRISE_MAJOR_CODES, RESULT_SCHEMA, ClassifierConfig
from thematic_libs.urban.corpus import LabelError, corpus_split, load_corpus, read_labels
from thematic_libs.urban.model_store import ModelStore, ModelStoreError
from thematic_libs.urban.text_features import NgramCounter, normalise

# Measured on the held-out split (800 appeals) with the packaged defaults, 2026-12-05: exact item 0.930,
# major class 0.962, triage 0.048 overall; hotline (01-06) alone 0.931 / 0.956 / 0.049. Floors a little
# below (the major-class floor is the target), so a change that makes the classifier worse fails.
FLOORS = {"exact_item_accuracy": 0.91, "major_class_accuracy": 0.95, "max_triage_share": 0.07}
HOTLINE_FLOORS = {"exact_item_accuracy": 0.91, "major_class_accuracy": 0.95, "max_triage_share": 0.07}

# A district's own problem the corpus never mentions: shared power-bank cabinets blocking the way,
# which this district files under 050202 (non-motor vehicles and their kin parked anyhow).
DISTRICT_LABELS = [
    "充电宝柜子堆在地铁口{}",
    "共享充电宝机柜放在人行道中间{}",
    "一排充电宝机器挡住盲道{}",
    "商场门口的共享充电宝柜没人管{}",
    "充电宝柜倒在路边{}",
]
PROBE = "路口又摆满了共享充电宝柜子"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def config() -> ClassifierConfig:
    return ClassifierConfig.load()


@pytest.fixture(scope="module")
def promoted(store: ModelStore, config: ClassifierConfig):
    return store.promoted_classifier(config)


def test_corpus_is_large_varied_and_split_once() -> None:
    corpus = load_corpus()
    per_item = corpus.group_by("event_code").len()
    assert per_item.height >= 50 and per_item.get_column("len").min() >= 40
    assert corpus.get_column("text").n_unique() == corpus.height
    assert set(corpus.get_column("split")) == {"train", "test"}
    assert set(corpus.get_column("style")) >= {"colloquial", "regional", "typo", "rambling", "multi", "traditional"}
    train, test = set(corpus_split("train")["text"]), set(corpus_split("test")["text"])
    assert not train & test
    assert all(corpus_split("test").group_by("event_code").len().get_column("len") >= 10)


def test_held_out_accuracy_floors(promoted, config: ClassifierConfig) -> None:
    _version, model = promoted
    predicted = evaluation.predictions(model, corpus_split("test"), config.min_confidence)
    overall = evaluation.figures(predicted).as_dict()
    assert not evaluation.meets_floors(overall, FLOORS), overall
    hotline = evaluation.figures(predicted.filter(pl.col("event_code").str.slice(0, 2) <= "06")).as_dict()
    assert not evaluation.meets_floors(hotline, HOTLINE_FLOORS), hotline
    baseline = evaluation.figures(evaluation.keyword_predictions(corpus_split("test")))
    assert overall["exact_item_accuracy_overall"] > 2 * baseline.exact_item_accuracy_overall


def test_abstention_below_the_threshold(promoted) -> None:
    _, model = promoted
    texts = ["下水道盖子不见了，晚上很危险", "", None, "嗯嗯好的谢谢", "路燈壞了好幾天"]
    result = model.classify(texts, URBAN_MAJOR_CODES, min_confidence=0.2)
    assert result.schema == RESULT_SCHEMA
    rows = result.to_pylist()
    assert rows[0]["event_code"] == "040101" and rows[0]["confidence"] >= 0.2
    assert rows[0]["runner_up_code"] and rows[0]["runner_up_confidence"] <= rows[0]["confidence"]
    assert next(c["event_code"] for c in rows[0]["candidates"]) == "040101"
    assert rows[1]["event_code"] is None and rows[1]["confidence"] == 0.0 and rows[1]["candidates"] is None
    assert rows[2]["event_code"] is None
    assert rows[4]["event_code"] == "060101"
    confidences = result.column("confidence").to_numpy()
    for threshold in (0.0, 0.3, 0.6, 1.01):
        decided = model.classify(texts, URBAN_MAJOR_CODES, min_confidence=threshold).column("event_code")
        expected = (confidences >= threshold) & (confidences > 0)
        assert np.array_equal(~np.asarray(decided.is_null()), expected)


def test_candidates_respect_the_domain(promoted) -> None:
    _, model = promoted
    urban = model.classify(["厂房租赁合同到期，房东要收回土地"], URBAN_MAJOR_CODES, candidates=5)
    enterprise = model.classify(["厂房租赁合同到期，房东要收回土地"], ENTERPRISE_MAJOR_CODES, candidates=5)
    assert all(c["event_code"][:2] in URBAN_MAJOR_CODES for c in urban.column("candidates")[0].as_py())
    assert enterprise.column("event_code")[0].as_py() == "070101"
    assert sum(c["confidence"] for c in enterprise.column("candidates")[0].as_py()) <= 1.0 + 1e-9


def test_traditional_and_full_width_text_reads_like_simplified(promoted) -> None:
    _, model = promoted
    pairs = model.classify(["垃圾桶滿了沒人清", "垃圾桶满了没人清", "ＫＴＶ音響太大聲", "ktv音响太大声"])
    codes = pairs.column("candidate_code").to_pylist()
    assert codes[0] == codes[1] == "010104"
    assert codes[2] == codes[3]
    assert normalise(["路燈壞了 ５號", "路灯坏了 5号"]).to_list() == ["路灯坏了 0号"] * 2


def test_ngram_counts_equal_scikit_learn() -> None:
    texts = [*normalise(load_corpus().get_column("text").head(400)).to_list(), "", "a", "ab", "🙂x"]
    counter = NgramCounter.fit(texts[:300], max_n=3)
    reference = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False, vocabulary=counter.features)
    assert (counter.counts(texts) != reference.transform(texts)).nnz == 0


def test_reload_gives_identical_predictions(store: ModelStore, promoted) -> None:
    version, model = promoted
    texts = corpus_split("test").get_column("text")
    again = ModelStore(store.root.parent).load(version)
    assert np.array_equal(model.probabilities(texts), again.probabilities(texts))
    outcome = store.train(ClassifierConfig.load())
    assert outcome.version == version and not outcome.created  # same data, same fingerprint, same version


def test_retraining_with_district_labels(tmp_path: Path, store: ModelStore, promoted, config) -> None:
    version, model = promoted
    before = model.classify([PROBE]).column("candidate_code")[0].as_py()
    assert before != "050202"
    labels = tmp_path / "district_labels.csv"
    rows = [{"text": t.format(s), "event_code": "050202"} for t in DISTRICT_LABELS for s in ("", "，请处理", "！！")]
    pl.DataFrame(rows).write_csv(labels)
    outcome = store.train(config, labels=labels)
    assert outcome.created and outcome.version != version and outcome.promoted
    assert store.promoted() == outcome.version
    card = store.card(outcome.version)
    assert card["training"]["rows"] == corpus_split("train").height + len(rows)
    assert card["training"]["sources"][1]["sha256"]
    retrained = store.load(outcome.version)
    assert retrained.classify([PROBE]).column("event_code")[0].as_py() == "050202"
    # Texts the new labels do not touch keep their classification.
    test = corpus_split("test").get_column("text")
    same = pl.Series(retrained.classify(test)["candidate_code"]) == pl.Series(model.classify(test)["candidate_code"])
    assert same.mean() > 0.95
    store.promote(version, "back to the corpus-only version for the other tests")


def test_floors_gate_promotion(tmp_path: Path, config: ClassifierConfig) -> None:
    store = ModelStore(tmp_path)
    strict = replace(config, promote_floors={"exact_item_accuracy": 0.999})
    outcome = store.train(strict)
    assert not outcome.promoted and outcome.not_promoted_because and store.promoted() is None
    version, _ = store.promoted_classifier(strict)  # first use promotes the packaged model, noting why
    assert version == outcome.version and "below floors" in (store.root / "promotions.jsonl").read_text()
    with pytest.raises(ModelStoreError, match="no classifier version"):
        store.promote("ac-000000000000", "typo")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,event_code\n井盖没了,040199\n", "line 2: event_code '040199' is not an item"),
        ("text,event_code\n,040101\n", "line 2: empty text"),
        ("words,code\n井盖没了,040101\n", "no column event_code, text"),
        ("text,event_code\n", "no labelled rows"),
    ],
)
def test_bad_labels_are_refused_with_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabelError, match=message):
        read_labels(path)


def _yiwang(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "YIWANG_HOME": str(cwd / ".yiwang")},
        timeout=300,
        check=False,
    )


def test_cli_predict_and_errors(tmp_path: Path, store: ModelStore) -> None:
    source = tmp_path / "in.csv"
    pl.DataFrame({"id": [1, 2, 3], "text": ["推着三轮车卖水果的又来了", "一下大雨就变成河", "你好"]}).write_csv(source)
    out = tmp_path / "out.csv"
    models = str(store.root.parent)
    done = _yiwang("classifier", "predict", "--in", str(source), "--out", str(out), "--models", models, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = pl.read_csv(out, schema_overrides={"event_code": pl.String})
    assert result.columns == ["text", "event_code", "confidence"]
    assert result.get_column("event_code").to_list()[:2] == ["050101", "040201"]
    assert result.get_column("event_code")[2] in (None, "")  # small talk goes to triage
    missing = _yiwang("classifier", "predict", "--in", "nope.csv", "--out", str(out), cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("content\nx\n", encoding="utf-8")
    wrong = _yiwang("classifier", "predict", "--in", str(bad), "--out", str(out), "--models", models, cwd=tmp_path)
    assert wrong.returncode == 2 and "no `text` column" in wrong.stderr
    listed = _yiwang("classifier", "list", "--models", models, cwd=tmp_path)
    assert listed.returncode == 0 and store.promoted() in listed.stdout


def test_a_million_appeals_within_the_benchmark(promoted, config: ClassifierConfig) -> None:
    """The benchmark's target is 60 s for a million on 2 cores (measured 22.7 s); CI gets the whole target."""
    from bench.classifier import million_texts

    _, model = promoted
    texts = million_texts(1_000_000)
    start = time.perf_counter()
    result = model.classify(texts, URBAN_MAJOR_CODES, config.min_confidence)
    elapsed = time.perf_counter() - start
    assert result.num_rows == 1_000_000
    assert elapsed < 60, f"{elapsed:.1f} s for a million appeals"
