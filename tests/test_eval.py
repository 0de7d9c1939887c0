"""Evaluation: the data formats, parity with transformers' GPT-2 (and lm-evaluation-harness where installed),
scores that can fail both ways, independence from batch size and workers, few-shot hygiene, HF folders,
scores during training."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from training.evaluation.data import load_task
from training.evaluation.scoring import score_requests
from training.evaluation.tasks import TASKS, EvalDataError, read_items, rolling_windows, wikitext_detokenizer
from pipeline.cli import main as cli_main
from pipeline.config import EvalConfig
from pipeline.devweb import prose_paragraphs
from pipeline.tokenizer import EOT_TOKEN, get_encoding
from training.export import HFFormatError, load_hf, save_hf
from training.model import GPT, GPTConfig
from training.train import LocalSession, train_local

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
SMALL = GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared/ folder beside the project)")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def hellaswag_rows(paragraphs: list[str], seed: int = 0) -> list[dict]:
    """Official-format items: 20 words of a paragraph, then its next 8 words or those of 3 others."""
    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(paragraphs):
        words = text.split()
        others = rng.sample([p for p in paragraphs if p != text], 3)
        label = rng.randrange(4)
        endings = [" ".join(p.split()[20:28]) for p in others]
        endings.insert(label, " ".join(words[20:28]))
        rows.append({"ind": i, "activity_label": "Docs", "ctx_a": " ".join(words[:17]),
                     "ctx_b": " ".join(words[17:20]).lower(), "endings": endings, "label": label})
    return rows


@pytest.fixture(scope="module")
def paragraphs() -> list[str]:
    return [p for p in prose_paragraphs() if len(p.split()) >= 40]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, paragraphs) -> Path:
    """Generated LAMBADA, HellaSwag (official format, one item with WikiHow markers) and WikiText files."""
    folder = tmp_path_factory.mktemp("evaldata")
    jsonl(folder / "lambada_test.jsonl", [{"text": p.rstrip(".")} for p in paragraphs[:12]])
    rows = hellaswag_rows(paragraphs[12:24])
    rows[0]["ctx_a"] = "[header] How to test [title] Write a test. [step] Run it"
    jsonl(folder / "hellaswag_val.jsonl", rows)
    jsonl(folder / "hellaswag_train.jsonl", hellaswag_rows(paragraphs[24:32], seed=1))
    article = " = Testing = \n \n The state @-@ of @-@ the @-@ art , they said ( in 2020 ) . \n"
    (folder / "wiki.test.tokens").write_text(article + " = Other = \n \n " + " ".join(paragraphs[40].split()) + " \n")
    return folder


def hf_dir(tmp_path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_hf(GPT(SMALL), tmp_path / "hf")
    return tmp_path / "hf"


# ---------------------------------------------------------------- formats


def test_readers_follow_each_published_format(tmp_path, data_dir):
    lambada = read_items("lambada", data_dir / "lambada_test.jsonl")
    assert lambada[0].continuations == (" " + lambada[0].passage.split(" ")[-1],)
    assert lambada[0].context + lambada[0].continuations[0] == lambada[0].passage

    official = read_items("hellaswag", data_dir / "hellaswag_val.jsonl")
    first = json.loads((data_dir / "hellaswag_val.jsonl").read_text().splitlines()[0])
    assert official[0].context == f"Docs: How to test. Write a test. Run it {first['ctx_b'].capitalize()}"
    row = json.loads((data_dir / "hellaswag_val.jsonl").read_text().splitlines()[1])
    assert official[1].context.endswith(" " + row["ctx_b"].capitalize())  # ctx_b capitalized, the harness's rule
    rendering = dict(row, ctx=f"{row['ctx_a']} {row['ctx_b']}")
    del rendering["ctx_a"], rendering["ctx_b"]
    rendered = read_items("hellaswag", jsonl(tmp_path / "render.jsonl", [rendering]))[0]
    assert rendered.context == f"Docs: {row['ctx_a']} {row['ctx_b']}"  # no ctx_b to capitalize
    assert official[1].choice_chars == tuple(len(e) for e in row["endings"])

    articles = read_items("wikitext", data_dir / "wiki.test.tokens")
    assert len(articles) == 2
    assert articles[0].continuations[0] == " = Testing =\n\nThe state-of-the-art, they said (in 2020).\n"
    assert articles[0].words == len(re.split(r"\s+", " = Testing = \n \n The state @-@ of @-@ the @-@ art , they "
                                                      "said ( in 2020 ) . \n"))  # counted before de-tokenizing
    assert wikitext_detokenizer("1 @,@ 000 @.@ 5 = = Sub = =") == "1,000.5 == Sub =="


def test_missing_or_malformed_files_name_task_path_and_format(tmp_path, capsys):
    with pytest.raises(EvalDataError, match=r"hellaswag: file .*nowhere/h\.jsonl not found; expected hellaswag_val\.jsonl"):
        read_items("hellaswag", tmp_path / "nowhere" / "h.jsonl")
    bad = tmp_path / "lambada_test.jsonl"
    bad.write_text('{"text": "one two"}\n{"text": \n')
    with pytest.raises(EvalDataError, match=r"lambada: .*lambada_test\.jsonl:2: not JSON .*OpenAI's LAMBADA"):
        read_items("lambada", bad)
    run = tmp_path / "run"
    assert cli_main(["eval", "--run-dir", str(run), "--tasks", "wikitext", "--data-dir", str(tmp_path)]) == 2
    assert f"wikitext: file {tmp_path / 'wiki.test.tokens'} not found; expected WikiText-2" in capsys.readouterr().err
    assert cli_main(["eval", "--run-dir", str(run), "--tasks", "lambada"]) == 2
    assert "no eval data; pass --data-dir" in capsys.readouterr().err
    assert cli_main(["eval", "--run-dir", str(run), "--tasks", "lambda", "--data-dir", str(tmp_path)]) == 2
    assert "unknown task(s) ['lambda']" in capsys.readouterr().err


def test_shared_files_read_in_full():
    lambada = read_items("lambada", shared("lambada_test.jsonl"))
    hellaswag = read_items("hellaswag", shared("hellaswag_val.jsonl"))
    wikitext = read_items("wikitext", shared("wikitext-2_test.tokens"))
    assert len(lambada) == 5153 and len(hellaswag) == 10042 and all(len(i.continuations) == 4 for i in hellaswag)
    assert 50 <= len(wikitext) <= 70 and sum(i.words for i in wikitext) > 240_000


def test_rolling_windows_score_every_token_once_with_the_context_asked():
    tokens = list(range(1000))
    for stride, min_context in ((64, 1), (16, 49)):
        windows = rolling_windows(tokens, 64, stride)
        assert [t for w in windows for t in w.continuations[0]] == tokens
        assert windows[0].context == (EOT_TOKEN,) and len(windows[0].continuations[0]) == 64
        for w in windows[1:]:
            whole = w.context + w.continuations[0]
            assert len(whole) == 65 and whole == tuple(range(whole[0], whole[0] + 65))
            assert len(w.context) >= min_context
        assert all(len(w.continuations[0]) <= stride for w in windows[1:])


# ---------------------------------------------------------------- parity


def reference_choice(hf, block_size: int, context: str, continuation: str) -> tuple[float, bool, int]:
    """The harness's (context, continuation) log-likelihood written out plainly, on GPT2LMHeadModel."""
    encoding = get_encoding()
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_tokens = encoding.encode_ordinary(context) or [EOT_TOKEN]
    cont = encoding.encode_ordinary(context + continuation)[len(encoding.encode_ordinary(context)):]
    ids = (context_tokens + cont)[-(block_size + 1):][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0, -len(cont):].double(), -1)
    target = torch.tensor(cont)
    return logp.gather(1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all()), len(cont)


