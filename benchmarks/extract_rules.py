"""What the extract stage's rules are chosen from, on real pages: the selector and the junk heuristics.

Used by benchmarks/extract.py --pages (run that; this module prints three of its tables):

- `selector_table(pages)`: every selection rule scored by cross-validation on the pages: 5 folds, repeated
  with 5 shuffles; a rule's values are chosen on the training folds and its F1 is the mean over the
  held-out fold's pages (never the training fold's), averaged over the repeats (± their spread). Rules:
  each extractor alone, the previous rule (trafilatura fast + precision, newspaper when its F1 against
  resiliparse is under θ = 0.7), the package's rule (pipeline/extract/selector.py, its three values
  chosen from a grid on the training folds: the rule consulting newspaper least among those within
  F1_TOLERANCE of the best), and two learned selectors (a logistic regression and a
  depth-3 tree, scikit-learn) that pick one of the three texts from 30 features of all three (lengths,
  line counts, words per line, sentence ends per word, link-text share, pairwise token precision and
  recall). Every text gets the page's title line (pipeline/extract/metadata.py), as in the stage.
  `consulted` is the share of pages on which newspaper runs. Last, the grid's choice on all pages, which
  is what SelectionRule's defaults must be.
- `loss_table(pages)`: which gold lines our text misses: the title (first gold line), byline and date
  lines (short lines among the next three), short lines (list items, captions: at most 6 words),
  longer lines without end punctuation (headings, list items, table rows), and paragraphs.
- `heuristics_table(pages, junk)`: each junk heuristic's measure on the English gold articles of >= 128
  GPT-2 tokens, on our texts of those pages, and on the dry-run web's junk pages, as histograms, with
  the default bound; then the articles each text loses to the heuristics.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np

from benchmarks.extract_rows import PREVIOUS_THETA
from pipeline.config import ExtractConfig
from pipeline.extract.filters import filter_document
from pipeline.extract.heuristics import HEURISTICS, junk_reason, sentence_end_share
from pipeline.extract.metadata import with_title
from pipeline.extract.score import token_f1
from pipeline.extract.selector import SelectionRule, agreement_features, consults, newspaper_features, pick

EXTRACTORS = ("trafilatura", "resiliparse", "newspaper")
FOLDS, REPEATS = 5, 5
GRID = [SelectionRule(c, k, p) for c, k, p in itertools.product(
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), (1.0, 1.25, 1.5, 2.0, 3.0), (0.5, 0.7, 0.8, 0.9, 0.95))]
# F1 within this of the best counts as equal when choosing a rule (about the spread of the held-out
# estimates between shuffles); the cheaper rule then wins, since newspaper costs more than a page's rest.
F1_TOLERANCE = 0.002


def previous_rule_text(page: dict) -> str:
    """The rule this one replaces: trafilatura fast + precision, newspaper when its F1 against
    resiliparse is under θ (unless newspaper's text is under half of trafilatura's), then resiliparse."""
    text = page["traf_precision"]
    if not text or token_f1(text, page["res"])[2] < PREVIOUS_THETA:
        if page["news"] and len(page["news"]) >= 0.5 * len(text):
            text = page["news"]
    return text or page["res"]


def prepare(pages: list[dict]) -> None:
    """Per page: the selector's features (the package's functions) and the F1 of each text with its title."""
    for p in pages:
        p["features"] = agreement_features(p["traf"], p["res"])
        p["all_features"] = {**p["features"], **newspaper_features(p["news"], p["res"])}
        texts = {"trafilatura": p["traf"], "resiliparse": p["res"], "newspaper": p["news"],
                 "previous": previous_rule_text(p)}
        p["f1"] = {name: token_f1(with_title(p["title"], t), p["text"])[2] for name, t in texts.items()}


def rule_choice(page: dict, rule: SelectionRule) -> tuple[str, bool]:
    """(extractor, consulted): pipeline.extract.selector.select's decision, on the page's precomputed features."""
    consulted = consults(page["features"], rule) and page["english"]
    return pick(page["all_features"] if consulted else page["features"], rule), consulted


def rule_f1(pages: list[dict], rule: SelectionRule) -> tuple[float, float]:
    choices = [rule_choice(p, rule) for p in pages]
    return (float(np.mean([p["f1"][c] for p, (c, _) in zip(pages, choices)])),
            float(np.mean([consulted for _, consulted in choices])))


def best_rule(pages: list[dict], grid: list[SelectionRule] = GRID) -> SelectionRule:
    """The rule of the grid that consults newspaper least among those within F1_TOLERANCE of the best F1."""
    scored = [(rule, *rule_f1(pages, rule)) for rule in grid]
    top = max(f1 for _, f1, _ in scored)
    return min((s for s in scored if s[1] >= top - F1_TOLERANCE), key=lambda s: (s[2], -s[1]))[0]


def learned_features(page: dict) -> list[float]:
    """30 features of the three texts: per text 6, per ordered pair token precision and recall."""
    texts = [page["traf"], page["res"], page["news"]]
    out = []
    for t in texts:
        lines = [line for line in t.splitlines() if line.strip()]
        words = t.split()
        bag = Counter(words)
        out += [math.log1p(len(t)), math.log1p(len(lines)), math.log1p(len(words) / max(1, len(lines))),
                sentence_end_share(t), sum((bag & page["anchor_words"]).values()) / max(1, len(words)),
                float(not t)]
    for a, b in itertools.permutations(texts, 2):
        out += list(token_f1(a, b)[:2]) if a and b else [0.0, 0.0]
    return out


def learned_choices(train: list[dict], test: list[dict], make) -> list[str]:
    """A classifier of the best text, weighted by what a wrong pick costs, fit on `train`."""
    x = np.array([learned_features(p) for p in train])
    scores = np.array([[p["f1"][e] for e in EXTRACTORS] for p in train])
    best = scores.argmax(1)
    regret = scores.max(1) - scores.min(1) + 1e-3  # what the worst pick would cost
    mean, std = x.mean(0), x.std(0) + 1e-9
    if len(set(best)) == 1:
        return [EXTRACTORS[best[0]]] * len(test)
    model = make().fit((x - mean) / std, best, sample_weight=regret)
    return [EXTRACTORS[i] for i in model.predict((np.array([learned_features(p) for p in test]) - mean) / std)]


def cross_validate(pages: list[dict], choose) -> tuple[float, float, float, list]:
    """Held-out F1 (mean, spread over repeats), newspaper share and what was chosen per fold, for
    `choose(train, test) -> (extractor per test page, consulted per test page, what was chosen)`."""
    means, consulted, chosen = [], [], []
    for repeat in range(REPEATS):
        order = list(range(len(pages)))
        random.Random(repeat).shuffle(order)
        f1 = np.zeros(len(pages))
        asked = np.zeros(len(pages))
        for fold in range(FOLDS):
            test_ids = set(order[fold::FOLDS])
            train = [p for i, p in enumerate(pages) if i not in test_ids]
            test_idx = sorted(test_ids)
            picks, asks, what = choose(train, [pages[i] for i in test_idx])
            f1[test_idx] = [pages[i]["f1"][e] for i, e in zip(test_idx, picks)]
            asked[test_idx] = asks
            chosen.append(what)
        means.append(f1.mean())
        consulted.append(asked.mean())
    return float(np.mean(means)), float(np.std(means)), float(np.mean(consulted)), chosen


def selector_table(pages: list[dict]) -> SelectionRule:
    """Print the held-out comparison (module docstring); return the grid's choice on all pages."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    prepare(pages)
    fixed = lambda name, asks: lambda train, test: ([name] * len(test), [asks(p) for p in test], None)  # noqa: E731

    def ours(train, test):
        rule = best_rule(train)
        choices = [rule_choice(p, rule) for p in test]
        return [c for c, _ in choices], [a for _, a in choices], rule

    def fixed_consult(consult_below):
        grid = [r for r in GRID if r.consult_below == consult_below]

        def choose(train, test):
            rule = best_rule(train, grid)
            choices = [rule_choice(p, rule) for p in test]
            return [c for c, _ in choices], [a for _, a in choices], rule
        return choose

    def learned(make):
        return lambda train, test: (learned_choices(train, test, make), [1.0] * len(test), None)

    rows = [
        ("trafilatura fast alone", fixed("trafilatura", lambda p: 0.0)),
        ("resiliparse alone", fixed("resiliparse", lambda p: 0.0)),
        ("newspaper3k core alone", fixed("newspaper", lambda p: 1.0)),
        (f"previous rule (θ = {PREVIOUS_THETA})", fixed("previous", lambda p: float(
            not p["traf_precision"] or token_f1(p["traf_precision"], p["res"])[2] < PREVIOUS_THETA))),
        ("our rule (values chosen per fold)", ours),
        ("logistic regression (30 features)", learned(lambda: LogisticRegression(C=1.0, max_iter=5000))),
        ("tree, depth 3 (30 features)", learned(lambda: DecisionTreeClassifier(max_depth=3, min_samples_leaf=5))),
    ]
    oracle = float(np.mean([max(p["f1"][e] for e in EXTRACTORS) for p in pages]))
    print(f"\nSelector, held-out F1 ({FOLDS} folds x {REPEATS} shuffles, {len(pages)} pages; each text with its "
          f"title line; best of the three per page: {oracle:.3f})")
    print(f"{'rule':38s} {'F1':>6s} {'±':>6s} {'consulted':>9s}")
    chosen_per_fold = []
    for name, choose in rows:
        mean, spread, asked, chosen = cross_validate(pages, choose)
        print(f"{name:38s} {mean:6.3f} {spread:6.3f} {asked:9.0%}")
        if choose is ours:
            chosen_per_fold = chosen
    print("our rule by consult_below (the other two values chosen per fold): " + ", ".join(
        f"{c}: F1 {mean:.3f}, newspaper on {asked:.0%}" for c in sorted({r.consult_below for r in GRID})
        for mean, _, asked, _ in [cross_validate(pages, fixed_consult(c))]))
    picks = Counter((r.consult_below, r.min_length_ratio, r.min_precision) for r in chosen_per_fold)
    print("our rule's values per fold (consult_below, min_length_ratio, min_precision): "
          + ", ".join(f"{k} x{n}" for k, n in picks.most_common()))
    rule = best_rule(pages)
    f1, asked = rule_f1(pages, rule)
    note = "" if rule == SelectionRule() else f"   (differs from the package's {SelectionRule()}: update it)"
    print(f"chosen on all pages: {rule} (in-sample F1 {f1:.3f}, newspaper on {asked:.0%}){note}")
    return rule


