"""The README's configuration and reason tables are the ones the code makes (pipeline/reference.py)."""

import typing

from pipeline import reference
from pipeline.config import Config, TrainConfig
from pipeline.reasons import REASONS


def test_readme_tables_are_current():
    text = reference.README.read_text()
    assert reference.render(text) == text, "run `python -m pipeline.reference` to update README.md"


def test_every_config_key_has_a_meaning_or_shares_the_one_above():
    for section in Config.__dataclass_fields__.values():
        comments = reference.field_comments(section.default_factory)
        names = list(section.default_factory.__dataclass_fields__)
        assert set(comments) == set(names), section.name
        assert comments[names[0]], f"[{section.name}] {names[0]} has no comment above it"


def test_allowed_values_come_from_the_types():
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    assert reference.allowed(hints["model"]).startswith('"gpt2-tiny" \\| "gpt2"')
    assert reference.allowed(hints["num_workers"]) == "[1, inf)"
    assert "`duplicate_fuzzy` | dedup |" in reference.reasons_table() and len(REASONS) > 40
