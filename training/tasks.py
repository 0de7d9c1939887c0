"""GPT-1's fine-tuning tasks: their published files read into records, each record turned into token sequences.

    task, records = read_task("rte", Path("glue/RTE"))          # {"train": [Record], "dev": [Record]}
    encoded = encode_split(task, records["dev"], max_len=512)   # the sequences the model reads, and the cuts

Input transformations (GPT-1, section 3.3). Three special tokens are appended to GPT-2's 50,257:
START = 50257, DELIM = 50258, EXTRACT = 50259. tiktoken never produces them from text (its ids end at
50256 and text is encoded with `encode_ordinary`, so a literal "<|extract|>" in a text is ordinary
characters); the model gets three new embedding rows for them (training/finetune.py).

    classification   text                   -> [START] text [EXTRACT]
    entailment       premise, hypothesis    -> [START] premise [DELIM] hypothesis [EXTRACT]
    similarity       a, b                   -> [START] a [DELIM] b [EXTRACT]  and  [START] b [DELIM] a [EXTRACT]
                                               (the two extract states are added before the head)
    multiple_choice  context, answers 1..K  -> [START] context [DELIM] answer_k [EXTRACT]  for each k
                                               (one score per k, softmax over k)

Each text is encoded as given, stripped of surrounding whitespace. A record longer than max_len tokens
(special tokens included) is cut from the left of its context, keeping the end nearest the extract token,
and never in the answer: the text (classification), the premise (entailment), the context with the same cut
for every answer (multiple choice); similarity has no context, so the longer text is cut until the shorter
one has half the room, then both, and the two orders hold the same tokens. The cut examples and tokens are
counted. A record whose uncut part alone does not fit (a hypothesis or an answer longer than max_len - 3)
is left out and counted under the reason `answer_too_long` (pipeline/reasons.py).

Tasks, their files under --data DIR (the published formats), kinds, labels and metrics:

    sst2        train.tsv, dev.tsv (GLUE: sentence, label)                    classification  0/1          accuracy
    rte         train.tsv, dev.tsv (GLUE: index, sentence1, sentence2, label) entailment      entailment/not_entailment  accuracy
    mrpc        train.tsv, dev.tsv (GLUE: Quality, #1 ID, #2 ID, #1 String, #2 String)  similarity  0/1  f1, accuracy
    stsb        train.tsv, dev.tsv (GLUE: ..., sentence1, sentence2, score)   similarity      score 0..5   pearson, spearman
    race        train/, dev/ (RACE: one JSON object per article, high/ and middle/ below)  multiple_choice  A-D  accuracy
    storycloze  train.csv, dev.csv (Story Cloze: InputSentence1-4, RandomFifthSentenceQuiz1-2, AnswerRightEnding)
                                                                              multiple_choice 1/2          accuracy
    custom      train.jsonl, dev.jsonl                                        by its fields (below)        accuracy

RACE's context is the article, a space and the question. GPT-1 fine-tuned Story Cloze on its validation file
(the training stories have no wrong endings): split that file into train.csv and dev.csv. `custom` takes one
JSON object per line; the kind follows from the fields of the first line of train.jsonl, and every line must
have them (others are ignored):

    classification  {"text", "label"}         entailment       {"premise", "hypothesis", "label"}
    similarity      {"text_a", "text_b", "label"}
    multiple_choice {"context", "choices": [K strings, the same K on every line], "label": index of the right one}

A custom task's labels (strings, integers or booleans) are the distinct labels of train.jsonl, in sorted
order; a dev label outside them is an error. A missing column or field, a label outside the task's set, a
malformed line and an empty file are `TaskDataError`s naming the file and the line.

The head reads one state per example (one per answer for multiple choice): a two-label task gets one output
(the logit of the second label), a task of K > 2 labels K outputs, STS-B one output (the score, regression),
multiple choice one output per answer.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.reasons import REASONS
from pipeline.tokenizer import VOCAB_SIZE, get_encoding

START, DELIM, EXTRACT = VOCAB_SIZE, VOCAB_SIZE + 1, VOCAB_SIZE + 2
SPECIAL_TOKENS = {"<|start|>": START, "<|delim|>": DELIM, "<|extract|>": EXTRACT}  # names in the exported tokenizer
FINETUNE_VOCAB_SIZE = VOCAB_SIZE + len(SPECIAL_TOKENS)
KINDS = ("classification", "entailment", "similarity", "multiple_choice")
TOO_LONG = "answer_too_long"
assert TOO_LONG in REASONS


class TaskDataError(ValueError):
    """A task file that cannot be read as its format; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class Task:
    """What a task is: its transformation, its labels, its metrics and its head."""

    name: str
    kind: str  # one of KINDS
    labels: tuple = ()  # label names in index order; () for a regression (STS-B)
    metrics: tuple[str, ...] = ("accuracy",)
    choices: int = 0  # answers per example, multiple choice only

    @property
    def regression(self) -> bool:
        return not self.labels and self.kind != "multiple_choice"

    @property
    def outputs(self) -> int:
        """Head outputs per state read: one for two labels, regression and each answer; else one per label."""
        return len(self.labels) if len(self.labels) > 2 else 1

    @property
    def sequences(self) -> int:
        """Token sequences per example."""
        return {"similarity": 2, "multiple_choice": self.choices}.get(self.kind, 1)


