"""Export a trained model for Hugging Face transformers: `config.json` + `model.safetensors`.

    webtext export-hf --run-dir runs/x --out runs/x/hf

    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained("runs/x/hf")      # offline: everything is in the folder

Takes the latest checkpoint under `R/train/checkpoints/` (the highest step). Our parameter names are
GPT2LMHeadModel's; the only change is that HF stores the four Linear weights of a block (attn.c_attn,
attn.c_proj, mlp.c_fc, mlp.c_proj) as Conv1D, i.e. transposed (in x out). `lm_head.weight` is not written:
it is tied to `transformer.wte.weight` and transformers re-ties it on load (tie_word_embeddings), as its own
save_pretrained does. Weights are float32. The tokenizer is GPT-2's (r50k_base), so any GPT-2 tokenizer
files fit; none are written here. config.json sets dropout to 0, as the model was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline import storage
from pipeline.runner import StageError
from training.model import GPT, GPTConfig
from training.train import latest_checkpoint, load_checkpoint

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


def export_hf(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the run's latest checkpoint as a transformers GPT-2 folder; return what was exported."""
    checkpoints = Path(run_dir) / "train" / "checkpoints"
    path = latest_checkpoint(checkpoints)
    if path is None:
        raise StageError(f"export-hf: no checkpoint under {checkpoints}; run `webtext train --run-dir {run_dir}` first")
    state = load_checkpoint(path)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    save_hf(model, out_dir)
    return {"checkpoint": str(path), "step": state["step"], "out": str(Path(out_dir).resolve()), "params": model.num_params()}
