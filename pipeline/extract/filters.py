"""The document filters, in order, each counted under its reason (pipeline/reasons.py).

`filter_document(text, config)` -> {"reason", "detail"} for a dropped text, else {"reason": None,
"language", "language_score"}:

    extract_empty   no main text
    too_long        more than `max_chars` characters
    too_short       fewer than `min_tokens` GPT-2 tokens (OpenWebText's 128 is the default)
    language        not in `languages`, or identified below `min_language_score` (pipeline/extract/language.py)
    junk_*          the junk heuristics (pipeline/extract/heuristics.py)

The length filters come first, so what they drop never pays for language identification; the tokenizer
runs only on texts of fewer words than `min_tokens`, since every word is at least one token.
"""

from __future__ import annotations

from pipeline.config import ExtractConfig
from pipeline.extract.heuristics import junk_reason
from pipeline.extract.language import identify_language
from pipeline.tokenizer import get_encoding


def count_tokens(text: str) -> int:
    return len(get_encoding().encode_ordinary(text))


def filter_document(text: str, config: ExtractConfig) -> dict:
    """{"reason", "detail"} when a document with this extracted text is dropped, else {"reason": None,
    "language", "language_score"}."""
    if not text:
        return {"reason": "extract_empty", "detail": "no main text found"}
    if len(text) > config.max_chars:
        return {"reason": "too_long", "detail": f"{len(text)} chars > max_chars {config.max_chars}"}
    tokens = len(text.split())
    if tokens < config.min_tokens and (tokens := count_tokens(text)) < config.min_tokens:
        return {"reason": "too_short", "detail": f"{tokens} tokens < min_tokens {config.min_tokens}"}
    language, language_score = identify_language(text, config.min_language_score)
    if config.languages and (language not in config.languages or language_score < config.min_language_score):
        return {"reason": "language", "detail": f"{language} {language_score:.3f}"}
    junk = junk_reason(text, config)
    if junk:
        return {"reason": junk[0], "detail": junk[1]}
    return {"reason": None, "language": language, "language_score": language_score}
