"""The lean dispatch table `gold/dispatch/tickets`: one derivation path that every source feeds."""