# ---------------------------------------------------------------- what the pages lose

END_PUNCTUATION = ('.', '!', '?', '"', "'", ")", ":", "”", "’")


def line_kind(index: int, line: str) -> str:
    words = len(line.split())
    if index == 0:
        return "title (first line)"
    if index < 4 and words <= 12:
        return "byline, date (short, lines 2-4)"
    if words <= 6:
        return "short line (<= 6 words)"
    if not line.endswith(END_PUNCTUATION):
        return "unpunctuated line (> 6 words)"
    return "paragraph"


def loss_table(pages: list[dict], texts: dict[str, list[str]]) -> None:
    """Share of each kind of gold line's tokens that each text misses (a line is missed when under half
    of its tokens are in the text)."""
    kinds = ["title (first line)", "byline, date (short, lines 2-4)", "short line (<= 6 words)",
             "unpunctuated line (> 6 words)", "paragraph"]
    print("\nWhat the pages lose: share of the gold tokens in lines each text misses, by kind of line")
    print(f"{'line kind':34s} {'gold tokens':>11s} " + " ".join(f"{name:>22s}" for name in texts))
    missed = {name: Counter() for name in texts}
    total = Counter()
    for i, page in enumerate(pages):
        lines = [line.strip() for line in page["text"].splitlines() if line.strip()]
        for name, outputs in texts.items():
            have = Counter(outputs[i].split())
            for index, line in enumerate(lines):
                tokens = line.split()
                if sum(have[t] > 0 for t in tokens) < len(tokens) / 2:
                    missed[name][line_kind(index, line)] += len(tokens)
        for index, line in enumerate(lines):
            total[line_kind(index, line)] += len(line.split())
    for kind in kinds:
        print(f"{kind:34s} {total[kind]:11d} " + " ".join(
            f"{missed[name][kind] / max(1, total[kind]):22.1%}" for name in texts))


