"""Typed run and approval records built in memory, for tests of the pure rules and views."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from dashboard.runs.records import Approval, Run

CREATED = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def a_run(**kw: Any) -> Run:
    """A run record as the repository returns it: an awaiting upgrade by carol, with any
    field replaced by `kw` (fields not given are None)."""
    values: dict[str, Any] = {f.name: None for f in fields(Run)}
    values.update(
        id=7,
        target="main",
        direction="upgrade",
        target_spec="heads",
        to_rev="r3",
        to_revs=["r3"],
        from_revs=[],
        plan={},
        sql_sha256="a" * 64,
        status="awaiting_approval",
        requested_by="carol",
        created_at=CREATED,
        progress={},
    )
    values.update(kw)
    return Run(**values)


def an_approval(**kw: Any) -> Approval:
    """bob's approval of run 7, with any field replaced by `kw`."""
    values: dict[str, Any] = {
        "id": 1,
        "run_id": 7,
        "decision": "approve",
        "approver": "bob",
        "approver_role": "approver",
        "approver_address": None,
        "decided_at": CREATED,
        "reason": None,
        "sql_sha256": "a" * 64,
        "file_sha256": [],
        "current_heads": [],
        "expires_at": None,
        "statements": None,
    }
    values.update(kw)
    return Approval(**values)
