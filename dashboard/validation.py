"""Text input, checked in one place, pure (no I/O, no web imports).

Every text a person sends (a filter, a comment, a revision id, a user name) goes through
`clean_text()` before it is used or stored. PostgreSQL text cannot hold NUL (0x00), and
other control characters have no business in a name or an id: they are refused with a
domain error, `InvalidText`, that names the field (the web layer answers 400 with it).
Lone UTF-16 surrogates (valid in a JSON string, not encodable as UTF-8) are refused too.
The offending value is never echoed back: the message names the field and the position.
"""

from __future__ import annotations

import unicodedata

# Allowed only in multi-line text (a comment, a reason).
MULTILINE_ALLOWED = frozenset("\n\t")
# Trimmed from both ends. Not str.strip(): it would also drop control characters such as
# U+001C..U+001F, U+000B and U+0085, which are refused instead.
TRIM = " \t\n\r"


class InvalidText(ValueError):
    """A text field is missing, not text, too long or holds characters it may not.
    `kind` is one of "required", "not_text", "too_long", "forbidden_character"."""

    def __init__(self, field: str, reason: str, kind: str = "forbidden_character") -> None:
        self.field = field
        self.reason = reason
        self.kind = kind
        self.message = f"{field} {reason}"
        super().__init__(self.message)


def _bad_char(ch: str, allowed: frozenset[str]) -> bool:
    if ch in allowed:
        return False
    # Cc: C0 and C1 control characters and DEL; Cs: lone surrogates.
    return unicodedata.category(ch) in ("Cc", "Cs")


def first_bad_char(text: str, *, multiline: bool = False) -> int | None:
    """Index of the first character `clean_text` would refuse, or None."""
    allowed = MULTILINE_ALLOWED if multiline else frozenset()
    for i, ch in enumerate(text):
        if _bad_char(ch, allowed):
            return i
    return None


def clean_text(
    value: object,
    field: str,
    *,
    max_len: int,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    """`value` trimmed, or None when empty (InvalidText when `required`).

    Refuses what is not a string, longer than `max_len` characters (after trimming), or
    holds a control character (a multi-line text may hold newlines and tabs; its CR LF and
    lone CR become LF)."""
    if value is None or (isinstance(value, str) and not value.strip(TRIM)):
        if required:
            raise InvalidText(field, "is required", "required")
        return None
    if not isinstance(value, str):
        raise InvalidText(field, "must be text", "not_text")
    text = value.strip(TRIM)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > max_len:
        raise InvalidText(
            field, f"is too long ({len(text)} characters; at most {max_len})", "too_long"
        )
    bad = first_bad_char(text, multiline=multiline)
    if bad is not None:
        code = ord(text[bad])
        kind = "a surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise InvalidText(field, f"contains {kind} (U+{code:04X} at position {bad + 1})")
    return text


def scrub(value: object, max_len: int) -> str:
    """Any value as printable text for a log line or an audit row (never refused):
    control characters and surrogates become U+FFFD, the result is cut to `max_len`."""
    text = value if isinstance(value, str) else str(value)
    text = text[:max_len]
    return "".join("\ufffd" if _bad_char(ch, frozenset()) else ch for ch in text)
