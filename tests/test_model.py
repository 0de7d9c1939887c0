"""GPT-2 exactness: parameter counts, logits against transformers' GPT2LMHeadModel, export and reload."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from pipeline.cli import main as cli_main
from training.export import hf_state_dict
from training.model import CONFIGS, GPT, GPTConfig
from training.train import LocalSession

PAPER_SIZES = {"gpt2": (12, 768), "gpt2-medium": (24, 1024), "gpt2-large": (36, 1280), "gpt2-xl": (48, 1600)}
SMALL = GPTConfig(block_size=32, vocab_size=300, n_layer=2, n_head=4, n_embd=64)

pytestmark = pytest.mark.usefixtures("one_thread")


def hf_model(config: GPTConfig) -> GPT2LMHeadModel:
    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head,
    )
    return GPT2LMHeadModel(hf_config)


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_paper_configs_have_gpt2_parameter_counts(name):
    config = CONFIGS[name]
    assert (config.n_layer, config.n_embd, config.block_size, config.vocab_size) == (*PAPER_SIZES[name], 1024, 50257)
    with torch.device("meta"):  # shapes only: counting the 1.5B model allocates nothing
        ours, theirs = GPT(config), hf_model(config)
    assert ours.num_params() == sum(p.numel() for p in theirs.parameters())
    if name == "gpt2":
        assert ours.num_params() == 124_439_808


def test_embeddings_are_tied_and_residual_projections_scaled():
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=5000, n_layer=8, n_head=4, n_embd=256)
    model = GPT(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    c_proj = torch.cat([torch.cat([b.attn.c_proj.weight.flatten(), b.mlp.c_proj.weight.flatten()]) for b in model.transformer.h])
    c_fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * config.n_layer), rel=0.02)
    assert c_fc.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)


def test_weight_decay_only_on_matrices():
    model = GPT(SMALL)
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # wte (= lm_head), wpe, and 4 matrices per block; every parameter in exactly one group
    assert len(decay["params"]) == 2 + 4 * SMALL.n_layer
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params()


def test_logits_equal_transformers_gpt2_with_copied_weights():
    torch.manual_seed(1)
    ours = GPT(SMALL).eval()
    theirs = hf_model(SMALL).eval()
    missing, unexpected = theirs.load_state_dict(hf_state_dict(ours), strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected  # lm_head is tied to wte
    idx = torch.randint(0, SMALL.vocab_size, (3, SMALL.block_size))
    with torch.no_grad():
        logits, _ = ours(idx)
        expected = theirs(idx).logits
    assert logits.shape == expected.shape == (3, SMALL.block_size, SMALL.vocab_size)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_loss_is_next_token_cross_entropy():
    torch.manual_seed(2)
    model = GPT(SMALL).eval()
    idx = torch.randint(0, SMALL.vocab_size, (2, 9))
    logits, loss = model(idx[:, :-1], idx[:, 1:])
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, SMALL.vocab_size), idx[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model(torch.zeros(1, SMALL.block_size + 1, dtype=torch.long))


def test_export_hf_reloads_offline_with_equal_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    model = GPT(SMALL).eval()
    checkpoints = tmp_path / "run" / "train" / "checkpoints"
    session = LocalSession(checkpoints, keep=1)
    session.report({}, {"model": model.state_dict(), "model_config": model.config.to_dict(), "step": 7})
    out = tmp_path / "hf"
    assert cli_main(["export-hf", "--run-dir", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    reloaded = GPT2LMHeadModel.from_pretrained(out, local_files_only=True).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, SMALL.vocab_size, (2, SMALL.block_size))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], reloaded(idx).logits, atol=1e-5, rtol=1e-5)


def test_export_without_checkpoint_names_what_to_do(tmp_path, capsys):
    assert cli_main(["export-hf", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 1
    assert "no checkpoint under" in capsys.readouterr().err


def test_generate_is_seeded_and_extends_context():
    model = GPT(SMALL).eval()
    start = torch.zeros((1, 1), dtype=torch.long)
    a = model.generate(start, 40, generator=torch.Generator().manual_seed(5))
    b = model.generate(start, 40, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1, 41) and torch.equal(a, b)  # 41 > block_size: the context window slides
    assert int(a.max()) < SMALL.vocab_size
