"""Fine-tuning tasks generated from a rule, for dry runs and tests: the label follows from the text alone.

    write_task(folder, "classification", train=512, dev=128, seed=0)   # folder/train.jsonl, dev.jsonl
    webtext finetune --task custom --data folder --from R --out O

Both are `custom` tasks (training/tasks.py) in the jsonl the user's own tasks use:

- classification: 3-6 filler words with three cue words of one of two lists (words about code and words
  about data) at random places among them; the label is the cues' list ("code"/"data").
- multiple_choice: a context of three words of one of two shorter lists (the first five cue words of each:
  fewer words to learn keep it within a CPU test's budget), a "story" about code or data, and four choices:
  one word of the context's list and three of the other, in random order; the right one is the choice
  that shares the context's list (the fitting ending, as in Story Cloze). The answers alone say
  nothing: each choice is scored on its own, and a word of either list is the right one in a quarter of
  its appearances; only the context tells.

`shuffle_labels=True` shuffles the training labels across examples and keeps the dev labels true: each
training text gets another example's label (classification), each context another example's choices and
right answer (multiple choice; drawing a random answer index instead would label the odd choice three
times in four, which a model learns to avoid, below chance). Nothing then links a training text to its
label, so a model fine-tuned on it should score at chance on dev, unless something other than the text
(a leak of the label into the input) carries the label.
Every example is drawn from `random.Random(seed)`, so a seed gives the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pipeline import storage

FILLER = (
    "the a of to and in that it was for on with as his at by from they we she or an were which this "
    "one all there their had been has have would when who will more if no out so said what up its about "
    "into than them can only other new some could time these two may then do first any my now such like"
).split()
# Two lists of words frequent in the dry run's corpus (Python's documentation, pipeline/devweb.py) and in the
# tests' (tests/test_train.py's prose): a pretrained model has distinct embeddings for them. Words it never
# saw do not: pretraining pushes every unseen row the same way (the softmax reaches them all), so in the
# dry-run model such words sit at cosine 0.97 to each other and a short fine-tuning cannot tell them apart.
CUES = {
    "code": ("module", "function", "argument", "class", "method", "test", "exception", "thread", "command", "process"),
    "data": ("object", "string", "value", "list", "file", "number", "name", "bytes", "path", "text"),
}
TOPICS = {name: words[:5] for name, words in CUES.items()}


def classification_example(rng: random.Random) -> dict:
    label = rng.choice(sorted(CUES))
    words = rng.choices(FILLER, k=rng.randint(3, 6))
    for cue in rng.sample(CUES[label], 3):
        words.insert(rng.randint(0, len(words)), cue)
    return {"text": " ".join(words), "label": label}


def multiple_choice_example(rng: random.Random) -> dict:
    topic, other = rng.sample(sorted(TOPICS), 2)
    choices = [rng.choice(TOPICS[topic])] + rng.sample(TOPICS[other], 3)
    rng.shuffle(choices)
    right = next(i for i, c in enumerate(choices) if c in TOPICS[topic])
    return {"context": " ".join(rng.sample(TOPICS[topic], 3)), "choices": choices, "label": right}


GENERATORS = {"classification": (classification_example, "text"), "multiple_choice": (multiple_choice_example, "context")}


def write_task(folder: Path, kind: str, train: int, dev: int, seed: int = 0, shuffle_labels: bool = False) -> Path:
    """Write folder/train.jsonl and folder/dev.jsonl of a generated `kind` task; return the folder."""
    rng = random.Random(seed)
    make, text = GENERATORS[kind]
    for split, count in (("train", train), ("dev", dev)):
        rows = [make(rng) for _ in range(count)]
        if shuffle_labels and split == "train":  # the texts, in a shuffled order, against the same labels
            texts = [row[text] for row in rows]
            rng.shuffle(texts)
            rows = [{**row, text: t} for row, t in zip(rows, texts)]
        storage.write_bytes(Path(folder) / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    return Path(folder)
