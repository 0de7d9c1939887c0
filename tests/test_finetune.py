"""Fine-tuning: input transformations, task readers, the objective, learning, resume, export, the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import storage
from pipeline.cli import main as cli_main
from pipeline.config import Config, FinetuneConfig
from pipeline.tokenizer import get_encoding
from test_train import prose_stream, tiny
from training.export import ExportError, save_double_heads
from training.finetune import FinetuneModel, finetune, learning_rate, pretrained_model, sequence_lm_loss
from training.generated_tasks import write_task
from training.model import GPT, GPTConfig
from training.tasks import (
    DELIM, EXTRACT, FINETUNE_VOCAB_SIZE, START, Record, Task, TaskDataError, encode_split, read_task, score,
)
from training.train import train_local

SHARED_SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "finetune" / "sst2"
SMALL = GPTConfig(block_size=64, vocab_size=FINETUNE_VOCAB_SIZE, n_layer=2, n_head=2, n_embd=32)

pytestmark = pytest.mark.usefixtures("one_thread")


def enc(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text)


def settings(**overrides) -> Config:
    """GPT-1's [finetune] with the values a 64-wide model trained for seconds needs, on CPU."""
    config = Config()
    values = dict(use_gpu=False, learning_rate=5e-3, warmup_fraction=0.1, batch_size=16, micro_batch_size=16,
                  epochs=3, lm_weight=0.0)
    config.finetune = FinetuneConfig(**{**values, **overrides})
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A run directory holding a gpt2-tiny pretrained for 30 steps on real prose (as `webtext train` leaves it)."""
    run_dir = tmp_path_factory.mktemp("pretrained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prose_stream(run_dir)
    train_local(run_dir, tiny())
    torch.set_num_threads(threads)
    return run_dir


# ---------------------------------------------------------------- the transformations, token by token


def test_each_transformation_lays_out_start_delimiter_and_extract_as_gpt1():
    text, premise, hypothesis = "A fine film.", "A man sleeps.", "Nobody sleeps."
    cases = {
        "classification": ((text,), [[START, *enc(text), EXTRACT]]),
        "entailment": ((premise, hypothesis), [[START, *enc(premise), DELIM, *enc(hypothesis), EXTRACT]]),
        "similarity": ((premise, hypothesis), [[START, *enc(premise), DELIM, *enc(hypothesis), EXTRACT],
                                               [START, *enc(hypothesis), DELIM, *enc(premise), EXTRACT]]),
        "multiple_choice": (("The story.", ("yes", "no way", "maybe")),
                            [[START, *enc("The story."), DELIM, *enc(a), EXTRACT] for a in ("yes", "no way", "maybe")]),
    }
    for kind, (parts, expected) in cases.items():
        task = Task("t", kind, labels=("0", "1"), choices=3)
        split = encode_split(task, [Record(parts, 1.0, "x:2")], max_len=64)
        assert [s.tolist() for s in split.sequences] == expected, kind
        assert split.per_example == len(expected) and split.counts["cut"] == 0
    assert (START, DELIM, EXTRACT) == (50257, 50258, 50259)


def test_special_tokens_never_come_from_text():
    tokens = enc("<|start|> a <|delim|> b <|extract|> <|endoftext|>")
    assert max(tokens) < 50256  # ordinary characters, not special ids (not even <|endoftext|>)
    split = encode_split(Task("t", "classification", labels=("0", "1")), [Record(("<|extract|>",), 0.0, "x:2")], 64)
    sequence = split.sequences[0].tolist()
    assert sequence.count(EXTRACT) == 1 and sequence[-1] == EXTRACT


def test_long_inputs_are_cut_from_the_left_of_the_context_never_the_answer():
    context = " ".join(f"w{i}" for i in range(40))
    answers = ("the first answer", "a second one")
    mc = Task("t", "multiple_choice", choices=2)
    split = encode_split(mc, [Record((context, answers), 0.0, "x:2")], max_len=20)
    for sequence, answer in zip((s.tolist() for s in split.sequences), answers):
        assert len(sequence) <= 20 and sequence[-1] == EXTRACT
        assert sequence[sequence.index(DELIM) + 1 : -1] == enc(answer)  # the answer whole
        kept = sequence[1 : sequence.index(DELIM)]
        assert kept == enc(context)[-len(kept):]  # the context's end kept, its start cut
    room = 20 - 3 - max(len(enc(a)) for a in answers)
    assert split.counts == {"records": 1, "examples": 1, "cut": 1, "cut_tokens": len(enc(context)) - room,
                            "answer_too_long": 0}
    # similarity: the longer text is cut, both orders hold the same tokens
    sim = Task("t", "similarity", labels=("0", "1"))
    short = "a short one"
    first, second = (s.tolist() for s in encode_split(sim, [Record((context, short), 1.0, "x:2")], max_len=20).sequences)
    assert len(first) == len(second) == 20
    assert first[-1 - len(enc(short)) : -1] == enc(short) and second[1 : 1 + len(enc(short))] == enc(short)
    assert first[1 : first.index(DELIM)] == second[second.index(DELIM) + 1 : -1]
    # an answer that cannot fit is left out and counted, never cut
    dropped = encode_split(mc, [Record(("c", (context, "x")), 0.0, "x:2"), Record(("c", ("y", "z")), 1.0, "x:3")], 20)
    assert dropped.counts["answer_too_long"] == 1 and dropped.counts["examples"] == 1 and dropped.where == ["x:3"]


# ---------------------------------------------------------------- the published formats


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_readers_take_each_tasks_published_format(tmp_path):
    glue = {
        "sst2": "sentence\tlabel\nit 's a charming journey . \t1\nbleak \t0\n",
        "rte": "index\tsentence1\tsentence2\tlabel\n0\tA dog runs.\tAn animal moves.\tentailment\n"
               "1\tA cat.\tA dog.\tnot_entailment\n",
        "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said.\tHe stated.\n0\t3\t4\tA.\tB.\n",
        "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                "0\tmain\tx\t2012\t1\tnone\tnone\tA plane.\tAn airplane.\t5.000\n"
                "1\tmain\tx\t2012\t4\tnone\tnone\tA man.\tA cat.\t0.5\n",
    }
    for name, text in glue.items():
        for split in ("train", "dev"):
            write(tmp_path / name / f"{split}.tsv", text)
    task, records = read_task("sst2", tmp_path / "sst2")
    assert task.kind == "classification" and [r.label for r in records["dev"]] == [1.0, 0.0]
    assert records["dev"][0].parts == ("it 's a charming journey . ",) and records["dev"][1].where == "dev.tsv:3"
    task, records = read_task("rte", tmp_path / "rte")
    assert task.kind == "entailment" and records["train"][0].parts == ("A dog runs.", "An animal moves.")
    assert [r.label for r in records["train"]] == [0.0, 1.0]  # GLUE's order: entailment, not_entailment
    task, records = read_task("mrpc", tmp_path / "mrpc")  # the header's byte-order mark is not part of "Quality"
    assert task.kind == "similarity" and task.metrics == ("f1", "accuracy") and records["dev"][0].label == 1.0
    task, records = read_task("stsb", tmp_path / "stsb")
    assert task.regression and [r.label for r in records["dev"]] == [5.0, 0.5]

    article = {"article": "Tom went home.", "questions": ["Where did Tom go?", "Who went _ ?"],
               "options": [["home", "school", "work", "away"], ["Tom", "Ann", "Bob", "Sue"]], "answers": ["A", "D"],
               "id": "high1.txt"}
    for split in ("train", "dev"):
        write(tmp_path / "race" / split / "high" / "1.txt", json.dumps(article))
    task, records = read_task("race", tmp_path / "race")
    assert task.sequences == 4 and [r.label for r in records["dev"]] == [0.0, 3.0]
    assert records["dev"][0].parts == ("Tom went home. Where did Tom go?", ("home", "school", "work", "away"))

    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1," \
             "RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    story = 'id1,Ann woke.,"She ate, then left.",It rained.,She ran.,She got wet.,She was dry.,1\n'
    for split in ("train", "dev"):
        write(tmp_path / "cloze" / f"{split}.csv", header + story + story.replace(",1\n", ",2\n"))
    task, records = read_task("storycloze", tmp_path / "cloze")
    assert records["dev"][0].parts == ("Ann woke. She ate, then left. It rained. She ran.", ("She got wet.", "She was dry."))
    assert [r.label for r in records["dev"]] == [0.0, 1.0]

    custom = [{"premise": "p", "hypothesis": "h", "label": "yes", "extra": 1}, {"premise": "q", "hypothesis": "i", "label": "no"}]
    for split in ("train", "dev"):
        write(tmp_path / "custom" / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in custom))
    task, records = read_task("custom", tmp_path / "custom")
    assert task.kind == "entailment" and task.labels == ("no", "yes") and [r.label for r in records["dev"]] == [1.0, 0.0]


def test_bad_task_files_are_errors_naming_file_and_line(tmp_path):
    def error_of(name: str, files: dict[str, str]) -> str:
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        for file, text in files.items():
            write(folder / file, text)
        with pytest.raises(TaskDataError) as caught:
            read_task(name, folder)
        return str(caught.value)

    good = "sentence\tlabel\nfine\t1\n"
    assert "train.tsv:1: missing column(s) label" in error_of("sst2", {"train.tsv": "sentence\tscore\nx\t1\n", "dev.tsv": good})
    assert "dev.tsv:3: label '2' is not one of '0', '1'" in error_of("sst2", {"train.tsv": good, "dev.tsv": good + "bad\t2\n"})
    assert "train.tsv: empty file" in error_of("sst2", {"train.tsv": "", "dev.tsv": good})
    assert "dev.tsv: no examples after the header" in error_of("sst2", {"train.tsv": good, "dev.tsv": "sentence\tlabel\n"})
    assert "dev.tsv:2: 3 tab-separated fields" in error_of("sst2", {"train.tsv": good, "dev.tsv": "sentence\tlabel\na\tb\t1\n"})
    assert "dev.tsv: not found" in error_of("sst2", {"train.tsv": good})
    assert "dev.tsv:2: score '7' is not a number in [0, 5]" in error_of("stsb", {
        "train.tsv": "sentence1\tsentence2\tscore\na\tb\t1\n", "dev.tsv": "sentence1\tsentence2\tscore\na\tb\t7\n"})
    line = json.dumps({"text": "t", "label": 1})
    assert "dev.jsonl:2: label 3 is not one of 0, 1" in error_of("custom", {
        "train.jsonl": line + "\n" + json.dumps({"text": "u", "label": 0}) + "\n", "dev.jsonl": line + "\n" + json.dumps({"text": "v", "label": 3}) + "\n"})
    assert "train.jsonl:2: missing field(s) text" in error_of("custom", {
        "train.jsonl": line + "\n" + json.dumps({"txt": "u", "label": 0}) + "\n", "dev.jsonl": line + "\n"})
    assert "train.jsonl:1: fields question, label name no one kind" in error_of("custom", {
        "train.jsonl": json.dumps({"question": "q", "label": 0}) + "\n", "dev.jsonl": line + "\n"})
    assert "train.jsonl:2: not a JSON object" in error_of("custom", {"train.jsonl": line + "\n{oops\n", "dev.jsonl": line})
    assert "high/1.txt:1: missing field(s) answers" in error_of("race", {
        "train/high/1.txt": json.dumps({"article": "a", "questions": [], "options": []}), "dev/high/1.txt": "{}"})
    columns = "InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2"
    assert "train.csv:1: missing column(s) AnswerRightEnding" in error_of("storycloze", {
        "train.csv": columns + "\na,b,c,d,e,f\n", "dev.csv": columns + "\n"})


def test_sst2_published_files_read_whole():
    if not SHARED_SST2.is_dir():
        pytest.skip(f"{SHARED_SST2} not present (the shared/ folder beside the project, see its README)")
    task, records = read_task("sst2", SHARED_SST2)
    assert len(records["train"]) == 60_614 and len(records["dev"]) == 872
    assert {r.label for r in records["dev"]} == {0.0, 1.0}
    split = encode_split(task, records["dev"], max_len=32)
    assert split.counts["examples"] == 872 and 0 < split.counts["cut"] < 872  # some dev sentences exceed 30 tokens
    assert all(s[0] == START and s[-1] == EXTRACT and len(s) <= 32 for s in split.sequences)


# ---------------------------------------------------------------- metrics, schedule


def test_metrics_follow_their_definitions():
    binary = Task("mrpc", "similarity", labels=("0", "1"), metrics=("f1", "accuracy"))
    got = score(binary, [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])  # tp 2, fp 1, fn 1
    assert got == {"f1": pytest.approx(2 * 2 / (2 * 2 + 1 + 1)), "accuracy": pytest.approx(0.6)}
    stsb = Task("stsb", "similarity", metrics=("pearson", "spearman"))
    y, p = [0.0, 1.0, 2.0, 3.0, 5.0], [0.1, 0.9, 0.9, 5.0, 4.0]  # p has a tie and one swap against y
    got = score(stsb, y, p)
    assert got["pearson"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    rank_y, rank_p = [1, 2, 3, 4, 5], [1, 2.5, 2.5, 5, 4]  # ties share the mean rank
    assert got["spearman"] == pytest.approx(np.corrcoef(rank_y, rank_p)[0, 1])
    stats = pytest.importorskip("scipy.stats")
    assert got["spearman"] == pytest.approx(stats.spearmanr(y, p).statistic)


def test_learning_rate_warms_up_over_a_fraction_then_decays_linearly_to_zero():
    cfg = FinetuneConfig(learning_rate=1e-3, warmup_fraction=0.1)
    lrs = [learning_rate(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3 * 90 / 90) and lrs[55] == pytest.approx(1e-3 * 45 / 90)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(1e-3 / 90)
    assert learning_rate(0, 6300, FinetuneConfig()) == pytest.approx(6.25e-5 / 13)  # GPT-1: 0.2% of 6,300 steps


# ---------------------------------------------------------------- the model and the objective


def test_lm_term_is_the_pretraining_loss_of_each_sequence():
    torch.manual_seed(0)
    model = FinetuneModel(SMALL, Task("t", "multiple_choice", choices=2), head_dropout=0.1).eval()
    sequences = [[START, 5, 6, 7, DELIM, 8, EXTRACT], [START, 5, 6, 7, DELIM, 9, 10, 11, EXTRACT],
                 [START, 1, DELIM, 2, EXTRACT], [START, 3, 3, DELIM, 4, EXTRACT]]
    T = max(map(len, sequences))
    tokens = torch.zeros(4, T, dtype=torch.long)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in sequences])
    _, lm = model(tokens.view(2, 2, T), lengths.view(2, 2))
    per_sequence = [model.gpt(torch.tensor([s[:-1]]), torch.tensor([s[1:]]))[1] for s in sequences]  # model.py's loss
    assert lm.item() == pytest.approx(torch.stack(per_sequence).mean().item(), rel=1e-5)
    # padding changes nothing: the same loss on each sequence alone, and with every padding id
    noisy = tokens.clone()
    for i, s in enumerate(sequences):
        noisy[i, len(s):] = 999
    logits = model.gpt(noisy)[0]
    assert sequence_lm_loss(logits, noisy, lengths).item() == pytest.approx(lm.item(), rel=1e-5)


def test_new_token_rows_are_appended_and_the_pretrained_weights_kept():
    torch.manual_seed(1)
    source = GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32))
    task = Task("t", "similarity", labels=("0", "1"))
    model = pretrained_model(task, source.config.to_dict(), source.state_dict(), FinetuneConfig(seed=3))
    wte = model.gpt.transformer.wte.weight
    assert wte.shape == (50260, 32) and model.gpt.lm_head.weight is wte
    assert torch.equal(wte[:50257], source.transformer.wte.weight)
    assert all(torch.equal(model.gpt.state_dict()[k], v) for k, v in source.state_dict().items() if "wte" not in k and "lm_head" not in k)
    assert 0.01 < wte[50257:].std().item() < 0.03 and model.head.bias.abs().sum() == 0
    again = pretrained_model(task, source.config.to_dict(), source.state_dict(), FinetuneConfig(seed=3))
    assert torch.equal(again.gpt.transformer.wte.weight, wte) and torch.equal(again.head.weight, model.head.weight)
    # similarity: the head reads the sum of the two orders' extract states
    model.eval()
    tokens = torch.tensor([[[START, 1, DELIM, 2, EXTRACT], [START, 2, DELIM, 1, EXTRACT]]])
    scores, _ = model(tokens, torch.tensor([[5, 5]]), with_lm=False)
    hidden = model.gpt.hidden_states(tokens[0])[:, -1]
    assert scores.item() == pytest.approx(model.head(hidden.sum(0)).item(), rel=1e-5)


# ---------------------------------------------------------------- learning what the text says, and only that


def generated(tmp_path: Path, kind: str, shuffle: bool) -> Path:
    return write_task(tmp_path / f"{kind}-{shuffle}", kind, train=512, dev=200, seed=0, shuffle_labels=shuffle)


@pytest.mark.slow
def test_generated_classification_is_learned_and_shuffled_labels_are_not(tmp_path, pretrained):
    # lambda = 0, as in the dry run (jobs/configs/dryrun.toml says why); the LM term is tested apart
    results = finetune(settings(), "custom", generated(tmp_path, "classification", False), pretrained,
                       tmp_path / "out", local=True)
    assert results["dev"]["accuracy"] >= 0.95 and results["steps"] == 96
    shuffled = finetune(settings(), "custom", generated(tmp_path, "classification", True), pretrained,
                        tmp_path / "shuffled", local=True)
    assert 0.38 <= shuffled["dev"]["accuracy"] <= 0.62  # chance is 0.5 on 200 dev examples (sd 0.035)


@pytest.mark.slow
def test_generated_multiple_choice_is_learned_and_shuffled_labels_are_not(tmp_path, pretrained):
    config = settings(batch_size=8, micro_batch_size=8, learning_rate=3e-3)
    results = finetune(config, "custom", generated(tmp_path, "multiple_choice", False), pretrained,
                       tmp_path / "out", local=True)
    assert results["dev"]["accuracy"] >= 0.95 and results["kind"] == "multiple_choice"
    shuffled = finetune(config, "custom", generated(tmp_path, "multiple_choice", True), pretrained,
                        tmp_path / "shuffled", local=True)
    # chance is 0.25; what a model memorizes from unrelated labels is one arbitrary preference (say, for a
    # choice that occurs in the context) applied to every dev item, so it scatters wider than independent
    # guesses (sd 0.031) do: 0.18-0.22 over three seeds of the data, 0.19-0.42 with other cue words
    assert shuffled["dev"]["accuracy"] <= 0.5


def test_lambda_zero_and_half_both_run(tmp_path, pretrained):
    data = write_task(tmp_path / "task", "classification", train=64, dev=32, seed=1)
    runs = {}
    for weight in (0.0, 0.5):
        results = finetune(settings(lm_weight=weight, epochs=1), "custom", data, pretrained, tmp_path / str(weight), local=True)
        runs[weight] = storage_rows(tmp_path / str(weight) / "metrics.jsonl")
        assert results["steps"] == 4 and set(results["dev"]) == {"accuracy"}
    assert all(r["lm_loss"] is None and r["loss"] == r["task_loss"] for r in runs[0.0])
    half = runs[0.5]
    assert all(r["loss"] == pytest.approx(r["task_loss"] + 0.5 * r["lm_loss"]) for r in half)
    assert half[-1]["lm_loss"] < half[0]["lm_loss"]  # the auxiliary objective trains the LM too
    assert runs[0.0][0]["task_loss"] == pytest.approx(half[0]["task_loss"], rel=1e-5)  # same start, same batch
    assert runs[0.0][-1]["task_loss"] != half[-1]["task_loss"]


def storage_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- resume, in this process and on Ray Train


TIMING = ("step_s", "examples_per_s")


def trajectory(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in storage_rows(out / "metrics.jsonl")]


def test_resumed_fine_tuning_reproduces_the_uninterrupted_run(tmp_path, pretrained):
    data = write_task(tmp_path / "task", "classification", train=64, dev=32, seed=2)
    config = settings(lm_weight=0.5, checkpoint_every=4, keep_checkpoints=10, batch_size=8, micro_batch_size=4)
    whole = finetune(config, "custom", data, pretrained, tmp_path / "whole", local=True)
    assert whole["steps"] == 24
    # what a crash after step 9 leaves: checkpoints up to step 8 (the one of step 8 cut short while written)
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-000004", resumed / "checkpoints" / "step-000004")
    cut = (tmp_path / "whole" / "checkpoints" / "step-000008" / "checkpoint.pt").read_bytes()
    storage.write_bytes(resumed / "checkpoints" / "step-000008" / "checkpoint.pt", cut[: len(cut) // 2])
    (resumed / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                                   (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[:9]))
    again = finetune(config, "custom", data, pretrained, resumed, local=True)
    assert trajectory(resumed) == trajectory(tmp_path / "whole")  # dropout included: seeded by the step
    assert (resumed / "dev_predictions.jsonl").read_bytes() == (tmp_path / "whole" / "dev_predictions.jsonl").read_bytes()
    assert again["dev"] == whole["dev"] and again["attempts"] == 1  # one attempt in this folder, from step 4
    assert [r["start_step"] for r in storage_rows(resumed / "attempts.jsonl")] == [4]
    assert (resumed / "data" / "train.pt").read_bytes() == (tmp_path / "whole" / "data" / "train.pt").read_bytes()
    # finished: a rerun reuses it; other settings in the same folder are refused
    assert finetune(config, "custom", data, pretrained, resumed, local=True)["seconds"] == again["seconds"]
    code = cli_main(["finetune", "--task", "custom", "--data", str(data), "--from", str(pretrained), "--out",
                     str(resumed), "--set", "finetune.learning_rate=1e-4", "--set", "finetune.use_gpu=false"])
    assert code == 2


@pytest.mark.slow
def test_ray_train_killed_worker_resumes_to_the_uninterrupted_metrics(tmp_path, pretrained, ray_session):
    data = write_task(tmp_path / "task", "classification", train=64, dev=32, seed=3)
    # head_dropout 0: dropout masks are drawn per worker, so two layouts of the same batch differ only there
    sets = {"use_gpu": "false", "num_workers": 2, "batch_size": 8, "micro_batch_size": 4, "epochs": 1,
            "learning_rate": 5e-3, "warmup_fraction": 0.1, "lm_weight": 0.5, "head_dropout": 0.0, "checkpoint_every": 4,
            "max_failures": 1, "crash_at_step": 6}
    args = [f"--set=finetune.{k}={v}" for k, v in sets.items()]
    out = tmp_path / "ray"
    assert cli_main(["finetune", "--task", "custom", "--data", str(data), "--from", str(pretrained),
                     "--out", str(out), *args]) == 0
    results = json.loads((out / "results.json").read_text())
    attempts = storage_rows(out / "attempts.jsonl")
    assert [(a["start_step"], a["world_size"]) for a in attempts] == [(0, 2), (4, 2)]  # rank 1 died at step 6
    assert results["attempts"] == 2 and results["steps"] == 8
    plain = settings(**{k: v for k, v in sets.items() if k not in ("use_gpu", "num_workers", "max_failures", "crash_at_step")})
    plain.finetune.micro_batch_size = 8
    reference = finetune(plain, "custom", data, pretrained, tmp_path / "local", local=True)
    assert results["dev"] == reference["dev"]
    for ray_row, local_row in zip(trajectory(out), trajectory(tmp_path / "local"), strict=True):
        assert ray_row["step"] == local_row["step"]
        for key in ("loss", "task_loss", "lm_loss"):  # two workers' float sums: 1e-7 apart, not bit for bit
            assert ray_row[key] == pytest.approx(local_row[key], rel=1e-5)
    assert (out / "hf" / "model.safetensors").exists() and (out / "config.toml").exists()


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("kind", ["classification", "multiple_choice", "similarity"])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import GPT2DoubleHeadsModel, GPT2Tokenizer

    torch.manual_seed(4)
    task = Task("t", kind, labels=() if kind == "multiple_choice" else ("0", "1"), choices=3)
    model = FinetuneModel(SMALL, task, head_dropout=0.1).eval()
    torch.nn.init.normal_(model.head.bias, std=0.5)  # a bias that matters (halved for similarity)
    save_double_heads(model, task, tmp_path / "hf")
    theirs = GPT2DoubleHeadsModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    records = [Record(("A story about a cat.", ("It purrs.", "It barks loudly.", "No.")), 1.0, "x:2"),
               Record(("Short.", ("A long answer of many words here.", "b", "c")), 0.0, "x:3")]
    if kind != "multiple_choice":
        records = [Record((r.parts[0], r.parts[1][0]) if kind == "similarity" else r.parts[:1], 1.0, r.where)
                   for r in records]
    split = encode_split(task, records, max_len=64)
    S = split.per_example
    T = max(map(len, split.sequences))
    tokens = torch.zeros(len(records), S, T, dtype=torch.long)
    for i, sequence in enumerate(split.sequences):
        tokens[i // S, i % S, : len(sequence)] = torch.from_numpy(sequence)
    lengths = torch.tensor([len(s) for s in split.sequences]).view(len(records), S)
    with torch.no_grad():
        ours, _ = model(tokens, lengths, with_lm=False)
        out = theirs(tokens, mc_token_ids=lengths - 1)
        lm = model.gpt(tokens.view(-1, T))[0]
    mc = out.mc_logits.sum(1) if kind == "similarity" else out.mc_logits
    torch.testing.assert_close(mc.reshape(ours.shape), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits.view(-1, T, FINETUNE_VOCAB_SIZE), lm, atol=1e-5, rtol=1e-5)
    tokenizer = GPT2Tokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.convert_tokens_to_ids(["<|start|>", "<|delim|>", "<|extract|>"]) == [START, DELIM, EXTRACT]
    for text in ("A story about a cat.", " naïve café — 日本語 🎉\n\n  it's 3.14"):
        assert tokenizer.encode(text) == enc(text)


def test_a_head_of_many_labels_has_no_double_heads_form(tmp_path):
    task = Task("t", "classification", labels=("a", "b", "c"))
    with pytest.raises(ExportError, match="3 outputs"):
        save_double_heads(FinetuneModel(SMALL, task, 0.1), task, tmp_path / "hf")


def test_fine_tunes_from_a_transformers_folder_as_from_its_checkpoint(tmp_path, pretrained):
    assert cli_main(["export-hf", "--run-dir", str(pretrained), "--out", str(tmp_path / "hf")]) == 0
    data = write_task(tmp_path / "task", "classification", train=32, dev=16, seed=4)
    config = settings(epochs=1)
    from_run = finetune(config, "custom", data, pretrained, tmp_path / "a", local=True)
    from_hf = finetune(config, "custom", data, tmp_path / "hf", tmp_path / "b", local=True)
    assert from_hf["source"]["kind"] == "hf" and from_run["source"]["kind"] == "checkpoint"
    assert trajectory(tmp_path / "a") == trajectory(tmp_path / "b")


def test_the_zero_shot_score_of_the_same_weights_stands_beside_the_result(tmp_path, pretrained):
    from training.evaluation.stage import weights_fingerprint
    from training.export import model_from_checkpoint
    from training.session import latest_checkpoint

    weights = weights_fingerprint(model_from_checkpoint(latest_checkpoint(pretrained / "train" / "checkpoints"))[0])
    row = {"task": "custom", "metric": "acc", "value": 0.61, "subset": "all", "items": 16, "shots": 0}
    rows = [{**row, "model_fingerprint": weights}, {**row, "model_fingerprint": "another model", "value": 0.9},
            {**row, "model_fingerprint": weights, "shots": 2, "value": 0.8}]
    storage.write_json(pretrained / "eval" / "results.json", {"results": rows, "models": {}})
    data = write_task(tmp_path / "task", "classification", train=32, dev=16, seed=5)
    try:
        results = finetune(settings(epochs=1), "custom", data, pretrained, tmp_path / "out", local=True)
    finally:
        shutil.rmtree(pretrained / "eval")
    assert results["zero_shot"] == {"metrics": {"acc": 0.61}, "items": 16, "from": str(pretrained / "eval" / "results.json")}
