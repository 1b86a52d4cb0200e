"""Urban management (城市管理) thematic library: hotline and grid-report classification."""
