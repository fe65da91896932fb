"""HTTP layer: one controller module per page; controllers parse, call a service, render."""
