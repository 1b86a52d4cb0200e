"""Charts carry Chinese names: the set-up installs a CJK font and matplotlib draws Chinese with it.

These fail when the font is missing (run `make setup`, or `apt-get install fonts-wqy-microhei`): a chart
drawn without one shows empty boxes where the street, department and event names should be.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import polars as pl
from matplotlib import font_manager

from ingestion.ledger import LEDGER_SCHEMA
from quality.fonts import draws_chinese, use_cjk_font
from quality.results import RESULTS_SCHEMA
from quality.scorecard import render_scorecard_png, row_labels, score

CHINESE = "区民政局 桂城街道 暴露垃圾 数据质量"


def _glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from" in str(w.message) or "Glyph" in str(w.message)]


def test_matplotlib_draws_a_chinese_label_with_a_cjk_font(tmp_path: Path) -> None:
    family = use_cjk_font(required=True)
    assert family and "DejaVu" not in family
    assert draws_chinese(CHINESE)
    chosen = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    assert "DejaVu" not in chosen, chosen
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.set_title(CHINESE)
        ax.set_yticks([0, 1], ["区城管执法局", "区民政局"])
        fig.savefig(tmp_path / "label.png", dpi=60)
        plt.close(fig)
    assert not _glyph_warnings(caught), _glyph_warnings(caught)


def test_the_scorecard_names_departments_in_chinese(tmp_path: Path) -> None:
    assert row_labels(["minzheng", "chengguan", "nobody"], chinese=True) == [
        "区民政局 minzheng",
        "区城管执法局 chengguan",
        "nobody",
    ]
    card = score(
        pl.from_arrow(LEDGER_SCHEMA.empty_table()), pl.from_arrow(RESULTS_SCHEMA.empty_table()), date(2026, 11, 15)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picture = render_scorecard_png(card, tmp_path / "scorecard.png")
    assert picture.stat().st_size > 5000
    assert not _glyph_warnings(caught), _glyph_warnings(caught)
