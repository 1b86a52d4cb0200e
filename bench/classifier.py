"""Benchmark: the appeal classifier on the held-out everyday appeals, and over a million appeals.

Accuracy: a version trained on the corpus's training split (what `yiwang classifier train` does),
measured on the held-out split (exact item, major class, share sent to triage), overall and for the
hotline (01-06) alone, next to the keyword classifier it replaces.

Throughput: a million distinct appeal texts, each a corpus text (both splits: the time does not
depend on labels) with a caller's place before it and a remark after it, as operators write them,
so no two texts are equal and nothing can be answered from a cache. Classified among the urban items
with the configured threshold, best of `--repeat`, on the machine's cores (2 here).

Run: `python -m bench.classifier [--texts 1000000] [--repeat 3]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from thematic_libs.reference import URBAN_MAJOR_CODES
from thematic_libs.urban import evaluation
from thematic_libs.urban.classifier import ClassifierConfig
from thematic_libs.urban.corpus import corpus_split, load_corpus
from thematic_libs.urban.model_store import ModelStore

ROADS = ("黄埔东路", "丰乐北路", "开创大道", "石化路", "港前路", "大沙地东", "香雪大道", "科学大道", "护林路", "沙步")
REMARKS = ("", "，麻烦尽快处理", "，谢谢", "。请回电", "，已经第二次打电话了", "！！", "，急")


def million_texts(n: int, seed: int = 11) -> pl.Series:
    """`n` distinct appeal texts: place prefix (road + number) + corpus text + remark."""
    rng = np.random.default_rng(seed)
    texts = load_corpus().get_column("text").to_numpy()
    base = rng.integers(len(texts), size=n)
    frame = pl.DataFrame(
        {
            "road": np.array(ROADS)[rng.integers(len(ROADS), size=n)],
            "number": np.arange(n) % 997 + 1,
            "serial": np.arange(n) // 997,
            "text": texts[base],
            "remark": np.array(REMARKS)[rng.integers(len(REMARKS), size=n)],
        }
    )
    return frame.select(
        pl.format("{}{}号{}栋：{}{}", "road", "number", "serial", "text", "remark").alias("text")
    ).to_series()


def accuracy(store: ModelStore, config: ClassifierConfig) -> str:
    outcome = store.train(config)
    model = store.load(outcome.version)
    test = corpus_split("test")
    predicted = evaluation.predictions(model, test, config.min_confidence)
    urban = predicted.filter(pl.col("event_code").str.slice(0, 2).is_in(list(URBAN_MAJOR_CODES)))
    rows = {
        "model, all held-out appeals": evaluation.figures(predicted),
        "model, hotline (01-06) only": evaluation.figures(urban),
        "keyword classifier, all": evaluation.figures(evaluation.keyword_predictions(test)),
    }
    print(f"version {outcome.version}, trained on {outcome.card['training']['rows']:,} appeals")
    for name, f in rows.items():
        print(
            f"{name:30s} appeals {f.appeals:4d}  exact item {f.exact_item_accuracy:.3f}  "
            f"major class {f.major_class_accuracy:.3f}  triage {f.triage_share:.3f}  "
            f"(exact incl. triage {f.exact_item_accuracy_overall:.3f})"
        )
    return outcome.version


def throughput(store: ModelStore, version: str, config: ClassifierConfig, n: int, repeat: int) -> None:
    model = store.load(version)
    texts = million_texts(n)
    assert texts.n_unique() == n
    model.classify(texts.head(2000), URBAN_MAJOR_CODES, config.min_confidence)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = model.classify(texts, URBAN_MAJOR_CODES, config.min_confidence, config.candidates)
        times.append(time.perf_counter() - start)
    triaged = result.column("event_code").null_count
    best = min(times)
    print(
        f"classified {n:,} distinct appeals in {best:.1f} s (best of {repeat}: "
        f"{', '.join(f'{t:.1f}' for t in times)}) = {n / best:,.0f} appeals/s on {os.cpu_count()} cores; "
        f"{triaged / n:.1%} to triage; load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = ClassifierConfig.load()
    with tempfile.TemporaryDirectory() as models:
        store = ModelStore(Path(models))
        version = accuracy(store, config)
        throughput(store, version, config, args.texts, args.repeat)


if __name__ == "__main__":
    main()
