"""Adding the backspace token to any causal LM (docs/design.md §4).

`add_backspace_token(model, tokenizer, token, init)` adds `token` as a special token, grows the
embeddings only when the tokenizer outgrew them (a checkpoint with spare rows keeps its size: never
shrink), and initialises the new row (input and, when untied, output) by a named strategy:

- `mean`: the mean of the existing rows (the default);
- `words`: the mean of the embeddings of the tokens of words such as "delete", "undo", "back";
- `description`: the mean over the tokens of a short description of what the token does;
- `subtokens`: the mean of the pieces the token string splits into as plain text.

A tokenizer that already has the token reuses its id and leaves the weights alone.

`untie_output(model)` gives a model whose output layer is its input embedding matrix (GPT-2, the
bootstrap's models) an output layer of its own, so the backspace's output row can be learned apart
from its input row (`train.untie`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

from workers.collate import LOSS_WEIGHTS

Init = Literal["mean", "words", "description", "subtokens"]
INITS: tuple[Init, ...] = ("mean", "words", "description", "subtokens")
WORDS = ["delete", "undo", "back", "erase", "remove", "backspace"]
DESCRIPTION = "delete the previous step because it was wrong, then write the correct step"


def add_backspace_token(
    model: Any, tokenizer: Any, token: str = "<|bksp|>", init: Init = "mean"
) -> int:
    """Make sure `token` exists in tokenizer and model; returns its id."""
    if init not in INITS:
        raise ValueError(f"embedding init {init!r} is not one of {INITS}")
    if token in tokenizer.get_vocab():
        return int(tokenizer.convert_tokens_to_ids(token))
    source = _source_ids(tokenizer, token, init)  # before the token exists: plain-text pieces
    tokenizer.add_special_tokens({"additional_special_tokens": [token]})
    new_id = int(tokenizer.convert_tokens_to_ids(token))
    emb = model.get_input_embeddings()
    old_rows = emb.weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    _init_row(model.get_input_embeddings().weight, new_id, source, min(old_rows, new_id))
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        _init_row(out.weight, new_id, source, min(old_rows, new_id))
    return new_id


def untie_output(model: Any) -> bool:
    """Give `model` an output layer of its own, initialised as a copy of the input embeddings, and
    mark its config untied (`tie_word_embeddings=False`), so training moves the two apart and a
    saved checkpoint keeps both (it loads with `AutoModelForCausalLM` as any untied model).
    Returns whether it was tied; a model already untied, or without an output layer, is left as
    it is."""
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or out.weight.data_ptr() != emb.weight.data_ptr():
        return False
    out.weight = torch.nn.Parameter(emb.weight.detach().clone())
    model.config.get_text_config().tie_word_embeddings = False
    model.config.tie_word_embeddings = False
    return True


def _source_ids(tokenizer: Any, token: str, init: Init) -> list[int] | None:
    """Token ids whose embeddings are averaged (None: all existing rows)."""
    if init == "mean":
        return None
    texts = {"words": WORDS, "description": [DESCRIPTION], "subtokens": [token]}[init]
    ids = [i for text in texts for i in tokenizer.encode(text, add_special_tokens=False)]
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = [i for i in ids if i != unk]
    return ids or None  # a tokenizer that cannot spell them falls back to the mean


@torch.no_grad()
def _init_row(weight: torch.Tensor, row: int, source: list[int] | None, n_existing: int) -> None:
    rows = weight[:n_existing] if source is None else weight[source]
    weight[row] = rows.float().mean(0).to(weight.dtype)


def fit_token_rows(
    model: Any, token_id: int, batches: Iterable[dict[str, torch.Tensor]], lr: float
) -> list[float]:
    """Train only `token_id`'s embedding rows (input and output) on `batches`; the rest of the
    model stays exactly as it was. Returns the loss of each batch.

    A token added to a trained model starts far from what its targets need (about 10 nats on the
    backspace and on the token after it, against 0.02 elsewhere, on arith-tiny), so full
    fine-tuning first spends its largest gradients moving the whole network towards an
    uninformed row. Fitting the row first is a linear probe of the frozen model's own features:
    its output row learns when the model's hidden state calls for a backspace.
    """
    out = model.get_output_embeddings()
    embeddings = (model.get_input_embeddings().weight, None if out is None else out.weight)
    rows = {id(p): p for p in embeddings if p is not None}  # tied: one parameter
    params = list(rows.values())
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(any(p is q for q in params))
    mask = torch.zeros(params[0].shape[0], 1, dtype=params[0].dtype, device=params[0].device)
    mask[token_id] = 1
    hooks = [p.register_hook(lambda g: g * mask) for p in params]
    optim = torch.optim.Adam(params, lr=lr)
    losses = []
    try:
        model.train()
        for batch in batches:
            batch = {k: v.to(params[0].device) for k, v in batch.items() if k != LOSS_WEIGHTS}
            loss = model(**batch).loss
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
    finally:
        for h in hooks:
            h.remove()
        for p, grad in frozen:
            p.requires_grad_(grad)
    return losses