@dataclass(frozen=True)
class Record:
    """One example as read: its texts (the kind's parts, answers as a tuple) and label, and where it came from."""

    parts: tuple
    label: float
    where: str  # "dev.tsv:17"


@dataclass
class EncodedSplit:
    """A split as the model reads it: `sequences` (int32 arrays, `per_example` per example, in order), labels,
    where each example came from, and what the cutting did."""

    sequences: list[np.ndarray]
    labels: list[float]
    where: list[str]
    per_example: int
    counts: dict = field(default_factory=dict)  # records, examples, cut, cut_tokens, answer_too_long

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All tokens in one int32 array, and each sequence's start in it (n_sequences + 1 offsets)."""
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.sequences], dtype=np.int64)])
        return np.concatenate(self.sequences).astype(np.int32), offsets

    def digest(self) -> str:
        """sha256 of the tokens, sequence boundaries, labels and sources: what a result depends on."""
        tokens, offsets = self.arrays()
        digest = hashlib.sha256(tokens.tobytes())
        digest.update(offsets.tobytes())
        digest.update(json.dumps([self.labels, self.where]).encode())
        return digest.hexdigest()

    def save(self, path: Path) -> None:
        from pipeline import storage

        tokens, offsets = self.arrays()
        state = {"tokens": torch.from_numpy(tokens), "offsets": torch.from_numpy(offsets),
                 "labels": torch.tensor(self.labels, dtype=torch.float64), "where": self.where,
                 "per_example": self.per_example, "counts": self.counts}
        with storage.atomic_path(path) as tmp:
            torch.save(state, tmp)


def load_split(path: Path) -> dict:
    """An EncodedSplit file as tensors: tokens (int32, flat), offsets (per sequence), labels, where, per_example."""
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- the transformations


def cut_left(tokens: list[int], room: int) -> tuple[list[int], int]:
    """The last `room` tokens and how many were cut."""
    cut = max(0, len(tokens) - room)
    return tokens[cut:], cut