def reference_items(task: str, path: Path, limit: int) -> list[tuple[str, list[str], int, list[int]]]:
    """(context, continuations, gold, choice lengths) straight from the file, by the harness's prompt rules."""
    out = []
    for line in path.read_text().splitlines()[:limit]:
        row = json.loads(line)
        if task == "lambada":
            out.append((row["text"].rsplit(" ", 1)[0], [" " + row["text"].rsplit(" ", 1)[1]], 0, [1]))
            continue
        def prep(t):
            return re.sub("\\[.*?\\]", "", t.strip().replace(" [title]", ". ")).replace("  ", " ")
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize() if "ctx_a" in row else row["ctx"]
        choices = [prep(e) for e in row["endings"]]
        out.append((prep(row["activity_label"] + ": " + ctx), [" " + c for c in choices], int(row["label"]),
                    [len(c) for c in choices]))
    return out


def test_log_likelihoods_and_accuracy_equal_transformers_gpt2(tmp_path, data_dir):
    folder = hf_dir(tmp_path, seed=3)
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    ours = load_hf(folder)
    sources = [("lambada", data_dir / "lambada_test.jsonl"), ("hellaswag", data_dir / "hellaswag_val.jsonl")]
    sources += [(t, SHARED / f) for t, f in (("lambada", "lambada_test.jsonl"), ("hellaswag", "hellaswag_val.jsonl"))
                if (SHARED / f).is_file()]  # the real files too, when shared/ is there
    for task, path in sources:
        cfg = EvalConfig(**{TASKS[task].file_key: str(path)})
        loaded = load_task(cfg, path.parent, task, shots=0, limit=25, block_size=SMALL.block_size)
        scores = loaded.item_scores(score_requests(ours, loaded.flat_requests(), 512, CPU))
        expected = [[reference_choice(hf, SMALL.block_size, c, x) for x in conts]
                    for c, conts, _, _ in reference_items(task, path, 25)]
        for mine, theirs in zip(scores, expected):
            assert [s.tokens for s in mine] == [t[2] for t in theirs]
            assert np.allclose([s.loglikelihood for s in mine], [t[0] for t in theirs], atol=1e-4, rtol=0)
            assert [s.greedy for s in mine] == [t[1] for t in theirs]
        golds = [(gold, lengths) for _, _, gold, lengths in reference_items(task, path, 25)]
        metrics = loaded.task.metrics(loaded.items, scores)
        if task == "hellaswag":
            acc = np.mean([int(np.argmax([t[0] for t in e])) == g for e, (g, _) in zip(expected, golds)])
            acc_norm = np.mean([int(np.argmax([t[0] / n for t, n in zip(e, lens)])) == g
                                for e, (g, lens) in zip(expected, golds)])
            assert (metrics["acc"], metrics["acc_norm"]) == (acc, acc_norm)
        else:
            assert metrics["acc"] == np.mean([e[0][1] for e in expected])
            assert metrics["ppl"] == pytest.approx(math.exp(-np.mean([e[0][0] for e in expected])), rel=1e-4)


