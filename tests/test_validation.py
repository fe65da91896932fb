"""Pure unit tests of the input checks: text fields, JSON bodies, backend_start, the run
form and the audit filters. No database, no app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.exceptions import HTTPException

from dashboard.approvals import rules
from dashboard.audit.query import FilterError, parse_filters
from dashboard.server.actions import BadInput, parse_backend_start
from dashboard.validation import InvalidText, clean_text, first_bad_char, scrub
from dashboard.web.bodies import MAX_DEPTH, BodyError, depth, parse_json, parse_json_object
from dashboard.web.run_input import opt_text, parse_run_form

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def refused(value: object, **kw: Any) -> InvalidText:
    kw.setdefault("max_len", 50)
    with pytest.raises(InvalidText) as info:
        clean_text(value, "field", **kw)
    return info.value


def test_clean_text_trims_and_accepts_ordinary_text() -> None:
    assert clean_text("  heads  ", "target", max_len=10) == "heads"
    assert clean_text("", "target", max_len=10) is None
    assert clean_text(" \t\r\n", "target", max_len=10) is None
    assert clean_text(None, "target", max_len=10) is None
    assert clean_text("ünïcødé ✓ \u00a0x", "t", max_len=20) == "ünïcødé ✓ \u00a0x"
    assert clean_text("x" * 10, "t", max_len=10) == "x" * 10
    text = clean_text(" a\r\nb\rc\td\n ", "comment", max_len=20, multiline=True)
    assert text == "a\nb\nc\td"


@pytest.mark.parametrize(
    "value", ["a\x00b", "\x00", "bell\x07", "esc\x1b[0m", "del\x7f", "c1\x85x", "\x1fsep"]
)
def test_clean_text_refuses_control_characters_naming_the_field(value: str) -> None:
    exc = refused(value)
    assert exc.field == "field" and exc.kind == "forbidden_character"
    assert exc.message.startswith("field contains a control character (U+")
    assert value not in exc.message  # never echoed


def test_newlines_and_tabs_only_where_multiline() -> None:
    for value in ("two\nlines", "tab\there", "cr\rhere"):
        assert refused(value).kind == "forbidden_character"
    assert refused("ok\nbut\x00", multiline=True).kind == "forbidden_character"
    assert refused("ok\x0b", multiline=True).kind == "forbidden_character"


def test_clean_text_refuses_surrogates_non_text_too_long_and_missing() -> None:
    assert "surrogate" in refused("x\ud800y").message
    assert refused(12).kind == "not_text" and refused(["x"]).kind == "not_text"
    long = refused("x" * 51)
    assert long.kind == "too_long" and "51 characters; at most 50" in long.message
    for empty in (None, "", "   "):
        assert refused(empty, required=True).kind == "required"


def test_first_bad_char_and_scrub() -> None:
    assert first_bad_char("abc") is None
    assert first_bad_char("ab\x00c") == 2
    assert first_bad_char("a\nb", multiline=True) is None
    assert scrub("a\x00b\x1b\ud800", 10) == "a\ufffdb\ufffd\ufffd"
    assert scrub(12345, 3) == "123"


def test_parse_json_refuses_deep_nesting_and_malformed_bodies() -> None:
    assert parse_json(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for deep in (b"[" * 5000, b'{"a":' * 2000, b"[" * 100 + b"]" * 100):
        with pytest.raises(BodyError, match="nests too deeply"):
            parse_json(deep)
    ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert depth(parse_json(ok)) == MAX_DEPTH
    for bad in (b"", b"{not json", b"\x00", b'{"a": 1', b"1" * 5000, b"{" * 3000):
        with pytest.raises(BodyError, match="not valid JSON"):
            parse_json(bad)
    with pytest.raises(BodyError, match="not UTF-8"):
        parse_json(b'{"a": "\xff"}')
    with pytest.raises(BodyError, match=r'expected a JSON object: \{"x"\}'):
        parse_json_object(b"[1, 2]", '{"x"}')
    assert depth(1) == 0 and depth([]) == 1 and depth({"a": [[]]}) == 3


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+00:00",
        "1999-12-31T23:59:59+00:00",
        "2026-11-23T10:00:01+00:00",
        "2030-01-01T00:00:00+00:00",
    ],
)
def test_backend_start_out_of_range_is_refused(stamp: str) -> None:
    with pytest.raises(BadInput, match="backend_start .* is out of range"):
        parse_backend_start(stamp, now=NOW)


def test_backend_start_in_range_is_kept_as_given() -> None:
    for stamp in ("2026-11-22T09:59:00.123456+02:00", "2000-01-01T00:00:00+00:00"):
        assert parse_backend_start(stamp, now=NOW) == datetime.fromisoformat(stamp)
    assert parse_backend_start("2026-11-23T09:00:00+00:00", now=NOW)  # clock skew: a day
    # datetime.fromisoformat() would read this one as a valid timestamp
    with pytest.raises(BadInput, match="backend_start contains a control character"):
        parse_backend_start("2026-11-22T10:00:00+00:00\x00", now=NOW)


def test_audit_filters_refuse_control_characters_naming_the_parameter() -> None:
    for name in ("actor", "action", "outcome", "since"):
        with pytest.raises(FilterError, match=f"^{name} contains a control character"):
            parse_filters({name: "x\x00"})
    with pytest.raises(FilterError, match="action is too long"):
        parse_filters({"action": "x" * 201})
    q = parse_filters({"actor": " bob ", "action": "run.*"})
    assert q.actor == "bob" and q.action == "run.*" and q.outcome is None


def test_reasons_and_comments_share_the_same_rule() -> None:
    text, ok = rules.validate_reason(" no:\r\n\tnot now ", required=True)
    assert ok is None and text == "no:\n\tnot now"
    _, bad = rules.validate_reason("no\u0000", required=True)
    assert bad is not None and bad.status_code == 400 and bad.code == "invalid"
    assert "reason contains a control character" in bad.message
    _, missing = rules.validate_reason("\r\n", required=True)
    assert missing is not None and missing.code == "reason_required"
    assert opt_text({"comment": " a\nb "}, "comment", 10) == "a\nb"
    assert opt_text({"comment": ""}, "comment") is None
    for body, name in (({"comment": "a\x00"}, "comment"), ({"sql_sha256": "a\nb"}, "sql_sha256")):
        with pytest.raises(HTTPException) as info:
            opt_text(body, name, 64)
        assert info.value.status_code == 400 and info.value.detail.startswith(name)


def test_run_form_fields_go_through_the_same_check() -> None:
    form = {
        "direction": "upgrade",
        "target": " heads ",
        "expected_current": "abc, def,,",
        "confirm": "head1",
        "confirm_value": "head1",
        "sql_sha256": "",
    }
    parsed = parse_run_form(form)
    assert parsed.target == "heads" and parsed.expected_current == ["abc", "def"]
    assert parsed.sql_sha256 is None and parsed.confirm == "head1"
    for name in form:
        with pytest.raises(HTTPException) as info:
            parse_run_form({**form, name: "x\x00"})
        assert info.value.status_code == 400 and name in info.value.detail