# ---------------------------------------------------------------- junk heuristics

def histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for v in values:
        i = max(0, min(len(counts) - 1, int(np.searchsorted(edges, v, side="right")) - 1))
        counts[i] += 1
    return counts


def heuristics_table(articles: list[dict], ours: list[str], junk: dict[str, str]) -> None:
    """Histograms of each heuristic's measure (module docstring) and the articles each text loses."""
    config = ExtractConfig()
    print(f"\nJunk heuristics on {len(articles)} English gold articles of >= 128 tokens (gold), our texts of "
          f"those pages (ours) and the dry-run web's junk ({', '.join(junk)})")
    measures = {}
    for name, (measure, field, is_minimum) in HEURISTICS.items():
        measures.setdefault(measure, []).append((name, field, is_minimum))
    for measure, rules in measures.items():
        gold = [measure(a["text"]) for a in articles]
        mine = [measure(t) for t in ours]
        spam = {kind: measure(text) for kind, text in junk.items()}
        every = gold + mine + list(spam.values()) + [getattr(config, f) for _, f, _ in rules]
        edges = list(np.linspace(min(every), max(every) * 1.0001 + 1e-9, 13))
        bounds = ", ".join(f"{name} {'<' if is_min else '>'} {getattr(config, f)}" for name, f, is_min in rules)
        quantiles = "/".join(f"{v:.3f}" for v in np.percentile(gold, [0, 1, 5, 50, 95, 99, 100]))
        print(f"\n{measure.__name__} (drops: {bounds}); gold min/1%/5%/50%/95%/99%/max {quantiles}; "
              f"ours min {min(mine):.3f} max {max(mine):.3f}; junk "
              + ", ".join(f"{k} {v:.3f}" for k, v in spam.items()))
        print(f"  {'bin':>15s} {'gold':>5s} {'ours':>5s}  junk")
        for lo, hi, g, o in zip(edges, edges[1:], histogram(gold, edges), histogram(mine, edges)):
            marks = [k for k, v in spam.items() if lo <= v < hi] + [
                f"<- {name} bound" for name, f, _ in rules if lo <= getattr(config, f) < hi]
            print(f"  {lo:6.3f}-{hi:<8.3f} {g:5d} {o:5d}  " + "#" * round(40 * g / len(gold)) + f"  {' '.join(marks)}")
    lost = [(a["id"], junk_reason(a["text"], config)) for a in articles]
    lost = [(i, reason) for i, reason in lost if reason]
    print(f"\nthe heuristics drop {len(lost)} of {len(articles)} articles ({len(lost) / len(articles):.1%}) by their "
          "gold text" + "".join(f"\n  {i}: {reason[0]} ({reason[1]})" for i, reason in lost))
    outcomes = [(a["id"], filter_document(t, config)) for a, t in zip(articles, ours)]
    dropped = [(i, out) for i, out in outcomes if out["reason"]]
    by_heuristics = sum(out["reason"].startswith("junk_") for _, out in dropped)
    print(f"the stage's filters drop {len(dropped)} of our {len(articles)} texts of them, the heuristics "
          f"{by_heuristics} ({by_heuristics / len(articles):.1%})"
          + "".join(f"\n  {i}: {out['reason']} ({out['detail']})" for i, out in dropped))
    for kind, text in junk.items():
        out = filter_document(text, config)
        print(f"dry-run junk {kind}: {out['reason'] or 'KEPT'} ({out.get('detail', '')})")
