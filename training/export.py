"""Export a trained model for Hugging Face transformers (`config.json` + `model.safetensors`), and read one back.

    webtext export-hf --run-dir runs/x --out runs/x/hf
    model = load_hf("runs/x/hf")                              # any HF-format GPT-2 folder -> our GPT

    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained("runs/x/hf")      # offline: everything is in the folder

Takes the latest checkpoint under `R/train/checkpoints/` (the highest step). Our parameter names are
GPT2LMHeadModel's; the only change is that HF stores the four Linear weights of a block (attn.c_attn,
attn.c_proj, mlp.c_fc, mlp.c_proj) as Conv1D, i.e. transposed (in x out). `lm_head.weight` is not written:
it is tied to `transformer.wte.weight` and transformers re-ties it on load (tie_word_embeddings), as its own
save_pretrained does. Weights are float32. The tokenizer is GPT-2's (r50k_base), so any GPT-2 tokenizer
files fit; none are written here. config.json sets dropout to 0, as the model was trained.

`load_hf(folder)` is the reverse, for `webtext eval --hf DIR`: it reads such a folder, ours or a GPT-2
downloaded elsewhere (OpenAI's checkpoints name their weights without the `transformer.` prefix and carry
attention-mask buffers; both are accepted), and refuses a config.json describing anything our GPT is not
(another activation, untied embeddings, attention scaling variants), naming the key; `webtext finetune --from
DIR` reads its pretrained model with it too.

A fine-tuned model (training/finetune.py) is written as `GPT2DoubleHeadsModel`: the same body and tied LM
head over 50,260 tokens, and `multiple_choice_head` (a one-output linear layer on the hidden state at
`mc_token_ids`, the EXTRACT position) holding our head, with the tokenizer beside it (vocab.json, merges.txt,
rebuilt from the r50k_base ranks, and the three added tokens at ids 50257-50259). How to read `mc_logits`:

    classification, entailment (two labels)  input_ids (B, 1, T) -> mc_logits (B, 1): the logit of the second label
    multiple choice                          input_ids (B, K, T) -> mc_logits (B, K): one score per answer, softmax
    similarity (MRPC, STS-B)                 input_ids (B, 2, T), both orders -> mc_logits.sum(1): the logit (score)

For similarity the head's bias is halved on export, so the sum over the two orders equals our head on the
sum of the two states exactly. A head of more than one output (a custom task of K > 2 labels) has no
GPT2DoubleHeadsModel form: `save_double_heads` refuses it (ExportError) and the checkpoint stays the model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline import storage
from pipeline.runner import StageError
from training.model import GPT, GPTConfig
from training.session import latest_checkpoint, load_checkpoint

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_config(config: GPTConfig) -> dict:
    """transformers' GPT2Config for this model, as config.json."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "scale_attn_weights": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
    }


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT2LMHeadModel's names and layouts (Conv1D transposed), without the tied lm_head."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return out


def save_hf(model: GPT, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    with storage.atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(hf_state_dict(model), str(tmp), metadata={"format": "pt"})
    storage.write_bytes(out_dir / "config.json", (json.dumps(hf_config(model.config), indent=2) + "\n").encode())


# config.json values that must hold for the weights to mean what our GPT computes.
REQUIRED_HF_CONFIG = {
    "model_type": ("gpt2",),
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "layer_norm_epsilon": (1e-5,),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "reorder_and_upcast_attn": (False,),
    "tie_word_embeddings": (True,),
}
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older GPT-2 checkpoints, not weights


class HFFormatError(StageError):
    """A folder that is not a GPT-2 our model can load; the message names the file and key."""


def gpt_config_from_hf(config: dict, path: Path) -> GPTConfig:
    """Our GPTConfig for a transformers GPT-2 config.json, or HFFormatError naming what differs."""
    for key, allowed in REQUIRED_HF_CONFIG.items():
        value = config.get(key, allowed[0])
        if value not in allowed:
            raise HFFormatError(f"{path}: {key} = {value!r}, but only {' or '.join(map(repr, allowed))} is GPT-2 "
                                f"as training/model.py computes it")
    if config.get("n_inner") not in (None, 4 * config["n_embd"]):
        raise HFFormatError(f"{path}: n_inner = {config['n_inner']}, GPT-2's MLP is 4 x n_embd = {4 * config['n_embd']}")
    return GPTConfig(block_size=config["n_positions"], vocab_size=config["vocab_size"], n_layer=config["n_layer"],
                     n_head=config["n_head"], n_embd=config["n_embd"])


def load_hf(folder: str | Path) -> GPT:
    """A transformers GPT-2 folder (config.json + model.safetensors; local or on an object store) as our GPT,
    float32, in eval mode."""
    folder = storage.location(folder)
    paths = {name: folder / name for name in ("config.json", "model.safetensors")}
    for name, path in paths.items():
        if not path.is_file():
            raise HFFormatError(f"--hf {folder}: no {name}; expected a transformers GPT-2 folder "
                                f"(config.json + model.safetensors, as `webtext export-hf` writes)")
    config = gpt_config_from_hf(json.loads(paths["config.json"].read_text()), paths["config.json"])
    model = GPT(config)
    state = {}
    for name, tensor in load_file(str(storage.local_copy(paths["model.safetensors"]))).items():
        name = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"
        if name.endswith(HF_BUFFERS):
            continue
        state[name] = tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor
    head = state.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, state.get("transformer.wte.weight", head)):
        raise HFFormatError(f"{paths['model.safetensors']}: lm_head.weight differs from transformer.wte.weight; "
                            f"GPT-2 ties them")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise HFFormatError(f"{paths['model.safetensors']}: missing {missing[:5]} unexpected {unexpected[:5]} weights "
                            f"for a GPT-2 of {config}")
    return model.float().eval()


