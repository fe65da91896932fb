"""Migration review rules (pure): which risky patterns each statement of a plan contains.

Importing this package registers every rule family in `RULES`.
"""

from __future__ import annotations

from dashboard.review.rules import (  # noqa: F401  (imported to register their rules)
    columns,
    constraints,
    drops,
    indexes,
    renames,
    transactions,
)
from dashboard.review.rules.base import (
    RULES,
    BaseRule,
    ReviewedFinding,
    Rule,
    check_plan,
    check_statement,
    plan_contexts,
    register,
)
from dashboard.review.rules.waivers import apply_waivers, parse_waiver, waivers

__all__ = [
    "RULES",
    "BaseRule",
    "ReviewedFinding",
    "Rule",
    "apply_waivers",
    "check_plan",
    "check_statement",
    "parse_waiver",
    "plan_contexts",
    "register",
    "waivers",
]
