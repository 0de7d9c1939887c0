"""Config: defaults, TOML files, --set overrides, errors that name the key and the file."""

from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, dump_config, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


def test_defaults_without_file():
    config = load_config()
    assert config.reddit.min_score == 3
    assert config.crawl.allow_private_networks is False


def test_file_and_override_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[reddit]\nmin_score = 7\nnsfw = "keep"\n[crawl]\nper_host_delay_s = 2\n')
    config = load_config(path, ["reddit.min_score=9", "crawl.user_agent=bot/1"])
    assert config.reddit.min_score == 9
    assert config.reddit.nsfw == "keep"
    assert config.crawl.per_host_delay_s == 2.0 and isinstance(config.crawl.per_host_delay_s, float)
    assert config.crawl.user_agent == "bot/1"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[reddit]\nmin_scor = 3\n", "reddit.min_scor: unknown key"),
        ("[redit]\nmin_score = 3\n", "unknown section [redit]"),
        ('[reddit]\nmin_score = "3"\n', "reddit.min_score: expected int, got str"),
        ("[reddit]\nmin_score = true\n", "reddit.min_score: expected int, got bool"),
        ("[reddit]\nblocked_domains = [1]\n", "reddit.blocked_domains[0]: expected str"),
        ("[reddit\n", "not valid TOML"),
        ("reddit = 3\n", "must be a [table]"),
    ],
)
def test_file_errors_name_key_and_file(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_override_errors():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["min_score=3"])
    with pytest.raises(ConfigError, match=r"--set: crawl.max_retries: expected int"):
        load_config(None, ["crawl.max_retries=lots"])
    with pytest.raises(ConfigError, match="missing file"):
        load_config("/nonexistent/missing file.toml")


def test_parse_override_reads_toml_literals():
    assert parse_override("dedup.threshold=0.7") == ("dedup", "threshold", 0.7)
    assert parse_override('extract.languages=["en","de"]') == ("extract", "languages", ["en", "de"])
    assert parse_override("crawl.user_agent=my bot") == ("crawl", "user_agent", "my bot")


def test_dump_round_trips(tmp_path):
    config = load_config(None, ["reddit.min_score=11", 'extract.languages=["de"]', "dedup.verify=false"])
    path = tmp_path / "frozen.toml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_fingerprint_changes_only_with_its_sections():
    a, b = Config(), load_config(None, ["crawl.max_retries=9"])
    assert a.fingerprint("reddit") == b.fingerprint("reddit")
    assert a.fingerprint("reddit", "crawl") != b.fingerprint("reddit", "crawl")


@pytest.mark.parametrize("name, expected", [
    ("dryrun.toml", {"crawl.allow_private_networks": True, "train.model": "gpt2-tiny", "train.use_gpu": False,
                     "devweb.port": 18765, "reddit.num_partitions": 4}),
    ("local.toml", {"reddit.num_partitions": 64, "train.model": "gpt2", "crawl.allow_private_networks": False}),
    ("cluster.toml", {"reddit.num_partitions": 2048, "train.num_workers": 8, "dedup.num_buckets": 512}),
])
def test_shipped_configs_load_their_settings(name, expected):
    config = load_config(CONFIGS / name)
    for key, value in expected.items():
        section, field = key.split(".")
        assert getattr(getattr(config, section), field) == value, key