def export_hf(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the run's latest checkpoint as a transformers GPT-2 folder; return what was exported."""
    checkpoints = Path(run_dir) / "train" / "checkpoints"
    path = latest_checkpoint(checkpoints)
    if path is None:
        raise StageError(f"export-hf: no checkpoint under {checkpoints}; run `webtext train --run-dir {run_dir}` first")
    model, step = model_from_checkpoint(path)
    save_hf(model, out_dir)
    return {"checkpoint": str(path), "step": step, "out": str(Path(out_dir).resolve()), "params": model.num_params()}


def model_from_checkpoint(path: Path) -> tuple[GPT, int]:
    """The GPT saved in a training checkpoint (training/train.py's layout) and the step it was saved at."""
    state = load_checkpoint(path)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval(), state["step"]


class ExportError(ValueError):
    """A model that has no transformers form; the message says why."""


# ---------------------------------------------------------------- the tokenizer, for transformers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table of vocab.json and merges.txt (its encoder.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _merge_of(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens BPE joins last to make `token`: its merges replayed with ranks below its own."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], limit))
        if ranks.get(parts[best] + parts[best + 1], limit) >= limit:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


@functools.cache
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocab.json and merges.txt contents, rebuilt from the r50k_base ranks shipped in the package."""
    from importlib import resources

    from tiktoken.load import load_tiktoken_bpe

    from pipeline.tokenizer import ASSET, EOT_TOKEN

    with resources.as_file(ASSET) as asset:
        ranks = load_tiktoken_bpe(str(asset))
    chars = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    vocab["<|endoftext|>"] = EOT_TOKEN
    merges = [" ".join(map(text, _merge_of(ranks, token))) for token, _ in sorted(ranks.items(), key=lambda kv: kv[1])
              if len(token) > 1]
    return vocab, merges


def save_tokenizer(out_dir: str | Path, added: dict[str, int], max_length: int) -> None:
    """vocab.json, merges.txt (from the r50k_base ranks tiktoken uses) and the added tokens, for GPT2Tokenizer."""
    from pipeline.tokenizer import EOT_TOKEN

    vocab, merges = _vocab_and_merges()
    eot = "<|endoftext|>"
    out_dir = Path(out_dir)
    storage.write_bytes(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode())
    storage.write_bytes(out_dir / "merges.txt", ("#version: 0.2\n" + "\n".join(merges) + "\n").encode())
    special = {eot: EOT_TOKEN, **added}
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length, "add_prefix_space": False,
        "bos_token": eot, "eos_token": eot, "unk_token": eot, "additional_special_tokens": list(added),
        "added_tokens_decoder": {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                          "normalized": False, "single_word": False} for t, i in special.items()},
    }
    storage.write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    storage.write_json(out_dir / "special_tokens_map.json", {"bos_token": eot, "eos_token": eot, "unk_token": eot,
                                                              "additional_special_tokens": list(added)})
    storage.write_json(out_dir / "added_tokens.json", added)


# ---------------------------------------------------------------- a fine-tuned model: GPT2DoubleHeadsModel


def save_double_heads(model, task, out_dir: str | Path) -> dict:
    """Write a FinetuneModel (training/finetune.py) as a GPT2DoubleHeadsModel folder with its tokenizer."""
    from training.tasks import SPECIAL_TOKENS

    if model.head.out_features != 1:
        raise ExportError(f"the head of this {task.kind} task has {model.head.out_features} outputs (one per label); "
                          f"transformers' GPT2DoubleHeadsModel has a one-output head")
    bias = model.head.bias.detach() * (0.5 if task.kind == "similarity" else 1.0)  # summed over the two orders
    weights = hf_state_dict(model.gpt)
    weights["multiple_choice_head.summary.weight"] = model.head.weight.detach().to("cpu", torch.float32).contiguous()
    weights["multiple_choice_head.summary.bias"] = bias.to("cpu", torch.float32).contiguous()
    out_dir = Path(out_dir)
    with storage.atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt"})
    config = {
        **hf_config(model.gpt.config), "architectures": ["GPT2DoubleHeadsModel"], "num_labels": 1,
        "summary_type": "cls_index", "summary_use_proj": True, "summary_proj_to_labels": True,
        "summary_activation": None, "summary_first_dropout": model.dropout.p, "summary_last_dropout": 0.0,
        "webtext_task": {"task": task.name, "kind": task.kind, "labels": list(task.labels),
                         "special_tokens": SPECIAL_TOKENS},
    }
    storage.write_bytes(out_dir / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    save_tokenizer(out_dir, SPECIAL_TOKENS, model.gpt.config.block_size)
    return {"out": str(out_dir), "architecture": "GPT2DoubleHeadsModel", "vocab_size": model.gpt.config.vocab_size}
