"""Analytics (分析): the published DuckDB file Superset reads, and the Superset asset bundle built on it."""
