"""`pipeline.loading`: a prompt that leaves the model too little room is refused before any
work, naming the problem, the lengths and the setting that asks for the room."""

import pytest

from pipeline.loading import PromptTooLong, check_prompts, context_length
from search.types import Problem
from tests.conftest import tiny_cfg


def test_a_prompt_without_room_for_the_new_tokens_is_refused(trained):
    run, _ = trained
    model = run / "bootstrap" / "model"
    limit = context_length(model)
    cfg = tiny_cfg(run)
    fits = Problem("p-short", "1+1=?\n", "2")
    tight = Problem("p-tight", "9" * (limit - 20) + "\n", "9")  # room for 19 more tokens
    check_prompts(cfg, model, [fits, tight], 19, "sampling.max_new_tokens")
    with pytest.raises(PromptTooLong, match=r"p-tight: its prompt is \d+ tokens .* too few for 20"):
        check_prompts(cfg, model, [fits, tight], 20, "sampling.max_new_tokens")
