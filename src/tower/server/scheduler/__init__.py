"""The scheduler: fires due schedule ticks as runs, exactly once, from the control plane.

`firing` decides and records each tick (one transaction per batch, compare-and-set per
schedule); `leadership` makes one control plane do the work on PostgreSQL; `loop` is
the coroutine the app's lifespan starts.
"""
