"""GPT-2, exactly as the paper and OpenAI's released weights define it, in one readable file (after nanoGPT).

    from training.model import GPT, CONFIGS
    model = GPT(CONFIGS["gpt2"])            # 124,439,808 parameters, the same count as GPT2LMHeadModel
    logits, loss = model(idx, targets)      # idx, targets: (B, T) int64

What makes it GPT-2 (each point is checked against `transformers.GPT2LMHeadModel` in tests/test_model.py):
- learned token (wte) and position (wpe) embeddings, added;
- pre-LayerNorm blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x)), and a final LayerNorm (ln_f) after the last
  block; LayerNorm eps 1e-5; biases on every Linear and LayerNorm;
- causal self-attention through `F.scaled_dot_product_attention(is_causal=True)` (flash attention on GPUs);
- MLP width 4 x d_model with GELU in its tanh form (GPT-2's `gelu_new`);
- weights N(0, 0.02), biases 0, and the two residual projections of every block (attn.c_proj, mlp.c_proj)
  N(0, 0.02 / sqrt(2 x n_layer)): the paper's 1/sqrt(N) scaling with N = 2 residual layers per block;
- the output projection is the token embedding (tied), so the vocabulary matrix is counted once.

Parameter names follow GPT2LMHeadModel's (`transformer.h.0.attn.c_attn.weight`, ...), so export is a
transpose of the four Linear weights per block (HF stores them as Conv1D, in x out), see training/export.py.
The vocabulary is GPT-2's 50,257 (not padded to 50,304 as nanoGPT does for speed): the counts and the export
stay exact. There is no dropout: GPT-2's released config sets 0.1, but for pretraining on a corpus seen about once
nanoGPT and llm.c use 0, and dropout changes neither the parameters nor the function in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.config import MODEL_DIMS


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # context length (number of learned positions)
    vocab_size: int = 50257  # GPT-2 BPE: 50,000 merges + 256 bytes + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768

    def to_dict(self) -> dict:
        return asdict(self)


# The four sizes of the GPT-2 paper (Table 2; their 117M/345M/762M/1542M were later recounted as
# 124M/355M/774M/1558M), and a tiny one for CPU dry runs and tests; the table lives with train.model's choices.
CONFIGS = {name: GPTConfig(**dims) for name, dims in MODEL_DIMS.items()}


def model_config(name: str) -> GPTConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; train.model must be one of: {', '.join(CONFIGS)}")
    return CONFIGS[name]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix embeds and un-embeds
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            if module is not self.lm_head:  # lm_head is wte's matrix, initialised as the embedding below
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Every parameter counted once (the tied matrix once), as GPT2LMHeadModel counts them."""
        return sum(p.numel() for p in self.parameters())

    def hidden_states(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final LayerNorm's output (B, T, n_embd), what lm_head turns into logits.

        By default token t sits at position t and attends to tokens 0..t. `positions` (B, T) and a boolean
        `mask` (B, 1, T, T), True where a query may attend a key, replace both: evaluation packs several
        continuations of one context into a row this way (training/evaluation/scoring.py).
        """
        T = idx.shape[1]
        if positions is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence length {T} exceeds the model's context of {self.config.block_size}")
            positions = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(positions)
        for block in self.transformer.h:
            x = block(x, mask)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, vocab) and, with targets, the mean cross-entropy over all B x T positions."""
        logits = self.lm_head(self.hidden_states(idx))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on matrices (>= 2-D: Linear weights, embeddings), none on biases and LayerNorms."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T.

        N excludes the position embedding (a lookup, no matmul) but includes wte, whose matrix is also the
        output projection; the second term is attention's QK^T and AV at sequence length T.
        """
        c = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * seq_len

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = 50,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `max_new_tokens` continuations of idx (B, T); the context is cut to the last block_size."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            logits = logits[:, -1, :].float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return idx
