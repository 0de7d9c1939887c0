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
(another activation, untied embeddings, attention scaling variants), naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
