"""A review as plain text for a terminal or a CI log (pure): `dashboard review`."""

from __future__ import annotations

import textwrap

from dashboard.formatting import format_bytes, format_rows
from dashboard.review.report import Review, ReviewedStatement

WIDTH = 100


def _cut(text: str, width: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def _locks(stmt: ReviewedStatement) -> str:
    return ", ".join(f"{lock.relation}: {lock.mode}" for lock in stmt.facts.locks) or "-"


def render_text(review: Review) -> str:
    cap = review.capture
    how = (
        "rehearsed on a scratch database (exact)"
        if cap.exact
        else f"from the offline render, NOT exact: {cap.note or 'no rehearsal'}"
    )
    lines = [
        f"plan:  {review.direction} {', '.join(review.from_heads) or 'base'} -> "
        f"{', '.join(review.to_heads) or 'base'} ({len(review.revisions)} revision(s), "
        f"{len(review.statements)} statement(s))",
        f"how:   {how}",
        f"risk:  {review.risk.upper()}",
    ]
    if cap.rehearsal_error:
        lines.append(f"rehearsal error: {_cut(cap.rehearsal_error, WIDTH)}")
    lines.append("")
    header = f"{'#':>3}  {'revision':<14} {'risk':<6} {'rw':<2} {'scan':<4} locks / statement"
    lines.append(header)
    lines.append("-" * min(WIDTH, max(len(header), 60)))
    for s in review.statements:
        lines.append(
            f"{s.index + 1:>3}  {s.revision[:14]:<14} {s.risk:<6} "
            f"{'yes' if s.facts.rewrite else '-':<2} {'yes' if s.facts.scan else '-':<4} "
            f"{_cut(_locks(s), WIDTH - 36)}"
        )
        lines.append(f"{'':>5}{'':<14} {_cut(s.captured.sql, WIDTH - 20)}")
        if not s.captured.in_transaction:
            lines.append(f"{'':>20} (runs outside a transaction)")
        for d in s.disagreements:
            lines.append(f"{'':>20} rehearsal disagrees: {_cut(d, WIDTH - 40)}")
        for c in s.conflicts:
            data = c.to_json()
            lines.append(
                f"{'':>20} in the way now: pid {data.get('pid')} "
                f"{'holds' if data.get('granted') else 'waits for'} {data.get('mode')} "
                f"({data.get('state') or '?'}, transaction {data.get('xact_age_s')} s)"
                + (f" from {data['origin']}" if data.get("origin") else "")
            )
    dependent = [r for r in review.revisions if r.data_dependent]
    if dependent:
        lines.append("")
        lines.append("data-dependent revisions (need an acknowledgement to approve):")
        for r in dependent:
            lines.append(f"  {r.revision}: {_cut(r.data_reason or '', WIDTH - 20)}")
    if review.non_transactional:
        lines.append("")
        lines.append("steps outside a transaction (not rolled back with their revision):")
        for step in review.non_transactional:
            lines.append(f"  {step.revision}:")
            for leave in step.leaves:
                wrapped = textwrap.wrap(leave, WIDTH - 8)
                lines.extend(
                    f"    {'- ' if i == 0 else '  '}{part}" for i, part in enumerate(wrapped)
                )
    findings = review.findings
    if findings:
        lines.append("")
        lines.append("findings:")
        for s, f in findings:
            mark = " (waived: " + (f.waived or "") + ")" if f.is_waived else ""
            lines.append(f"  [{f.severity}] {f.rule}  statement {s.index + 1} ({s.revision}){mark}")
            lines.append(f"      {_cut(f.message, WIDTH - 6)}")
            lines.append(f"      safer: {_cut(f.safer, WIDTH - 13)}")
    if review.relations:
        lines.append("")
        lines.append("tables:")
        for rel in review.relations:
            data = rel.to_json()
            rows = data.get("rows_estimate")
            size = data.get("bytes")
            lines.append(f"  {data.get('name')}: {format_rows(rows)} rows, {format_bytes(size)}")
    return "\n".join(lines)
