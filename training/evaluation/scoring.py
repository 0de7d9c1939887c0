"""Log-likelihoods of continuations in batches: what one eval worker computes, on CPU or GPU.

    rows = pack_rows(requests, block_size=1024)            # evaluation.tasks.Request -> rows
    batches = make_batches([len(r.tokens) for r in rows], batch_tokens=16384)
    scores = score_rows(model, [rows[i] for i in batches[0]], device)   # per row, per continuation

A row is one context followed by every continuation scored after it (a HellaSwag item is one row of
C + 4 endings), so the context runs through the model once, not once per continuation. Each
continuation's tokens take the positions they would have right after the context, and a boolean attention
mask lets a token see the context and the earlier tokens of its own continuation only, so every
continuation's log-probabilities are those of the plain sequence C + X (to float rounding; the parity test
checks them against transformers' GPT2LMHeadModel run once per pair). The last token of a continuation is
only predicted, never fed in. Logits are computed only where a continuation token is predicted, not over
the whole row (for short continuations the vocabulary projection is most of a plain loop's cost), and
LOGIT_CHUNK positions at a time, so a batch of perplexity windows never holds all its logits at once.

A request whose context plus a continuation exceeds the model's context is cut from the left, for each
continuation on its own (lm-evaluation-harness's rule: the last block_size + 1 tokens of C + X), which
splits it into one row per continuation.

Batches are cut by the driver from rows sorted longest first (ties in request order), as many rows as
fit `batch_tokens` = rows x longest row; workers only compute them, so the scores do not depend on the
number of workers, and a batch's rows do not see each other (padding comes after every real token, and
the causal mask keeps real tokens from it). A different batch_tokens changes only float rounding
(the log-likelihoods agree to ~1e-6; tests/test_eval.py checks that no metric changes).

On CUDA the model runs under bf16 autocast (log-softmax in float32); on CPU in float32. Sums of
log-probabilities are accumulated in float64.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from training.evaluation.tasks import ContinuationScore, Request

LOGIT_CHUNK = 1024  # scored positions projected onto the vocabulary at once: 1024 x 50,257 floats = 206 MB


@dataclass(frozen=True)
class Row:
    """One packed model input: a context and some of its request's continuations after it."""

    request: int  # index of the request in the list given to pack_rows
    continuations: tuple[int, ...]  # which of the request's continuations this row scores
    tokens: tuple[int, ...]  # context, then each continuation but its last token
    positions: tuple[int, ...]
    branch: tuple[int, ...]  # -1 for context tokens, k for tokens of the row's k-th continuation
    scored: tuple[tuple[int, ...], ...]  # per continuation: the row index predicting each of its tokens
    targets: tuple[tuple[int, ...], ...]


def _row(request: int, which: tuple[int, ...], context: tuple[int, ...], conts: list[tuple[int, ...]]) -> Row:
    tokens, positions, branch = list(context), list(range(len(context))), [-1] * len(context)
    scored, c = [], len(context)
    for k, cont in enumerate(conts):
        start = len(tokens)
        tokens += cont[:-1]
        positions += range(c, c + len(cont) - 1)
        branch += [k] * (len(cont) - 1)
        scored.append((c - 1, *range(start, start + len(cont) - 1)))
    return Row(request, which, tuple(tokens), tuple(positions), tuple(branch), tuple(scored), tuple(conts))


def pack_rows(requests: list[Request], block_size: int) -> list[Row]:
    """The rows that score every continuation of every request once, in request order."""
    rows = []
    for r, request in enumerate(requests):
        if not request.context or any(not c for c in request.continuations):
            raise ValueError(f"request {r}: an empty context or continuation cannot be scored")
        if all(len(request.context) + len(c) - 1 <= block_size for c in request.continuations):
            rows.append(_row(r, tuple(range(len(request.continuations))), request.context,
                             list(request.continuations)))
            continue
        for k, cont in enumerate(request.continuations):
            if len(cont) > block_size:
                raise ValueError(f"request {r}: a continuation of {len(cont)} tokens exceeds the model's context "
                                 f"of {block_size}")
            whole = (request.context + cont)[-(block_size + 1):]
            rows.append(_row(r, (k,), whole[: len(whole) - len(cont)], [cont]))
    return rows


def make_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Row indices per batch: longest rows first, each batch at most batch_tokens = rows x its longest row."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def autocast_for(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.no_grad()
def score_rows(model, rows: list[Row], device: torch.device) -> list[list[ContinuationScore]]:
    """Per row, per continuation: summed log-probability, whether greedy decoding gives it, its tokens."""
    B, T = len(rows), max(len(r.tokens) for r in rows)
    idx = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    branch = torch.full((B, T), -2, dtype=torch.long)  # padding: its own group, after every real token
    for b, row in enumerate(rows):
        n = len(row.tokens)
        idx[b, :n], pos[b, :n], branch[b, :n] = (torch.tensor(x) for x in (row.tokens, row.positions, row.branch))
    mask = None
    if any(len(r.continuations) > 1 for r in rows):
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        same = (branch[:, None, :] == branch[:, :, None]) | (branch[:, None, :] == -1)
        mask = (causal & same).unsqueeze(1).to(device)
    where_b, where_t, targets = [], [], []
    for b, row in enumerate(rows):
        for scored, target in zip(row.scored, row.targets):
            where_b += [b] * len(scored)
            where_t += scored
            targets += target
    targets_t = torch.tensor(targets, device=device)
    token_logprobs, greedy = [], []
    with autocast_for(device):
        hidden = model.hidden_states(idx.to(device), pos.to(device), mask)
        scored = hidden[torch.tensor(where_b, device=device), torch.tensor(where_t, device=device)]
        for lo in range(0, len(targets), LOGIT_CHUNK):
            logits = model.lm_head(scored[lo : lo + LOGIT_CHUNK]).float()
            target = targets_t[lo : lo + LOGIT_CHUNK]
            # log p(target) = its logit - logsumexp(logits): the other tokens' log-softmax is never written
            token_logprobs.append(logits.gather(1, target[:, None])[:, 0] - torch.logsumexp(logits, dim=-1))
            greedy.append(logits.argmax(dim=-1) == target)
    token_logprobs, greedy = torch.cat(token_logprobs).double().cpu(), torch.cat(greedy).cpu()
    out: list[list[ContinuationScore]] = [[] for _ in rows]
    start = 0
    for b, row in enumerate(rows):
        for target in row.targets:
            end = start + len(target)
            out[b].append(ContinuationScore(float(token_logprobs[start:end].sum()), bool(greedy[start:end].all()),
                                            len(target)))
            start = end
    return out


def scores_by_request(requests: list[Request], rows: list[Row],
                      row_scores: list[list[ContinuationScore]]) -> list[list[ContinuationScore]]:
    """Row results back in request order: per request, one score per continuation."""
    out: list[list[ContinuationScore | None]] = [[None] * len(r.continuations) for r in requests]
    for row, scores in zip(rows, row_scores):
        for k, score in zip(row.continuations, scores):
            out[row.request][k] = score
    return out


def score_requests(model, requests: list[Request], batch_tokens: int, device: torch.device) -> list[list[ContinuationScore]]:
    """Every request scored in this process (no Ray): what training's evaluations and the tests use."""
    rows = pack_rows(requests, model.config.block_size)
    row_scores: list = [None] * len(rows)
    for batch in make_batches([len(r.tokens) for r in rows], batch_tokens):
        for i, scores in zip(batch, score_rows(model, [rows[i] for i in batch], device)):
            row_scores[i] = scores
    return scores_by_request(requests, rows, row_scores)
