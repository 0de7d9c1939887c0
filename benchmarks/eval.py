"""Benchmark: HellaSwag scoring against a plain loop, and decontamination against a Python set of n-grams.

    .venv/bin/python -m benchmarks.eval [--model gpt2] [--items 200] [--hellaswag ../shared/eval/hellaswag_val.jsonl]
                                        [--docs 2000] [--lambada ../shared/eval/lambada_test.jsonl] [--rounds 3]
    .venv/bin/python -m benchmarks.eval --model gpt2-tiny --items 20 --docs 200 --rounds 1     # a smoke run

1. HellaSwag, one CPU worker (one process, one torch thread on both sides, the same model with random
   weights: speed does not depend on them, the same items, in the same run, interleaved for `--rounds`
   rounds, each side's best kept):
   - plain loop: what a first evaluation script does, once per (context, ending) pair: the pair's tokens
     through `model(idx)`, log-softmax over every position's logits, the ending's log-probabilities summed;
   - ours: `evaluation.scoring.score_requests`, what each Ray worker of `webtext eval` runs: the context and
     its four endings packed into one row (the context runs once), rows batched (`--batch-tokens`), logits
     only where an ending token is predicted.
   Both sides' log-likelihoods are checked to agree within 1e-4 and their accuracies to be equal.
   Target: >= 4x. With a CUDA GPU (none on the dev box), the same table is printed for the GPU in bf16
   (both sides under bf16 autocast).
   Items: the HellaSwag file given (the full measurement uses the real validation set, 29 context and 14
   ending tokens on average), else items generated from the standard library's docstrings.
2. Decontamination, one process on one core: documents of about 4 KB of prose (the standard library's
   docstrings), one in ten holding a passage of the eval set; the eval set is the LAMBADA file given, else
   2,000 generated passages; both sides get the documents in memory (ours as an Arrow column, the
   baseline as Python strings) and report the documents holding an eval 13-gram:
   - baseline: pure Python, lm-evaluation-harness's Janitor in its Python mode: the text lowercased, ASCII
     punctuation deleted (`str.translate`), split on whitespace, every 13-gram joined into a string and
     looked up in a set of the eval set's 13-gram strings;
   - ours: `pipeline.decontaminate.scan`, the stage's hits phase: one numba loop over the column's UTF-8
     bytes (lowercasing and Unicode punctuation included) hashing words and 13-grams to 64 bits, a bitmap
     test and a binary search; its compilation is outside the timing (numba caches it on disk).
   The two must find the same documents. Target: >= 5x docs/s.

Why the CPU ratio stays under the 4x target for gpt2: on one core both sides are bound by arithmetic
(a 43-token forward already keeps the matrix units busy), so what ours saves is work, not waiting. Per
real HellaSwag item the plain loop runs 4 x 42 tokens through the blocks and projects all 168 onto the
vocabulary (~41 GFLOP for gpt2); ours runs 29 + 4 x 13 = 81 tokens and projects 56 (~18 GFLOP): 2.3x
less. Batching proper pays where the plain loop waits on kernel launches, a GPU, or where Python
overhead dominates.

Smoke run on the 2-core dev box with other jobs running (numbers move up to 2x between runs; the full
measurement is the first command above, with the real files, on a quiet machine):
`--model gpt2 --items 20 --docs 2000 --rounds 1 --hellaswag ../shared/eval/hellaswag_val.jsonl
--lambada ../shared/eval/lambada_test.jsonl`: HellaSwag 15.67 s plain vs 6.17 s ours, 2.5x (log-
likelihoods within 7.6e-06, same accuracy); decontamination 2,808 vs 53,487 docs/s, 19.0x (both find
the 200 documents holding a LAMBADA passage). gpt2-tiny, 40 generated items: 1.8-2.6x (its cost is the
50,257-way vocabulary projection and softmax, which both sides pay per scored position).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from training.evaluation.data import load_task
from training.evaluation.scoring import score_requests
from pipeline.config import EvalConfig, DecontaminateConfig
from pipeline.decontaminate import make_index, ngram_hashes, scan
from pipeline.devweb import prose_paragraphs
from training.model import GPT, model_config


def best_of(rounds: int, sides: dict) -> tuple[dict[str, float], dict]:
    """Every side run `rounds` times, the sides interleaved: each one's best seconds and its last result."""
    best, out = {name: float("inf") for name in sides}, {}
    for _ in range(rounds):
        for name, run in sides.items():
            started = time.perf_counter()
            out[name] = run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best, out


