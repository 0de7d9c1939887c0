"""The evaluation tasks: each data set read from its own published file, its prompt, its few-shot
demonstrations and its metrics. This docstring is the one place the prompts are written down.

    items = read_items("hellaswag", Path("eval/hellaswag_val.jsonl"))
    requests = [task_request(TASKS["hellaswag"], context, item) for item in items]   # token ids to score
    TASKS["hellaswag"].metrics(items, scores)  # {"acc": ..., "acc_norm": ..., "acc_per_token": ...}

Files (nothing is downloaded; a missing or malformed file is an `EvalDataError` naming the task, the path
and the format expected):

| task      | file (its published name)     | format                                                              |
|-----------|-------------------------------|---------------------------------------------------------------------|
| lambada   | `lambada_test.jsonl`          | OpenAI's LAMBADA: one `{"text": passage}` per line                   |
| hellaswag | `hellaswag_val.jsonl`         | one JSON object per line: `activity_label`, `ctx_a` + `ctx_b` (the official file) or `ctx` alone (renderings without them), `endings` (4), `label` |
| wikitext  | `wiki.test.tokens` or `.raw`  | WikiText-2's test file: articles under ` = Title = ` lines           |
| text      | any UTF-8 file                | plain text, scored as one document                                  |

Prompts. `C` is what the model is conditioned on, `X` what is scored after it (its log-likelihood: the sum
of the log-probabilities of X's tokens given C and the tokens of X before them). Tokens are GPT-2's BPE;
C and X are encoded the way lm-evaluation-harness does: trailing spaces of C move to the front of X, C+X
is encoded whole and X's tokens are what follows C's own encoding; an empty C is `<|endoftext|>`.

- lambada (lm-evaluation-harness's `lambada_openai`): the passage split at its last space: C = everything
  before it, X = " " + the last word. acc: greedy decoding reproduces every token of X (the argmax at each
  of X's positions is X's token); ppl: exp(-mean over items of log p(X | C)), lm-evaluation-harness's
  perplexity of the target, per item (not per token).
- hellaswag (lm-evaluation-harness's `hellaswag`): C = preprocess(activity_label + ": " + ctx_a + " " +
  ctx_b.capitalize()), where preprocess strips, turns " [title]" into ". ", removes "[...]" markers and
  double spaces; X = " " + preprocess(ending) for each of the four endings. Files without ctx_a/ctx_b
  use ctx in their place, so ctx_b is not capitalized there (scores then match the harness's closely,
  not exactly). acc: the ending with the highest log-likelihood is the labelled one; acc_norm: highest
  log-likelihood divided by the ending's length in characters (without the space), the harness's
  normalization; acc_per_token: highest mean log-probability per token, llm.c's normalization (llm.c
  calls it acc_norm, and conditions on ctx without the activity label, so its published numbers differ).
- wikitext: each article (from one ` = Title = ` line to the next) is a document; its text is
  de-tokenized first. GPT-2 evaluated WikiText after "invertible de-tokenizers" it did not publish; this is
  the one lm-evaluation-harness and Megatron-LM use (`wikitext_detokenizer`, rule for rule: " @-@ " -> "-",
  " , " -> ", ", spaces inside brackets and quotes, "= = =" -> "===", ...). `<unk>` stays as written.
- text: the whole file is one document, scored as it is.
  Perplexity tasks score every token of a document: it is preceded by `<|endoftext|>` and cut into
  windows of the model's context length L; each window predicts `stride` new tokens (the first
  predicts up to L) conditioned on the L tokens before its last one: lm-evaluation-harness's rolling
  windows with context_len = L - stride + 1, so stride = L (the default) is exactly the harness's
  disjoint windows, and a smaller stride gives every prediction more context. Metrics:
  token_perplexity exp(-sum ll / tokens); word_perplexity exp(-sum ll / words) and byte_perplexity,
  bits_per_byte (-sum ll / bytes / ln 2) with words (`re.split(r"\\s+")` pieces) and UTF-8 bytes counted
  on the document as the file has it, before de-tokenization (the harness's rule: the canonical units
  of the data set).

Few-shot (GPT-3, section 2 and appendix G). With K shots, K demonstrations are drawn for each item with
`random.Random(f"{seed}:{task}:{item index}")`, without replacement, from the task's shots file, or,
where none is set, from the evaluated file itself, never the item itself nor an item with the same
text. A demonstration is the item's C followed by its right X; demonstrations and then the item's C are
joined by "\n\n". LAMBADA with K >= 1 uses GPT-3's fill-in-the-blank form for demonstrations and the
item alike: C + " ____. ->" (the harness's `lambada_openai_cloze`); K = 0 is the plain form above. A prompt
longer than the model's context is cut from the left, as the harness does. Perplexity tasks have no
shots.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import ConfigError
from pipeline.tokenizer import EOT_TOKEN, get_encoding

FEW_SHOT_SEPARATOR = "\n\n"
CLOZE_SUFFIX = " ____. ->"


class EvalDataError(ConfigError):
    """An eval file that is missing or not in its task's format; the message names task, path and format."""


