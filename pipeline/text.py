"""Text scrubbing shared by the stages: the characters that Parquet, lxml or UTF-8 refuse.

`scrub(text)` drops the C0 control characters other than tab, newline and carriage return (NUL included:
XML forbids them, so lxml refuses a page that has one) and replaces lone surrogates (UTF-8 cannot encode
them; a UTF-7 body or a JSON escape makes them) by U+FFFD. Text that needs neither comes back as the same
object, so a caller can tell whether anything changed with `is`. Used by reddit (every string field of a
submission) and extract (every decoded page).
"""

from __future__ import annotations

import re

CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
LONE_SURROGATES = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """`text` without C0 controls (tab, newline and carriage return kept) and with lone surrogates replaced."""
    if text.isascii():
        # isprintable() is a C loop; printable ASCII (most strings) has nothing to scrub.
        return text if text.isprintable() or not CONTROL_CHARS.search(text) else CONTROL_CHARS.sub("", text)
    if CONTROL_CHARS.search(text):
        text = CONTROL_CHARS.sub("", text)
    return LONE_SURROGATES.sub("\ufffd", text) if LONE_SURROGATES.search(text) else text
