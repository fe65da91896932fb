"""Migration review: what each statement of a plan locks, rewrites and scans, which rules
it breaks, and (later) what it would collide with on the live database."""