def test_perplexity_equals_transformers_over_disjoint_windows(tmp_path, paragraphs):
    folder = hf_dir(tmp_path, seed=4)
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    text = " ".join(paragraphs[50:53])
    (tmp_path / "doc.txt").write_text(text)
    loaded = load_task(EvalConfig(text_file="doc.txt"), tmp_path, "text", 0, 0, SMALL.block_size)
    scores = loaded.item_scores(score_requests(load_hf(folder), loaded.flat_requests(), 512, CPU))
    metrics = loaded.task.metrics(loaded.items, scores)
    tokens = get_encoding().encode_ordinary(text)
    total, L = 0.0, SMALL.block_size
    full = [EOT_TOKEN] + tokens
    for start in range(0, len(tokens), L):  # chunks of L tokens, each after the L + 1 tokens that end with it
        end = min(len(tokens), start + L)
        ids = full[max(0, end - L) : end + 1]
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([ids[:-1]])).logits[0].double(), -1)[-(end - start):]
        total += logp.gather(1, torch.tensor(ids[-(end - start):])[:, None]).sum().item()
    assert len(tokens) > 3 * L
    assert metrics["token_perplexity"] == pytest.approx(math.exp(-total / len(tokens)), rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(-total / len(text.encode()) / math.log(2), rel=1e-5)
    assert metrics["word_perplexity"] == pytest.approx(math.exp(-total / len(re.split(r"\s+", text))), rel=1e-5)


@pytest.mark.slow
def test_lm_evaluation_harness_agrees(tmp_path, data_dir, monkeypatch):
    """The harness itself, when installed (installing lm-eval 0.4 into this project's venv would downgrade
    python-dateutil 4 to 2.9, so it lives in a separate environment; see the README)."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed here (it would downgrade "
                                                    "python-dateutil); run this test in a venv that has it")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from pipeline.tokenizer import ASSET

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = hf_dir(tmp_path, seed=5)
    tokenizer = PreTrainedTokenizerFast(eos_token="<|endoftext|>", tokenizer_object=TikTokenConverter(
        vocab_file=str(ASSET), pattern=get_encoding()._pat_str, extra_special_tokens={"<|endoftext|>": EOT_TOKEN}).converted())
    builtin = Path(lm_eval.__file__).parent / "tasks"
    files = {"lambada": data_dir / "lambada_test.jsonl", "hellaswag": data_dir / "hellaswag_val.jsonl"}
    if (SHARED / "lambada_test.jsonl").is_file():  # the real items too: LAMBADA's first 40, HellaSwag's first 40
        lines = (SHARED / "lambada_test.jsonl").read_text().splitlines()[:40]
        files["lambada"] = tmp_path / "lambada_test.jsonl"
        files["lambada"].write_text("\n".join(lines) + "\n")
    if (SHARED / "hellaswag_val.jsonl").is_file():  # the rendering has ctx alone: as ctx_a, with an empty ctx_b
        real = [json.loads(x) for x in (SHARED / "hellaswag_val.jsonl").read_text().splitlines()[:40]]
        generated = [json.loads(x) for x in files["hellaswag"].read_text().splitlines()]
        files["hellaswag"] = jsonl(tmp_path / "hellaswag_val.jsonl", generated + [
            {**{k: v for k, v in r.items() if k != "ctx"}, "ctx_a": r["ctx"], "ctx_b": ""} for r in real])
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "lambada.yaml").write_text(
        f"include: {builtin}/lambada/lambada_openai.yaml\ntask: lambada_here\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {files['lambada']}\n")
    (tmp_path / "tasks" / "hellaswag.yaml").write_text(
        f"include: {builtin}/hellaswag/hellaswag.yaml\ntask: hellaswag_here\ndataset_path: json\ndataset_name: null\n"
        f"training_split: null\ndataset_kwargs:\n  data_files:\n    validation: {files['hellaswag']}\n")
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=hf, tokenizer=tokenizer, batch_size=4),
                                  tasks=["lambada_here", "hellaswag_here"], log_samples=True,
                                  task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
    ours = load_hf(folder)
    for task, theirs in (("lambada", "lambada_here"), ("hellaswag", "hellaswag_here")):
        path = files[task]
        loaded = load_task(EvalConfig(**{TASKS[task].file_key: str(path)}), path.parent, task, 0, 0, SMALL.block_size)
        scores = loaded.item_scores(score_requests(ours, loaded.flat_requests(), 512, CPU))
        samples = sorted(out["samples"][theirs], key=lambda s: s["doc_id"])
        for mine, sample in zip(scores, samples):
            assert np.allclose([s.loglikelihood for s in mine], [r[0][0] for r in sample["resps"]], atol=1e-4, rtol=0)
        metrics, results = loaded.task.metrics(loaded.items, scores), out["results"][theirs]
        assert metrics["acc"] == results["acc,none"]
        if task == "hellaswag":
            assert metrics["acc_norm"] == results["acc_norm,none"]
        else:
            assert metrics["ppl"] == pytest.approx(results["perplexity,none"], rel=1e-4)


# ---------------------------------------------------------------- scores that can fail both ways


def choice_rows(paragraphs: list[str], seed: int) -> list[dict]:
    """Rendering-format items at three offsets of each paragraph: 12 words, then its next 6 or 3 others' 6."""
    rng, rows = random.Random(seed), []
    for text in paragraphs:
        for offset in (0, 12, 24):
            others = rng.sample([p for p in paragraphs if p != text], 3)
            label = rng.randrange(4)
            endings = [" ".join(p.split()[offset + 12 : offset + 18]) for p in others]
            endings.insert(label, " ".join(text.split()[offset + 12 : offset + 18]))
            rows.append({"activity_label": "Docs", "ctx": " ".join(text.split()[offset : offset + 12]),
                         "endings": endings, "label": label})
    return rows


@pytest.mark.slow
def test_a_model_trained_on_a_text_beats_chance_on_it_and_not_on_unseen_text(tmp_path, paragraphs):
    """Trained on 12 paragraphs (windows from every 4th token), scored on 36 items from them and 36 from
    12 others. The training softmax is restricted to the text's own tokens, because the full 50,257-way
    one is most of a CPU step; the scoring is the stage's, over the full vocabulary."""
    seen, unseen = paragraphs[100:112], paragraphs[200:212]
    encoding = get_encoding()
    windows = [[EOT_TOKEN, *t[o:]] for t in map(encoding.encode_ordinary, seen) for o in range(0, len(t) - 8, 4)]
    rows = torch.zeros(len(windows), max(map(len, windows)), dtype=torch.long)
    real = torch.zeros_like(rows, dtype=torch.bool)
    for i, w in enumerate(windows):
        rows[i, : len(w)], real[i, : len(w)] = torch.tensor(w), True
    vocabulary = rows[real].unique()
    position = torch.full((SMALL.vocab_size,), -1).index_put_((vocabulary,), torch.arange(len(vocabulary)))
    torch.manual_seed(9)
    model = GPT(GPTConfig(block_size=256, vocab_size=SMALL.vocab_size, n_layer=2, n_head=2, n_embd=64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(9)
    for _ in range(150):
        pick = torch.randint(0, len(windows), (16,), generator=generator)
        hidden = model.hidden_states(rows[pick, :-1])[real[pick, 1:]]
        logits = hidden @ model.lm_head.weight[vocabulary].T
        loss = torch.nn.functional.cross_entropy(logits, position[rows[pick, 1:][real[pick, 1:]]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1.0
    model.eval()
    accuracy = {}
    for name, source in (("seen", seen), ("unseen", unseen)):
        path = jsonl(tmp_path / name / "hellaswag_val.jsonl", choice_rows(source, seed=7))
        loaded = load_task(EvalConfig(), path.parent, "hellaswag", 0, 0, model.config.block_size)
        scores = loaded.item_scores(score_requests(model, loaded.flat_requests(), 4096, CPU))
        accuracy[name] = loaded.task.metrics(loaded.items, scores)["acc"]
    assert accuracy["seen"] >= 0.7  # 36 items at chance (0.25) reach 0.7 with probability ~1e-9
    assert accuracy["unseen"] <= 0.45  # and 0.45 or more with probability ~0.008


# ---------------------------------------------------------------- the stage: workers, batches, reuse


def eval_run(tmp_path: Path, name: str, checkpoint_state: dict, data: Path, *sets: str) -> dict:
    run = tmp_path / name
    LocalSession(run / "train" / "checkpoints", 1).report({}, checkpoint_state)
    args = ["eval", "--run-dir", str(run), "--tasks", "lambada,hellaswag,wikitext", "--data-dir", str(data),
            *[f"--set=eval.{s}" for s in sets]]
    assert cli_main(args) == 0
    results = json.loads((run / "eval" / "results.json").read_text())["results"]
    logs = {t: [json.loads(x) for x in next((run / "eval" / "items").glob(f"{t}-0shot-*.jsonl")).read_text().splitlines()]
            for t in ("lambada", "hellaswag", "wikitext")}
    return {"values": {(r["task"], r["metric"]): r["value"] for r in results}, "logs": logs, "run": run}


@pytest.mark.slow
def test_scores_depend_on_neither_batch_size_nor_worker_count(tmp_path, data_dir, ray_session, capsys):
    torch.manual_seed(6)
    model = GPT(SMALL)
    state = {"model": model.state_dict(), "model_config": model.config.to_dict(), "step": 1}
    one = eval_run(tmp_path, "one", state, data_dir, "num_workers=1")
    two = eval_run(tmp_path, "two", state, data_dir, "num_workers=2")
    tiny_batches = eval_run(tmp_path, "small", state, data_dir, "num_workers=1", "batch_tokens=40")
    assert json.loads((two["run"] / "eval" / "stats.json").read_text())["workers"] == 2
    batches = [json.loads((r["run"] / "eval" / "stats.json").read_text())["batches"] for r in (one, tiny_batches)]
    assert batches[1] > 5 * batches[0]
    assert one["logs"] == two["logs"] and one["values"] == two["values"]  # same batches: the same bits
    for task, rows in one["logs"].items():
        for a, b in zip(rows, tiny_batches["logs"][task]):
            assert np.allclose(a["loglikelihoods"], b["loglikelihoods"], atol=1e-5, rtol=0)
            assert a["greedy"] == b["greedy"] and a["tokens"] == b["tokens"]
    for key, value in one["values"].items():
        assert tiny_batches["values"][key] == (value if "acc" in key[1] else pytest.approx(value, rel=1e-6))
    capsys.readouterr()
    again = eval_run(tmp_path, "one", state, data_dir, "num_workers=1")
    assert again["values"] == one["values"] and "already scored with this model" in capsys.readouterr().err


# ---------------------------------------------------------------- few-shot


def test_a_few_shot_prompt_never_contains_its_own_item(tmp_path, data_dir, paragraphs):
    texts = [p.rstrip(".") for p in paragraphs[60:70]]
    texts[7] = texts[2]  # the same passage twice: neither may be the other's demonstration
    jsonl(tmp_path / "lambada_test.jsonl", [{"text": t} for t in texts])
    cfg = EvalConfig(data_dir=str(tmp_path))
    loaded = load_task(cfg, tmp_path, "lambada", shots=8, limit=0, block_size=1024)
    for item, context, demos in zip(loaded.items, loaded.contexts, loaded.demonstrations):
        *shown, own = context.split("\n\n")
        assert len(shown) == 8 and own == item.context + " ____. ->"  # GPT-3's fill-in-the-blank form
        assert item.index not in demos and all(item.passage.rsplit(" ", 1)[0] not in s for s in shown)
        assert all(s.endswith(" ____. ->" + loaded.items[d].continuations[0]) for s, d in zip(shown, demos))
    assert loaded.demonstrations == load_task(cfg, tmp_path, "lambada", 8, 0, 1024).demonstrations
    reseeded = load_task(EvalConfig(seed=99), tmp_path, "lambada", 8, 0, 1024).demonstrations
    assert reseeded != loaded.demonstrations
    with pytest.raises(EvalDataError, match="9 shots asked, but the demonstrations file has only 8"):
        load_task(cfg, tmp_path, "lambada", 9, 0, 1024)
    hellaswag = load_task(EvalConfig(), data_dir, "hellaswag", 2, 0, 1024)  # demonstrations: hellaswag_train.jsonl
    train = read_items("hellaswag", data_dir / "hellaswag_train.jsonl")
    for context, demos in zip(hellaswag.contexts, hellaswag.demonstrations):
        assert context.split("\n\n")[0] == train[demos[0]].context + train[demos[0]].continuations[train[demos[0]].gold]
    assert hellaswag.shots_path == data_dir / "hellaswag_train.jsonl"


# ---------------------------------------------------------------- HF folders


def test_hf_folders_load_into_our_gpt_and_others_are_refused(tmp_path):
    folder = hf_dir(tmp_path, seed=8)
    reference = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval()
    idx = torch.randint(0, SMALL.vocab_size, (2, SMALL.block_size))
    with torch.no_grad():
        torch.testing.assert_close(load_hf(folder)(idx)[0], reference(idx).logits, atol=1e-5, rtol=1e-5)
    openai = tmp_path / "openai"  # OpenAI's layout: no "transformer." prefix, causal-mask buffers, lm_head
    shutil.copytree(folder, openai)
    weights = {k.removeprefix("transformer."): v for k, v in load_file(folder / "model.safetensors").items()}
    weights["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    weights["lm_head.weight"] = weights["wte.weight"].clone()
    save_file(weights, str(openai / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(load_hf(openai)(idx)[0], reference(idx).logits, atol=1e-5, rtol=1e-5)
    config = json.loads((folder / "config.json").read_text())
    (openai / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(HFFormatError, match="activation_function = 'relu'"):
        load_hf(openai)
    (openai / "model.safetensors").unlink()
    with pytest.raises(HFFormatError, match="no model.safetensors"):
        load_hf(openai)


# ---------------------------------------------------------------- during training


def test_training_scores_eval_tasks_beside_the_val_loss(tmp_path, data_dir):
    from test_train import prose_stream, tiny

    from training.train import plot_loss, read_rows

    prose_stream(tmp_path)
    rows = train_local(tmp_path, tiny(max_steps=10, eval_every=5, eval_tasks=["hellaswag", "lambada"], eval_items=6),
                       EvalConfig(data_dir=str(data_dir)))
    scored = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in scored] == [5, 10]
    for r in scored:
        assert 0 <= r["hellaswag_acc_norm"] <= 1 and r["lambada_ppl"] > 1
        assert set(r) >= {"hellaswag_acc", "hellaswag_acc_per_token", "lambada_acc"}
    assert all("hellaswag_acc" not in r for r in rows if "val_loss" not in r)
    plot_loss(read_rows(tmp_path / "train" / "metrics.jsonl"), tmp_path / "loss.png", "t")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    prose_stream(tmp_path / "other")
    with pytest.raises(EvalDataError, match="eval.data_dir is empty"):
        train_local(tmp_path / "other", tiny(eval_tasks=["hellaswag"]), EvalConfig())
