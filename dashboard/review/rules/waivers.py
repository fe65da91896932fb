"""Waivers: a revision file may accept a rule's finding, visibly and with a reason.

Syntax, one Python comment per waiver, anywhere in the revision file:

    # dashboard: allow ban-drop-column -- the column was unused since 2024
    # dashboard: allow renaming-column, renaming-table -- no client reads these yet

The reason after ` -- ` is required: a waiver without one is ignored. Only real comments
count (the file is read with `tokenize`), so the same text inside a string, such as SQL
passed to `op.execute()`, waives nothing. A waiver covers the whole revision.
"""

from __future__ import annotations

import io
import tokenize
from collections.abc import Iterable, Mapping

from dashboard.review.model import Finding
from dashboard.review.rules.base import ReviewedFinding

PREFIX = "dashboard:"
VERB = "allow"
SEPARATOR = "--"


def parse_waiver(comment: str) -> dict[str, str]:
    """Rule id -> reason from one comment token (with or without its `#`); {} if none."""
    text = comment.lstrip("#").strip()
    if not text.lower().startswith(PREFIX):
        return {}
    rest = text[len(PREFIX) :].strip()
    verb, _, rest = rest.partition(" ")
    if verb.lower() != VERB:
        return {}
    ids, sep, reason = rest.partition(SEPARATOR)
    reason = " ".join(reason.split())
    if not sep or not reason:
        return {}
    return {rule: reason for rule in ids.replace(",", " ").split()}


def waivers(source: str) -> dict[str, str]:
    """Rule id -> reason for every waiver comment in a revision's Python source.

    A rule waived twice gets both reasons, joined by "; ". A file that does not tokenize
    to the end (a syntax error) yields the waivers read before the error.
    """
    found: dict[str, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            for rule, reason in parse_waiver(tok.string).items():
                if rule in found and reason not in found[rule].split("; "):
                    found[rule] = f"{found[rule]}; {reason}"
                else:
                    found.setdefault(rule, reason)
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def apply_waivers(findings: Iterable[Finding], waived: Mapping[str, str]) -> list[ReviewedFinding]:
    """Every finding, in order, marked with the waiver's reason when its rule is waived."""
    return [ReviewedFinding(finding=f, waived=waived.get(f.rule)) for f in findings]