@dataclass(frozen=True)
class Item:
    """One eval example: what is conditioned on, the candidates scored after it, and the right one.

    Perplexity documents have context "" and their text as the one continuation, plus their words and
    bytes. `passage` is the text decontamination looks for in the training corpus.
    """

    index: int
    context: str
    continuations: tuple[str, ...]
    gold: int
    passage: str
    choice_chars: tuple[int, ...] = ()
    words: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class ContinuationScore:
    """The model's verdict on one continuation: log-likelihood, greedy match, tokens scored."""

    loglikelihood: float
    greedy: bool
    tokens: int


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "choice": C + candidate continuations; "perplexity": rolling windows over documents
    file_key: str  # the EvalConfig field naming its file
    shots_key: str  # the EvalConfig field naming its demonstrations file ("" = none possible)
    format: str
    read: Callable[[Path], list[Item]]
    metrics: Callable[[list[Item], list[list[ContinuationScore]]], dict[str, float]]
    primary: str
    chance: float | None = None


# ---------------------------------------------------------------- readers


def _read_text(path: Path, task: str, fmt: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise EvalDataError(f"{task}: {path}: not UTF-8 ({err}); expected {fmt}") from None


def _jsonl(path: Path, task: str, fmt: str) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(_read_text(path, task, fmt).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalDataError(f"{task}: {path}:{number}: not JSON ({err}); expected {fmt}") from None
        if not isinstance(row, dict):
            raise EvalDataError(f"{task}: {path}:{number}: not a JSON object; expected {fmt}")
        rows.append((number, row))
    return rows


LAMBADA_FORMAT = 'OpenAI\'s LAMBADA lambada_test.jsonl: one {"text": passage} per line'


def read_lambada(path: Path) -> list[Item]:
    items = []
    for number, row in _jsonl(path, "lambada", LAMBADA_FORMAT):
        text = row.get("text")
        if not isinstance(text, str) or " " not in text.strip():
            raise EvalDataError(f"lambada: {path}:{number}: no \"text\" of two or more words; expected {LAMBADA_FORMAT}")
        words = text.split(" ")
        items.append(Item(len(items), " ".join(words[:-1]), (" " + words[-1],), 0, text))
    return items


HELLASWAG_FORMAT = ('hellaswag_val.jsonl: one JSON object per line with activity_label, ctx_a and ctx_b (or ctx), '
                    'endings (a list of strings) and label (the right ending\'s index)')


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag preprocess: WikiHow's bracket markers out."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path: Path) -> list[Item]:
    items = []
    for number, row in _jsonl(path, "hellaswag", HELLASWAG_FORMAT):
        endings, label = row.get("endings"), row.get("label")
        if "ctx_a" in row and "ctx_b" in row:
            ctx = f"{row['ctx_a']} {str(row['ctx_b']).capitalize()}"
        else:
            ctx = row.get("ctx")
        ok = (isinstance(ctx, str) and isinstance(row.get("activity_label"), str) and isinstance(endings, list)
              and len(endings) >= 2 and all(isinstance(e, str) for e in endings)
              and str(label).isdigit() and int(label) < len(endings))
        if not ok:
            raise EvalDataError(f"hellaswag: {path}:{number}: a field is missing or of the wrong type; "
                                f"expected {HELLASWAG_FORMAT}")
        context = hellaswag_preprocess(f"{row['activity_label']}: {ctx}")
        choices = [hellaswag_preprocess(e) for e in endings]
        items.append(Item(len(items), context, tuple(" " + c for c in choices), int(label),
                          " ".join([context, *choices]), choice_chars=tuple(len(c) for c in choices)))
    return items


WIKITEXT_FORMAT = "WikiText-2's wiki.test.tokens or wiki.test.raw: UTF-8 text, articles under ' = Title = ' lines"
TEXT_FORMAT = "a UTF-8 text file"
_ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_detokenizer(string: str) -> str:
    """lm-evaluation-harness's (and Megatron-LM's) WikiText de-tokenizer, rule for rule."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for mark in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {mark} ", f"{mark} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    return string.replace(" 's", "'s")


def _document(index: int, original: str, scored: str) -> Item:
    return Item(index, "", (scored,), 0, scored, words=len(re.split(r"\s+", original)),
                bytes=len(original.encode("utf-8")))


def wikitext_articles(text: str) -> list[str]:
    """The articles of a WikiText file, each from its ` = Title = ` line up to the next one."""
    articles: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _ARTICLE_TITLE.match(line.rstrip("\n")) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["".join(lines) for lines in articles if "".join(lines).strip()]


def read_wikitext(path: Path) -> list[Item]:
    articles = wikitext_articles(_read_text(path, "wikitext", WIKITEXT_FORMAT))
    if not articles:
        raise EvalDataError(f"wikitext: {path}: no text; expected {WIKITEXT_FORMAT}")
    return [_document(i, a, wikitext_detokenizer(a)) for i, a in enumerate(articles)]


def read_text(path: Path) -> list[Item]:
    text = _read_text(path, "text", TEXT_FORMAT)
    if not text.strip():
        raise EvalDataError(f"text: {path}: empty; expected {TEXT_FORMAT}")
    return [_document(0, text, text)]


# ---------------------------------------------------------------- metrics


def _argmax(values: list[float]) -> int:
    return int(np.argmax(np.array(values, dtype=np.float64)))  # the first of equal maxima, as the harness


def lambada_metrics(items: list[Item], scores: list[list[ContinuationScore]]) -> dict[str, float]:
    return {"acc": float(np.mean([s[0].greedy for s in scores])),
            "ppl": math.exp(-float(np.mean([s[0].loglikelihood for s in scores])))}


def choice_metrics(items: list[Item], scores: list[list[ContinuationScore]]) -> dict[str, float]:
    right = {"acc": [], "acc_norm": [], "acc_per_token": []}
    for item, item_scores in zip(items, scores):
        ll = [s.loglikelihood for s in item_scores]
        right["acc"].append(_argmax(ll) == item.gold)
        right["acc_norm"].append(_argmax([x / n for x, n in zip(ll, item.choice_chars)]) == item.gold)
        right["acc_per_token"].append(_argmax([s.loglikelihood / s.tokens for s in item_scores]) == item.gold)
    return {name: float(np.mean(values)) for name, values in right.items()}


def perplexity_metrics(items: list[Item], scores: list[list[ContinuationScore]]) -> dict[str, float]:
    ll = sum(s.loglikelihood for windows in scores for s in windows)
    tokens = sum(s.tokens for windows in scores for s in windows)
    words, size = sum(i.words for i in items), sum(i.bytes for i in items)
    return {"token_perplexity": math.exp(-ll / tokens), "word_perplexity": math.exp(-ll / words),
            "byte_perplexity": math.exp(-ll / size), "bits_per_byte": -ll / size / math.log(2)}


TASKS = {
    "lambada": Task("lambada", "choice", "lambada_file", "lambada_shots_file", LAMBADA_FORMAT, read_lambada,
                    lambada_metrics, "acc"),
    "hellaswag": Task("hellaswag", "choice", "hellaswag_file", "hellaswag_shots_file", HELLASWAG_FORMAT,
                      read_hellaswag, choice_metrics, "acc_norm", chance=0.25),
    "wikitext": Task("wikitext", "perplexity", "wikitext_file", "", WIKITEXT_FORMAT, read_wikitext,
                     perplexity_metrics, "word_perplexity"),
    "text": Task("text", "perplexity", "text_file", "", TEXT_FORMAT, read_text, perplexity_metrics,
                 "word_perplexity"),
}


def check_exists(name: str, path: Path, what: str = "file") -> None:
    """EvalDataError naming the task, the path expected and the format, when `path` is not a file."""
    task = TASKS[name]
    if not Path(path).is_file():
        raise EvalDataError(f"{name}: {what} {path} not found; expected {task.format} (set --data-dir or "
                            f"eval.data_dir to its folder, or eval.{task.file_key if what == 'file' else task.shots_key} "
                            f"to its path)")


def read_items(name: str, path: Path, what: str = "file") -> list[Item]:
    """The items of task `name` from `path`; EvalDataError naming the task, path and format if unreadable."""
    check_exists(name, path, what)
    return TASKS[name].read(Path(path))


# ---------------------------------------------------------------- prompts


def demonstration(task: Task, item: Item) -> str:
    """An item as a few-shot demonstration: its prompt followed by its right continuation."""
    return prompt_of(task, item, shots=1) + item.continuations[item.gold]


def prompt_of(task: Task, item: Item, shots: int) -> str:
    """The item's own prompt: LAMBADA takes GPT-3's fill-in-the-blank form in the few-shot setting."""
    return item.context + CLOZE_SUFFIX if task.name == "lambada" and shots else item.context


def draw_demonstrations(task: Task, item: Item, pool: list[Item], shots: int, seed: int, same_file: bool) -> list[int]:
    """Indices into `pool` of the item's K demonstrations: never the item itself, nor one with its text."""
    candidates = [p.index for p in pool if p.passage != item.passage and not (same_file and p.index == item.index)]
    if len(candidates) < shots:
        raise EvalDataError(f"{task.name}: {shots} shots asked, but the demonstrations file has only "
                            f"{len(candidates)} items other than item {item.index}")
    return random.Random(f"{seed}:{task.name}:{item.index}").sample(candidates, shots)


def few_shot_context(task: Task, item: Item, pool: list[Item], demos: list[int], shots: int) -> str:
    """The prompt conditioned on: the demonstrations, then the item's own prompt, joined by a blank line."""
    by_index = {p.index: p for p in pool}
    return FEW_SHOT_SEPARATOR.join([demonstration(task, by_index[i]) for i in demos] + [prompt_of(task, item, shots)])


# ---------------------------------------------------------------- token requests


@dataclass(frozen=True)
class Request:
    """Token ids to score (training/evaluation/scoring.py): continuations after one shared context."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def encode_pairs(context: str, continuations: tuple[str, ...]) -> Request:
    """lm-evaluation-harness's encoding of (context, continuation) pairs, for one context."""
    encoding = get_encoding()
    if not context:
        return Request((EOT_TOKEN,), tuple(tuple(encoding.encode_ordinary(c)) for c in continuations))
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuations = context[:-spaces], tuple(context[-spaces:] + c for c in continuations)
    context_tokens = encoding.encode_ordinary(context)
    outs = tuple(tuple(encoding.encode_ordinary(context + c)[len(context_tokens):]) for c in continuations)
    return Request(tuple(context_tokens), outs)


def rolling_windows(tokens: list[int], max_len: int, stride: int) -> list[Request]:
    """Requests scoring every token of a document once (lm-evaluation-harness's rolling windows with
    context_len = max_len - stride + 1, made disjoint): each is (context, predicted tokens)."""
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    out = [Request((EOT_TOKEN,), (tuple(tokens[:first]),))]
    predicted = first
    while predicted < len(tokens):
        count = min(len(tokens) - predicted, stride)
        end = predicted + count
        out.append(Request(tuple(tokens[end - max_len - 1 : end - count]), (tuple(tokens[end - count : end]),)))
        predicted = end
    return out


def task_requests(task: Task, contexts: list[str], items: list[Item], max_len: int, stride: int) -> list[list[Request]]:
    """Per item, the requests that score it: one for a choice item, one per window for a document."""
    if task.kind == "perplexity":
        encoding = get_encoding()
        return [rolling_windows(encoding.encode_ordinary(item.continuations[0]), max_len, stride) for item in items]
    return [[encode_pairs(context, item.continuations)] for context, item in zip(contexts, items)]
