"""Adding the backspace token: resize only when needed, never shrink, named initialisations."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from pipeline.stages.bootstrap import build_tokenizer
from tests.models import ALPHABET, tiny_checkpoint
from workers.hf import load_checkpoint
from workers.tokens import WORDS, add_backspace_token


@pytest.fixture(params=["gpt2-tied", "llama-untied"])
def model_tok(request, tmp_path):
    if request.param == "gpt2-tied":
        return load_checkpoint(tiny_checkpoint(tmp_path / "m", "gpt2"), "cpu")
    tok = build_tokenizer([ALPHABET + "delteunobkrmvspc"])
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        tie_word_embeddings=False,
    )
    return AutoModelForCausalLM.from_config(cfg), tok


def tied(model):
    return (
        model.get_output_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )


def test_mean_init_grows_by_one_row(model_tok):
    model, tok = model_tok
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    new = add_backspace_token(model, tok)
    assert new == len(tok) - 1 == old_in.shape[0]
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == old_in.shape[0] + 1
    assert torch.allclose(emb[new], old_in.mean(0), atol=1e-6)
    assert torch.equal(emb[:new], old_in)  # existing rows untouched
    if not tied(model):
        assert torch.allclose(model.get_output_embeddings().weight[new], old_out.mean(0), atol=1e-6)
    assert tok.decode([new]) == "<|bksp|>"
    assert tok.encode("1<|bksp|>2", add_special_tokens=False)[1] == new


def test_spare_rows_are_used_not_shrunk(model_tok):
    model, tok = model_tok
    model.resize_token_embeddings(len(tok) + 8, mean_resizing=False)
    new = add_backspace_token(model, tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) + 7
    assert new == len(tok) - 1


def test_existing_token_is_reused_and_weights_left_alone(model_tok):
    model, tok = model_tok
    first = add_backspace_token(model, tok)
    before = model.get_input_embeddings().weight.detach().clone()
    assert add_backspace_token(model, tok, init="words") == first
    assert torch.equal(model.get_input_embeddings().weight, before)


@pytest.mark.parametrize("init", ["words", "description", "subtokens"])
def test_named_inits_average_their_source_tokens(model_tok, init):
    model, tok = model_tok
    old = model.get_input_embeddings().weight.detach().clone()
    texts = {"words": WORDS, "description": None, "subtokens": ["<|bksp|>"]}[init]
    ids = [
        i
        for t in texts or []
        for i in tok.encode(t, add_special_tokens=False)
        if i != tok.unk_token_id
    ]  # the pieces, spelled before the token exists
    new = add_backspace_token(model, tok, init=init)
    row = model.get_input_embeddings().weight[new]
    assert not torch.allclose(row, old.mean(0), atol=1e-4)  # not the mean fallback
    if ids:
        assert torch.allclose(row, old[ids].mean(0), atol=1e-6)


def test_unknown_init_is_refused(model_tok):
    model, tok = model_tok
    with pytest.raises(ValueError, match="not one of"):
        add_backspace_token(model, tok, init="random")


def test_fitting_the_token_rows_moves_those_rows_only(model_tok):
    from workers.collate import BacktrackCollator
    from workers.tokens import fit_token_rows

    model, tok = model_tok
    bksp = add_backspace_token(model, tok)
    delim = tok.convert_tokens_to_ids("\n")
    prompt = tok.encode("12+34=?\n")
    ids = prompt + tok.encode("46\n") + [bksp] + tok.encode("46\n") + [tok.eos_token_id]
    collate = BacktrackCollator("erase", "step", bksp, delim, 0)
    batch = collate([{"input_ids": ids, "loss_mask": [1] * len(ids), "prompt_len": len(prompt)}])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def p_bksp():  # probability of the backspace where the trace has it
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            logits = model(**inputs).logits[0, ids.index(bksp) - 1]
        return float(logits.softmax(-1)[bksp])

    start = p_bksp()
    losses = fit_token_rows(model, bksp, [batch] * 30, lr=3e-2)
    assert losses[-1] < losses[0]
    assert p_bksp() > 5 * start
    for name, p in model.named_parameters():
        changed = (p.detach() != before[name]).any(dim=-1) if p.dim() == 2 else p.ne(before[name])
        if name.endswith(("wte.weight", "embed_tokens.weight", "lm_head.weight")):
            assert changed.nonzero().flatten().tolist() == [bksp], name
        else:
            assert not changed.any(), name
    assert all(p.requires_grad for p in model.parameters())