def generated_hellaswag(folder: Path, count: int) -> Path:
    """Official-format items from docstring paragraphs: 25 words, then the true 12 words or 3 others' 12."""
    paragraphs = [p for p in prose_paragraphs() if len(p.split()) >= 40]
    rng = random.Random(0)
    rows = []
    for i in range(count):
        text = paragraphs[i % len(paragraphs)]
        label = rng.randrange(4)
        endings = [" ".join(p.split()[25:37]) for p in rng.sample(paragraphs, 3)]
        endings.insert(label, " ".join(text.split()[25:37]))
        rows.append({"activity_label": "Docs", "ctx_a": " ".join(text.split()[:22]),
                     "ctx_b": " ".join(text.split()[22:25]), "endings": endings, "label": label})
    path = folder / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@torch.no_grad()
def plain_loop(model, loaded, device) -> list[list[float]]:
    """One forward per (context, ending) pair over the whole sequence, as a first evaluation script does."""
    out = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for [request] in loaded.requests:
        scores = []
        for cont in request.continuations:
            ids = torch.tensor([(request.context + cont)[:-1]], device=device)
            with autocast:
                logits = model(ids)[0][0]
            logp = torch.log_softmax(logits.float(), -1)[-len(cont):]
            scores.append(float(logp.gather(1, torch.tensor(cont, device=device)[:, None]).double().sum()))
        out.append(scores)
    return out


def hellaswag_table(args, device: torch.device) -> None:
    torch.manual_seed(0)
    model = GPT(model_config(args.model)).to(device).eval()
    path = Path(args.hellaswag) if args.hellaswag else generated_hellaswag(Path(args.tmp), args.items)
    loaded = load_task(EvalConfig(hellaswag_file=str(path)), path.parent, "hellaswag", 0, args.items,
                       model.config.block_size)
    n = len(loaded.items)
    best, out = best_of(args.rounds, {
        "plain": lambda: plain_loop(model, loaded, device),
        "ours": lambda: loaded.item_scores(score_requests(model, loaded.flat_requests(), args.batch_tokens, device)),
    })
    plain, ours = out["plain"], out["ours"]
    worst = max(abs(a - s.loglikelihood) for p, o in zip(plain, ours) for a, s in zip(p, o))
    tolerance = 1e-4 if device.type == "cpu" else 0.5  # bf16: two kernels' roundings
    assert worst < tolerance, worst
    acc_plain = np.mean([int(np.argmax(p)) == i.gold for p, i in zip(plain, loaded.items)])
    acc_ours = loaded.task.metrics(loaded.items, ours)["acc"]
    where = "CPU, 1 thread, fp32" if device.type == "cpu" else f"{torch.cuda.get_device_name(device)}, bf16"
    print(f"\nHellaSwag, {args.model} ({model.num_params() / 1e6:.1f}M), {n} items from {path.name}, {where}; "
          f"best of {args.rounds}; log-likelihoods agree within {worst:.1e}, acc {acc_plain:.3f} / {acc_ours:.3f}")
    print("| method | seconds | items/s | vs plain loop |")
    print("|---|---|---|---|")
    print(f"| plain loop, model(idx) once per (context, ending) pair | {best['plain']:.2f} | {n / best['plain']:.1f} | 1.0x |")
    print(f"| webtext score_requests (rows of context + 4 endings, batch_tokens {args.batch_tokens}) | "
          f"{best['ours']:.2f} | {n / best['ours']:.1f} | {best['plain'] / best['ours']:.1f}x (target >= 4x) |")