def transform(kind: str, parts: tuple, max_len: int) -> tuple[list[list[int]], int] | None:
    """Token parts of one record -> (its sequences, tokens cut), or None when the uncut part cannot fit."""
    if kind == "classification":
        text, cut = cut_left(parts[0], max_len - 2)
        return [[START, *text, EXTRACT]], cut
    if kind == "entailment":
        premise, hypothesis = parts
        if len(hypothesis) > max_len - 3:
            return None
        premise, cut = cut_left(premise, max_len - 3 - len(hypothesis))
        return [[START, *premise, DELIM, *hypothesis, EXTRACT]], cut
    if kind == "similarity":
        a, b = parts
        room = max_len - 3
        if len(a) + len(b) > room:
            half = room // 2
            if min(len(a), len(b)) <= half:  # the shorter fits in half the room: cut only the longer
                keep_a = len(a) if len(a) <= len(b) else room - len(b)
            else:
                keep_a = half if len(a) <= len(b) else room - half
            keep_b = room - keep_a
            a, b = a[len(a) - keep_a:], b[len(b) - keep_b:]
        cut = len(parts[0]) + len(parts[1]) - len(a) - len(b)
        return [[START, *a, DELIM, *b, EXTRACT], [START, *b, DELIM, *a, EXTRACT]], cut
    if kind == "multiple_choice":
        context, answers = parts
        longest = max(len(a) for a in answers)
        if longest > max_len - 3:
            return None
        context, cut = cut_left(context, max_len - 3 - longest)
        return [[START, *context, DELIM, *answer, EXTRACT] for answer in answers], cut
    raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


def encode_split(task: Task, records: list[Record], max_len: int) -> EncodedSplit:
    """Tokenize every record's texts and transform them; records that cannot fit are counted and left out."""
    encode = get_encoding().encode_ordinary

    def tokens(part):
        return [encode(a.strip()) for a in part] if isinstance(part, tuple) else encode(part.strip())

    split = EncodedSplit([], [], [], task.sequences)
    cut_examples = cut_tokens = too_long = 0
    for record in records:
        done = transform(task.kind, tuple(tokens(p) for p in record.parts), max_len)
        if done is None:
            too_long += 1
            continue
        sequences, cut = done
        split.sequences += [np.asarray(sequence, dtype=np.int32) for sequence in sequences]
        split.labels.append(record.label)
        split.where.append(record.where)
        cut_examples += cut > 0
        cut_tokens += cut
    split.counts = {"records": len(records), "examples": len(split.labels), "cut": cut_examples,
                    "cut_tokens": cut_tokens, TOO_LONG: too_long}
    return split


# ---------------------------------------------------------------- readers of the published formats


