"""Sharing (一网共享): the resource catalog, data-share orders, masked deliveries and the Delta Sharing server.

- `datasets`: what can be shared, from the contracts and `products.yaml` (one source of truth).
- `catalog`: the resource catalog `ops/catalog` (数据资源目录) with freshness, quality and lineage.
- `orders`: share orders (共享订单), a state machine audited row by row in `ops/share_audit`.
- `filters`: the row-filter grammar of orders (parsed to polars expressions, never SQL).
- `deliveries`: one masked Delta table per active order, `share/deliveries/<order_id>`, with change data feed.
- `tokens`: department bearer tokens (stored hashed) and Delta Sharing profile files.
- `server` and `web`: the Delta Sharing protocol and the catalog web page, served together.
- `access_log`: metering of every request (`ops/share_access_log`) and daily usage.
- `open_data`: unconditional datasets exported as CSV, Parquet and metadata JSON.
"""

# The sharing server's port when none is given (`yiwang share serve`, the profiles' default endpoint).
DEFAULT_PORT = 8765