def corpus(docs: int, passages: list[str], paragraphs: list[str]) -> list[str]:
    rng = random.Random(1)
    out = []
    for i in range(docs):
        parts = rng.sample(paragraphs, 14)  # ~4 KB
        if i % 10 == 0:
            parts.insert(7, passages[i % len(passages)])
        out.append("\n\n".join(parts))
    return out


def python_set_baseline(eval_texts: list[str], docs: list[str], n: int) -> list[int]:
    table = str.maketrans("", "", string.punctuation)

    def ngrams(text: str):
        words = text.lower().translate(table).split()
        return (" ".join(words[i : i + n]) for i in range(len(words) - n + 1))

    dirty = {g for t in eval_texts for g in ngrams(t)}
    matches = [[i for i, g in enumerate(ngrams(text)) if g in dirty] for text in docs]  # every match, as the stage
    return [d for d, found in enumerate(matches) if found]


def decontamination_table(args) -> None:
    n = DecontaminateConfig().ngram
    paragraphs = prose_paragraphs()
    if args.lambada:
        passages = [json.loads(line)["text"] for line in Path(args.lambada).read_text().splitlines()]
    else:  # passages from one half of the paragraphs, documents from the other
        rng = random.Random(2)
        passages = [" ".join(rng.sample(paragraphs[::2], 2)) for _ in range(2000)]
    docs = corpus(args.docs, passages, paragraphs[1::2])
    column = pa.array(docs, pa.large_string())
    megabytes = sum(len(d.encode()) for d in docs) / 1e6
    hashes = ngram_hashes(passages, n)["hash"]
    index = make_index(hashes, np.zeros(len(hashes), np.uint8), n)
    scan(column.slice(0, 2), index)  # compiled (or loaded from numba's cache) outside the timing
    best, out = best_of(args.rounds, {"python": lambda: python_set_baseline(passages, docs, n),
                                      "ours": lambda: sorted(set(scan(column, index)["row"].tolist()))})
    ours, theirs = out["ours"], out["python"]
    assert ours == theirs, (len(ours), len(theirs))
    print(f"\nDecontamination: {len(docs)} documents ({megabytes:.1f} MB), {len(passages)} eval passages "
          f"({len(index['keys']):,} distinct {n}-grams), one core, best of {args.rounds}; both find the same "
          f"{len(ours)} documents")
    print("| method | seconds | docs/s | MB/s | vs Python set |")
    print("|---|---|---|---|---|")
    for name, label in (("python", "pure Python: normalized words, 13-gram strings in a set (the Janitor's Python mode)"),
                        ("ours", "webtext decontaminate.scan: numba over UTF-8 bytes, 64-bit hashes, bitmap")):
        s = best[name]
        print(f"| {label} | {s:.2f} | {len(docs) / s:,.0f} | {megabytes / s:.2f} | {best['python'] / s:.1f}x"
              + (" (target >= 5x) |" if name == "ours" else " |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt2", help="gpt2-tiny, gpt2, ... (random weights)")
    parser.add_argument("--items", type=int, default=200, help="HellaSwag items (the first N of the file)")
    parser.add_argument("--hellaswag", help="a hellaswag_val.jsonl (default: generated items)")
    parser.add_argument("--batch-tokens", type=int, default=EvalConfig().batch_tokens)
    parser.add_argument("--docs", type=int, default=2000, help="documents for the decontamination table")
    parser.add_argument("--lambada", help="a lambada_test.jsonl as the eval set (default: generated passages)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        args.tmp = tmp
        hellaswag_table(args, torch.device("cpu"))
        if torch.cuda.is_available():
            hellaswag_table(args, torch.device("cuda"))
    decontamination_table(args)


if __name__ == "__main__":
    main()
