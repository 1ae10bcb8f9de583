"""A character-level tokenizer for the scripted fake policy and the tests.

Real policies bring their own tokenizer; the search only needs `encode`, `decode` and the ids of
end-of-sequence, the step delimiter and the backspace token (see `search.types.Tokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_ALPHABET = "0123456789+-*/=?:#., abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"


class CharTokenizer:
    """One id per character. Ids 0, 1, 2 are padding, end-of-sequence and the backspace token."""

    pad_id = 0
    eos_id = 1
    bksp_id = 2

    def __init__(
        self,
        alphabet: str = DEFAULT_ALPHABET,
        delimiter: str = "\n",
        bksp_token: str = "<|bksp|>",
    ) -> None:
        if delimiter not in alphabet or len(delimiter) != 1:
            raise ValueError(
                f"step delimiter {delimiter!r} must be a single character of the alphabet"
            )
        self.bksp_token = bksp_token
        self._ids = {ch: i + 3 for i, ch in enumerate(dict.fromkeys(alphabet))}
        self._chars = {i: ch for ch, i in self._ids.items()}
        self._chars[self.bksp_id] = bksp_token
        self.delim_id = self._ids[delimiter]

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt is encoded as any text: no chat template."""
        return self.encode(text)

    @property
    def step_ends(self) -> int:
        """Its delimiter is always a token of its own."""
        return self.delim_id

    @property
    def vocab_size(self) -> int:
        return len(self._ids) + 3

    def encode(self, text: str) -> list[int]:
        """Characters to ids; a character outside the alphabet raises with its position."""
        try:
            return [self._ids[ch] for ch in text]
        except KeyError as err:
            pos = next(i for i, ch in enumerate(text) if ch not in self._ids)
            raise ValueError(
                f"character {err.args[0]!r} at position {pos} of {text[:40]!r} is not in the "
                "tokenizer's alphabet"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; backspaces render as the token string, padding and end-of-sequence drop."""
        return "".join(self._chars.get(i, "") for i in ids)
