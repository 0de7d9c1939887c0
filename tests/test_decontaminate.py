"""Decontamination: a leaked eval passage leaves with 200 characters each side, the split and drop rules,
common n-grams ignored, overlap.json and `webtext eval --clean-only`, pass-through without eval sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import stages, storage
from pipeline.cli import main as cli_main
from pipeline.config import Config, DecontaminateConfig
from pipeline.decontaminate import clean_text, make_index, ngram_hashes, report_section, scan
from pipeline.devweb import prose_paragraphs
from training.model import GPT, GPTConfig
from training.train import LocalSession
from upstream import commit_as_upstream

RULES = DecontaminateConfig()


@pytest.fixture(scope="module")
def prose() -> list[str]:
    return [p for p in prose_paragraphs() if len(p.split()) >= 40]


def index_of(passages: list[str]) -> dict:
    hashes = ngram_hashes(passages, 13)["hash"]
    return make_index(hashes, np.zeros(len(hashes), np.uint8), 13)


def cleaned(doc: str, passages: list[str], rules=RULES) -> tuple[list[str], int, int]:
    hits = scan(pa.array([doc]), index_of(passages))
    return clean_text(doc, hits["start"].tolist(), hits["end"].tolist(), rules)


def test_a_leaked_passage_leaves_with_200_characters_on_each_side(prose):
    passage, before, after = prose[0], " ".join(prose[1:4]), " ".join(prose[4:7])
    doc = f"{before} {passage} {after}"
    start = len(before) + 1
    end = start + len(passage)
    hits = scan(pa.array([doc, before + after]), index_of([passage]))
    assert set(hits["row"].tolist()) == {0}  # the document without the passage has no match
    assert (hits["start"].min(), hits["end"].max()) == (start, end)
    assert cleaned(doc, [passage]) == ([doc[: start - 200], doc[end + 200 :]], 1, 0)
    # lowercased, punctuation stripped, split on whitespace: a re-cased, re-punctuated copy still matches
    variant = passage.upper().replace(",", "").replace(". ", "; ").replace(" ", "  \n", 3)
    doc = f"{before} {variant} {after}"
    assert cleaned(doc, [passage])[0] == [doc[: start - 200], doc[start + len(variant) + 200 :]]
    assert cleaned(f"{before} {' '.join(passage.split()[:12])} {after}", [passage]) == ([f"{before} {' '.join(passage.split()[:12])} {after}"], 0, 0)


def test_splits_merge_short_pieces_drop_and_too_many_splits_drop_the_document(prose):
    filler = " ".join(prose[10:20])
    passages = prose[30:42]
    def gap_of(size: int) -> str:  # filler text of exactly `size` characters, with a space on each side
        return f" {filler[: size - 2]} "

    gap = gap_of(700)
    doc = gap.join(["", *passages[:3], ""])  # three separate leaks: three splits, four pieces
    kept, splits, short = cleaned(doc, passages)
    assert splits == 3 and len(kept) == 4 and short == 0 and all(len(p) == 300 for p in kept[1:3])
    close = gap_of(550)  # 550 - 2 x 200 = 150 characters between two removals: a piece too short to keep
    doc = gap + close.join(passages[:2]) + gap
    assert cleaned(doc, passages) == ([gap[:500], gap[200:]], 2, 150)
    merged = gap_of(300)  # windows overlapping: one removal
    assert cleaned(gap + merged.join(passages[:2]) + gap, passages) == ([gap[:500], gap[200:]], 1, 0)
    ten, eleven = gap.join(["", *passages[:10], ""]), gap.join(["", *passages[:11], ""])
    assert cleaned(ten, passages)[1:] == (10, 0) and len(cleaned(ten, passages)[0]) == 11
    assert cleaned(eleven, passages) == ([], 11, 0)  # split more than max_splits = 10 times: dropped
    assert cleaned(f"{filler[:100]} {passages[0]} {filler[:100]}", passages) == ([], 1, 0)  # every piece too short
    assert cleaned(ten, passages, DecontaminateConfig(max_splits=9))[0] == []


def test_tokenize_reads_the_decontaminated_documents_unless_the_stage_is_off():
    config = Config()
    assert stages.documents_source(config, "tokenize").dataset == "decontam/docs"
    assert stages.documents_source(config, "decontaminate").dataset == "dedup/docs"
    config.decontaminate.enabled = False
    assert stages.documents_source(config, "tokenize").dataset == "dedup/docs"


def write_run(run: Path, docs: list[str], data: Path, lambada: list[str], hellaswag: list[dict]) -> None:
    rows = [{"doc_id": f"d{i:03d}", "text": t, "chars": len(t), "words": len(t.split())} for i, t in enumerate(docs)]
    for p, part in enumerate((rows[0::2], rows[1::2])):
        storage.write_parquet(run / "dedup" / "docs" / f"part-{p:05d}.parquet", pa.Table.from_pylist(part))
    commit_as_upstream(run, "dedup/docs", [[f"dedup/docs/part-{p:05d}.parquet"] for p in range(2)])
    data.mkdir(parents=True)
    (data / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lambada))
    (data / "hellaswag_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hellaswag))


def read_docs(run: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted((run / "decontam" / "docs").glob("part-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            out.setdefault(row["doc_id"], []).append(row["text"])
    return out


@pytest.mark.slow
def test_stage_removes_leaks_ignores_common_ngrams_and_names_the_overlapping_items(tmp_path, prose, ray_session, capsys):
    filler = [" ".join(prose[100 + 3 * i : 103 + 3 * i]) for i in range(30)]  # ~1 KB documents of other prose
    common = "as described in the documentation of the standard library for the module in question"
    borderline = "the value is computed lazily on first access and then cached for every later call"
    leak, repeated = prose[50].rstrip("."), prose[60].rstrip(".")
    lambada = [leak, f"Zebra quokka {common} narwhal", prose[51].rstrip("."), f"Yak {borderline} okapi", repeated]
    ctx, gold = " ".join(prose[52].split()[:20]), " ".join(prose[52].split()[20:30])
    hellaswag = [{"activity_label": "Docs", "ctx": ctx, "endings": [gold, "a", "b", "c"], "label": 0},
                 {"activity_label": "Docs", "ctx": prose[53], "endings": ["x", "y", "z", "w"], "label": 1}]
    docs = [f"{filler[0]} {leak} {filler[1]}",                                    # d000: one leak
            f" {filler[2][:900]} ".join(["", *[repeated] * 11, ""]),                     # d001: 11 leaks: dropped
            f"{filler[3]} {prose[52]} {filler[4]}"]                               # d002: HellaSwag item 0
    docs += [f"{filler[5 + i]} {common}. {filler[20 + i % 10]}" for i in range(11)]      # d003-d013: common
    docs += [f"{filler[16 + i % 10]} {borderline}. {filler[5 + i]}" for i in range(10)]  # d014-d023: 10 docs
    docs += [filler[29]]                                                          # d024: clean
    run, data = tmp_path / "run", tmp_path / "data"
    write_run(run, docs, data, lambada, hellaswag)
    sets = [f"--set=eval.data_dir={data}", '--set=decontaminate.tasks=["lambada", "hellaswag"]']
    assert cli_main(["decontaminate", "--run-dir", str(run), *sets]) == 0

    overlap = json.loads((run / "decontam" / "overlap.json").read_text())["tasks"]
    assert overlap["lambada"]["overlapping"] == [0, 3, 4]  # item 1 shares only the common phrase, item 2 nothing
    assert overlap["lambada"]["ignored_ngrams"] == len(common.split()) - 13 + 1
    assert overlap["lambada"]["documents"] == {"0": 1, "3": 10, "4": 1}
    assert overlap["hellaswag"]["overlapping"] == [0] and overlap["hellaswag"]["items"] == 2
    out = read_docs(run)
    start = len(filler[0]) + 1
    assert out["d000"] == [docs[0][: start - 200], docs[0][start + len(leak) + 200 :]]
    assert "d001" not in out
    assert all(out[f"d{i:03d}"] == [docs[i]] for i in range(3, 14))  # the common phrase is not a leak
    assert all(borderline not in "".join(out[f"d{i:03d}"]) and len(out[f"d{i:03d}"]) == 2 for i in range(14, 24))
    assert out["d024"] == [docs[24]] and prose[52] not in "".join(out["d002"])
    stats = json.loads((run / "decontam" / "stats.json").read_text())
    assert stats["records_in"] == 25 and stats["records_out"] == 24 and stats["dropped"]["contaminated"] == 1
    assert stats["info"]["removed_passages.lambada"] == 1 + 11 + 10 and stats["info"]["removed_passages.hellaswag"] == 1
    assert stats["info"]["contaminated.lambada"] == 1
    rows = pq.read_table(run / "decontam" / "docs" / "part-00000.parquet").to_pylist()
    first = [r for r in rows if r["doc_id"] == "d000"]
    assert [(r["piece"], r["pieces"], r["chars"]) for r in first] == [(0, 2, len(first[0]["text"])), (1, 2, len(first[1]["text"]))]
    line = report_section(run, tmp_path).lines[0]
    assert "23 passages removed (hellaswag 1, lambada 22)" in line and "lambada 3/5" in line

    torch.manual_seed(0)  # the clean subset: the items overlap.json does not name
    model = GPT(GPTConfig(block_size=128, vocab_size=50257, n_layer=1, n_head=2, n_embd=16))
    LocalSession(run / "train" / "checkpoints", 1).report({}, {"model": model.state_dict(), "step": 1,
                                                                "model_config": model.config.to_dict()})
    assert cli_main(["eval", "--run-dir", str(run), "--tasks", "lambada", "--clean-only", *sets]) == 0
    results = json.loads((run / "eval" / "results.json").read_text())["results"]
    assert {(r["subset"], r["metric"]): r["items"] for r in results} == {
        ("all", "acc"): 5, ("all", "ppl"): 5, ("clean", "acc"): 2, ("clean", "ppl"): 2}
    (data / "lambada_test.jsonl").write_text((data / "lambada_test.jsonl").read_text() + '{"text": "one more"}\n')
    assert cli_main(["eval", "--run-dir", str(run), "--tasks", "lambada", "--clean-only", *sets]) == 1
    assert "was computed from another lambada file" in capsys.readouterr().err

    assert cli_main(["decontaminate", "--run-dir", str(run), "--set=eval.data_dir="]) == 0  # no eval sets
    stats = json.loads((run / "decontam" / "stats.json").read_text())
    assert stats["passed_through"] == "eval.data_dir is empty" and not (run / "decontam" / "overlap.json").exists()
    for p in range(2):
        assert (run / "decontam" / "docs" / f"part-{p:05d}.parquet").read_bytes() == \
            (run / "dedup" / "docs" / f"part-{p:05d}.parquet").read_bytes()
    assert "passes through unchanged" in capsys.readouterr().err
