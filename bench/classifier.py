"""Benchmark: the hotline keyword classifier over a million appeal texts.

Texts are the demo generator's own wording (templates filled with catalogue keywords, places and
impacts), drawn with a fixed seed, so the figure is about throughput, not accuracy (accuracy is
measured against labelled demo appeals in tests/test_classifier.py).

Run: `python -m bench.classifier --texts 1000000`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from ingestion.demo.events import HOTLINE_TEMPLATES, IMPACTS, TIMES, load_catalogue
from thematic_libs.urban.classifier import classify


def demo_texts(n: int, seed: int = 7, distinct: int = 20_000) -> pl.Series:
    """`n` texts resampled from `distinct` generated ones (generating a million in Python would dominate)."""
    rng = np.random.default_rng(seed)
    catalogue = load_catalogue()
    out = []
    for _ in range(distinct):
        item = catalogue[rng.integers(len(catalogue))]
        kws = item.keywords
        impacts = IMPACTS[item.major_code]
        template = HOTLINE_TEMPLATES[rng.integers(len(HOTLINE_TEMPLATES))]
        out.append(
            template.format(
                place=f"桂城街道南海大道{rng.integers(1, 300)}号",
                kw=kws[rng.integers(len(kws))],
                kw2=f"{kws[rng.integers(len(kws))]}的情况也很突出",
                time=TIMES[rng.integers(len(TIMES))],
                impact=impacts[rng.integers(len(impacts))],
            )
        )
    return pl.Series("text", out).gather(rng.integers(0, distinct, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=1_000_000)
    args = parser.parse_args()
    texts = demo_texts(args.texts)
    classify(texts.head(1000))  # warm-up
    start = time.perf_counter()
    result = classify(texts)
    elapsed = time.perf_counter() - start
    unclassified = result.column("event_code").null_count
    print(
        f"classified {len(texts):,} texts in {elapsed:.2f} s = {len(texts) / elapsed:,.0f} texts/s "
        f"({unclassified:,} unclassified)"
    )


if __name__ == "__main__":
    main()