def _require(path: Path) -> Path:
    if not path.exists():
        raise TaskDataError(f"{path}: not found")
    return path


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """GLUE's tsv: a header line, then tab-separated fields (no quoting); (line number, row) per line."""
    lines = _require(path).read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise TaskDataError(f"{path}: empty file; expected a header line with the columns {', '.join(columns)}")
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise TaskDataError(f"{path}:1: missing column(s) {', '.join(missing)}; the header has {', '.join(header)}")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise TaskDataError(f"{path}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
        rows.append((number, dict(zip(header, fields))))
    if not rows:
        raise TaskDataError(f"{path}: no examples after the header line")
    return rows


def label_index(value, labels: tuple, where: str) -> int:
    if value not in labels:
        raise TaskDataError(f"{where}: label {value!r} is not one of {', '.join(map(repr, labels))}")
    return labels.index(value)


def read_glue(task: Task, path: Path, text_columns: tuple[str, ...], label_column: str) -> list[Record]:
    records = []
    for number, row in read_tsv(path, (*text_columns, label_column)):
        where = f"{path.name}:{number}"
        if task.regression:
            try:
                label = float(row[label_column])
            except ValueError:
                label = math.nan
            if not 0 <= label <= 5:
                raise TaskDataError(f"{path}:{number}: score {row[label_column]!r} is not a number in [0, 5]")
        else:
            label = label_index(row[label_column], task.labels, f"{path}:{number}")
        records.append(Record(tuple(row[c] for c in text_columns), float(label), where))
    return records


def read_race(path: Path) -> list[Record]:
    """RACE: one JSON object per file ({"article", "questions", "options", "answers"}), any folder depth."""
    files = sorted(p for p in _require(path).rglob("*") if p.suffix in (".txt", ".json") and p.is_file())
    if not files:
        raise TaskDataError(f"{path}: no RACE files (*.txt or *.json, one JSON object each) below this folder")
    records = []
    for file in files:
        try:
            item = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TaskDataError(f"{file}:1: not a JSON object ({err})") from None
        missing = [k for k in ("article", "questions", "options", "answers") if k not in item]
        if missing:
            raise TaskDataError(f"{file}:1: missing field(s) {', '.join(missing)}")
        if not len(item["questions"]) == len(item["options"]) == len(item["answers"]):
            raise TaskDataError(f"{file}:1: questions, options and answers differ in length")
        for i, (question, options, answer) in enumerate(zip(item["questions"], item["options"], item["answers"]), 1):
            where = f"{file.relative_to(path)}: question {i}"
            if len(options) != 4:
                raise TaskDataError(f"{file}:1: question {i} has {len(options)} options, RACE has 4")
            label = label_index(answer, ("A", "B", "C", "D"), f"{file}:1: question {i}")
            records.append(Record((f"{item['article'].strip()} {question.strip()}", tuple(options)), float(label), where))
    return records


STORY_COLUMNS = ("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
                 "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding")


def read_storycloze(path: Path) -> list[Record]:
    with open(_require(path), newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise TaskDataError(f"{path}: empty file; expected a header line with {', '.join(STORY_COLUMNS)}")
        missing = [c for c in STORY_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise TaskDataError(f"{path}:1: missing column(s) {', '.join(missing)}")
        records = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if any(row[c] is None for c in STORY_COLUMNS):
                raise TaskDataError(f"{where}: fewer fields than the header has")
            label = label_index(row["AnswerRightEnding"], ("1", "2"), where)
            context = " ".join(row[f"InputSentence{i}"].strip() for i in range(1, 5))
            endings = (row["RandomFifthSentenceQuiz1"], row["RandomFifthSentenceQuiz2"])
            records.append(Record((context, endings), float(label), f"{path.name}:{reader.line_num}"))
    if not records:
        raise TaskDataError(f"{path}: no examples after the header line")
    return records


CUSTOM_FIELDS = {
    "classification": ("text",),
    "entailment": ("premise", "hypothesis"),
    "similarity": ("text_a", "text_b"),
    "multiple_choice": ("context", "choices"),
}


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(_require(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{path}:{number}: not a JSON object ({err})") from None
        if not isinstance(row, dict):
            raise TaskDataError(f"{path}:{number}: not a JSON object")
        rows.append((number, row))
    if not rows:
        raise TaskDataError(f"{path}: empty file; expected one JSON object per line")
    return rows


def custom_task(path: Path) -> tuple[Task, list[tuple[int, dict]]]:
    """The task a custom train.jsonl describes: its kind from the first line's fields, its labels from all."""
    rows = read_jsonl(path)
    first = rows[0][1]
    kinds = [k for k, names in CUSTOM_FIELDS.items() if all(n in first for n in names)]
    if len(kinds) != 1 or "label" not in first:
        wanted = "; ".join(f"{k}: {', '.join(n)}, label" for k, n in CUSTOM_FIELDS.items())
        raise TaskDataError(f"{path}:1: fields {', '.join(first)} name no one kind of task ({wanted})")
    kind = kinds[0]
    if kind == "multiple_choice":
        choices = first["choices"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise TaskDataError(f"{path}:1: choices must be a list of at least 2 strings")
        return Task("custom", kind, choices=len(choices)), rows
    for number, row in rows:
        if "label" not in row:
            raise TaskDataError(f"{path}:{number}: missing field label")
        if not isinstance(row["label"], (str, int, bool)):
            raise TaskDataError(f"{path}:{number}: label {row['label']!r} is not a string, integer or boolean")
    labels = tuple(sorted({row["label"] for _, row in rows}, key=lambda v: (type(v).__name__, v)))
    if len(labels) < 2:
        raise TaskDataError(f"{path}: every example has the label {labels[0]!r}; a task needs at least two")
    return Task("custom", kind, labels=labels), rows


def read_custom(task: Task, path: Path, rows: list[tuple[int, dict]]) -> list[Record]:
    names = CUSTOM_FIELDS[task.kind]
    records = []
    for number, row in rows:
        where = f"{path}:{number}"
        missing = [n for n in (*names, "label") if n not in row]
        if missing:
            raise TaskDataError(f"{where}: missing field(s) {', '.join(missing)} (a {task.kind} task has "
                                f"{', '.join(names)}, label)")
        parts = tuple(row[n] for n in names)
        if task.kind == "multiple_choice":
            context, choices = parts
            if not isinstance(choices, list) or len(choices) != task.choices or not all(isinstance(c, str) for c in choices):
                raise TaskDataError(f"{where}: choices must be a list of {task.choices} strings (as on line 1)")
            label = row["label"]
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < task.choices:
                raise TaskDataError(f"{where}: label {label!r} is not an index into the {task.choices} choices")
            parts = (context, tuple(choices))
        else:
            label = label_index(row["label"], task.labels, where)
        if not all(isinstance(p, (str, tuple)) for p in parts) or not isinstance(parts[0], str):
            raise TaskDataError(f"{where}: {', '.join(names)} must be strings")
        records.append(Record(parts, float(label), f"{path.name}:{number}"))
    return records


GLUE = {  # task -> (kind, text columns, label column, labels (() = a 0..5 score), metrics)
    "sst2": ("classification", ("sentence",), "label", ("0", "1"), ("accuracy",)),
    "rte": ("entailment", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    "mrpc": ("similarity", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy")),
    "stsb": ("similarity", ("sentence1", "sentence2"), "score", (), ("pearson", "spearman")),
}
TASK_NAMES = (*GLUE, "race", "storycloze", "custom")


def read_task(name: str, data: Path) -> tuple[Task, dict[str, list[Record]]]:
    """The task and its train and dev records, read from its published files under `data`."""
    data = Path(data)
    if name in GLUE:
        kind, columns, label, labels, metrics = GLUE[name]
        task = Task(name, kind, labels=labels, metrics=metrics)
        return task, {s: read_glue(task, data / f"{s}.tsv", columns, label) for s in ("train", "dev")}
    if name == "race":
        return Task(name, "multiple_choice", choices=4), {s: read_race(data / s) for s in ("train", "dev")}
    if name == "storycloze":
        return Task(name, "multiple_choice", choices=2), {s: read_storycloze(data / f"{s}.csv") for s in ("train", "dev")}
    if name == "custom":
        task, train_rows = custom_task(data / "train.jsonl")
        return task, {"train": read_custom(task, data / "train.jsonl", train_rows),
                      "dev": read_custom(task, data / "dev.jsonl", read_jsonl(data / "dev.jsonl"))}
    raise TaskDataError(f"unknown task {name!r}; one of {', '.join(TASK_NAMES)}")


# ---------------------------------------------------------------- metrics


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def score(task: Task, labels, predictions) -> dict[str, float]:
    """The task's metrics of dev predictions (class or answer indices; scores for a regression)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(predictions, dtype=np.float64)
    out = {}
    for metric in task.metrics:
        if metric == "accuracy":
            out[metric] = float(np.mean(y == p))
        elif metric == "f1":  # of the positive class (index 1), as GLUE reports MRPC
            tp, fp, fn = np.sum((p == 1) & (y == 1)), np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
            out[metric] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
        elif metric == "pearson":
            out[metric] = float(np.corrcoef(y, p)[0, 1])
        elif metric == "spearman":
            out[metric] = float(np.corrcoef(_ranks(y), _ranks(p))[0, 1])
    return out
