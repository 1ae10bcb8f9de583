"""A reference `Engine` on the CPU: one transformers forward per token, no cache, no batching.

It decodes the way vLLM's `LLM.generate` is asked to (per request: `n` samples, sample i seeded
with `seed + i`, stop after a stop token, bans, raw log-probs), so `SegmentPolicy`'s logic is
tested on every machine; the contract suite runs the same tests on vLLM where it imports.
"""

from collections.abc import Sequence

import torch

from workers.segments import Piece, Request


class ReferenceEngine:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = 0

    @torch.no_grad()
    def generate(self, requests: Sequence[Request]) -> list[list[Piece]]:
        self.calls += 1
        return [[self._one(r, r.seed + i) for i in range(r.n)] for r in requests]

    def _one(self, r: Request, seed: int) -> Piece:
        gen = torch.Generator().manual_seed(seed % 2**63)
        ids, tokens, logps = list(r.prompt), [], []
        vocab = self.model.get_output_embeddings().weight.shape[0]
        for _ in range(r.max_tokens):
            logits = self.model(torch.tensor([ids])).logits[0, -1, :vocab].float()
            raw = logits.log_softmax(-1)
            logits[[t for t in r.ban_ids if t < vocab]] = float("-inf")
            if r.temperature <= 0:
                tok = int(logits.argmax())
            else:
                tok = int(torch.multinomial((logits / r.temperature).softmax(-1), 1, generator=gen))
            ids.append(tok)
            tokens.append(tok)
            logps.append(float(raw[tok]))
            if tok in r.stop_ids:
                break
        return Piece(tuple(tokens), tuple(logps))
