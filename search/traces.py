"""Rows of the three tables (`traces`, `steps`, `pairs`) from one problem's search
(docs/design.md §6).

Plain dicts with the columns every shard has; the pipeline adds provenance (round, model id,
config hash, seed, schema version) and writes them with an explicit schema (pipeline/shards.py).

- traces, kind `correction`: prompt, good steps, what the backspaces erase, backspaces, the model's
  own correct continuation from the good prefix (`fix`). Where the backspaces sit is the
  placement; in every one what stays visible is exactly the good steps and the fix:
    at_error      erase the wrong step (the located first error).
    at_detection  erase the wrong step and the model's own continuation of it up to and including
                  the step where the failure becomes visible (`Judge.detection_step`; a task
                  that cannot tell, such as arithmetic, sees it at the end of the solution).
    at_token      erase the wrong step up to and including its first token that differs from
                  the fix at the same position (see `_first_wrong_token`).
  Kind `clean`: a correct solution without backspaces.
  Kind `self_correction`: a rollout that used backspaces and still ended right.
  Every trace also says what search/metrics.py reads in it as written: `steps_written` (finished
  steps, erased ones included), `erase_events` (backspace runs) and `precise_erases` (runs that
  erased a step the exact checker calls wrong; None without a checker).
- steps: one row per probed prefix: its last step, mc, rollouts, and the exact label.
- pairs: chosen = wrong step + backspaces + correction, rejected = wrong step + the model's own
  continuation of the error (with end-of-sequence when that rollout ended, as the correction
  has it; search/pairs.py turns a row into training sequences).
"""

from __future__ import annotations

from typing import Any, Literal

from search.backspace import (
    BackspaceError,
    Segment,
    Serialized,
    Trace,
    Unit,
    apply_backspaces,
    serialize,
    serialize_stream,
)
from search.metrics import StreamReport, analyze
from search.tree import FailingBranch, Judge, Node, SearchResult, Steps, Tree, flatten

Row = dict[str, Any]
Placement = Literal["at_error", "at_detection", "at_token"]
PLACEMENTS: tuple[Placement, ...] = ("at_error", "at_detection", "at_token")


def table_rows(
    result: SearchResult, max_corrections: int = 1, placement: Placement = "at_error"
) -> dict[str, list[Row]]:
    """The `traces`, `steps` and `pairs` rows of one finished search (backspace unit: the
    judge's), with at most `max_corrections` correction traces per failing branch, their
    backspaces placed by `placement` (module docstring; pairs always erase the wrong step)."""
    if placement not in PLACEMENTS:
        raise BackspaceError(f"trace placement {placement!r} is not one of {PLACEMENTS}")
    tree = result.tree
    unit = tree.judge.unit
    traces: list[Row] = []
    pairs: list[Row] = []
    for branch in result.branches:
        parent = tree.nodes[branch.parent]
        for fix in _corrections(tree, parent)[:max_corrections]:
            traces.append(_correction_row(tree, branch, parent, fix, unit, placement))
            pairs.append(_pair_row(tree, branch, fix, unit))
    traces += _clean_rows(tree, unit)
    traces += _self_correction_rows(tree, unit)
    steps = [_step_row(tree, node) for node in tree.nodes.values() if node.steps]
    return {"traces": traces, "steps": steps, "pairs": pairs}


def _corrections(tree: Tree, node: Node) -> list[tuple[int, ...]]:
    """Distinct visible continuations of the node's correct rollouts, shortest first, each
    ending with end-of-sequence (a trained model must learn to stop after the answer)."""
    seen: dict[tuple[int, ...], None] = {}
    for rollout, ok in zip(node.rollouts, node.correct, strict=True):
        steps = tree.rollout_steps(node, rollout) if ok else None
        if steps:
            seen.setdefault(flatten(steps) + (tree.judge.tokenizer.eos_id,), None)
    return sorted(seen, key=len)


def _texts(tree: Tree, ser: Serialized) -> tuple[str, str]:
    tok = tree.judge.tokenizer
    prompt_len = len(tree.judge.prompt)
    visible = apply_backspaces(
        ser.input_ids, prompt_len, tree.judge.unit, tok.bksp_id, tok.step_ends
    )
    return tok.decode(ser.input_ids[prompt_len:]), tok.decode(visible[prompt_len:])


def _trace_row(tree: Tree, kind: str, ser: Serialized, **extra: Any) -> Row:
    raw, visible = _texts(tree, ser)
    stream = _stream_report(tree.judge, ser)
    return {
        "kind": kind,
        "input_ids": ser.input_ids,
        "loss_mask": ser.loss_mask,
        "erase_spans": [list(s) for s in ser.erase_spans],
        "n_backspaces": ser.n_backspaces,
        "prompt_len": len(tree.judge.prompt),
        "prompt_text": tree.judge.tokenizer.decode(tree.judge.prompt),  # as the model read it
        "raw_text": raw,
        "visible_text": visible,
        "correct": True,
        "parent_mc": None,
        "parent_n": None,
        "error_mc": None,
        "error_n": None,
        "mc_error_step": None,
        "exact_error_step": None,
        "steps_written": stream.steps_written,
        "erase_events": stream.erase_events,
        "precise_erases": stream.precise_erases,
    } | extra


def _stream_report(judge: Judge, ser: Serialized) -> StreamReport:
    """What search/metrics.py reads in the trace as written (every trace ends with
    end-of-sequence): finished steps, backspace runs, and the runs that erased a wrong step."""
    generated = ser.input_ids[len(judge.prompt) :]
    if generated and generated[-1] == judge.tokenizer.eos_id:
        generated = generated[:-1]
    return analyze(judge, generated, finished=True)


def _exact_error(tree: Tree, branch: FailingBranch) -> int | None:
    """The exact checker's first error on the good prefix plus the wrong step (None: no checker
    or it finds none there, i.e. the MC label was wrong)."""
    return tree.judge.first_error([*branch.parent, branch.wrong_step])


def _correction_row(
    tree: Tree,
    branch: FailingBranch,
    parent: Node,
    fix: tuple[int, ...],
    unit: Unit,
    placement: Placement,
) -> Row:
    segments = []
    if branch.parent:
        segments.append(Segment("keep", flatten(branch.parent)))
    erased = _erased(tree.judge, branch, fix, placement)
    segments += [Segment("erase", erased), Segment("keep", fix)]
    tok = tree.judge.tokenizer
    ser = serialize(Trace(tree.judge.prompt, tuple(segments)), unit, tok.bksp_id, tok.step_ends)
    return _trace_row(
        tree,
        "correction",
        ser,
        parent_mc=parent.mc,
        parent_n=parent.n_rollouts,
        error_mc=branch.error_mc,
        error_n=branch.error_n,
        mc_error_step=len(branch.parent),
        exact_error_step=_exact_error(tree, branch),
    )


def _erased(
    judge: Judge, branch: FailingBranch, fix: tuple[int, ...], placement: Placement
) -> tuple[int, ...]:
    """The tokens a correction's backspaces erase, all written right after the good steps."""
    wrong = branch.wrong_step
    if placement == "at_token":
        return wrong[: _first_wrong_token(wrong, fix) + 1]
    if placement == "at_detection":
        return wrong + flatten(_through_detection(judge, branch))
    return wrong


def _first_wrong_token(wrong: tuple[int, ...], fix: tuple[int, ...]) -> int:
    """Index of the first token of the wrong step that differs from the fix (the model's own
    correct continuation from the same prefix) at the same position; a fix that ends first
    differs there. The last index when none differs (the wrong step is a prefix of the fix):
    the whole wrong step is erased, as at the error.

    The fix is one right continuation, not every one: where a task has several right next
    steps (countdown), a token that differs from this fix may still begin another right step,
    so the backspace sits at or before the exact checker's first wrong token, never after it.
    """
    for i, token in enumerate(wrong):
        if i >= len(fix) or fix[i] != token:
            return i
    return len(wrong) - 1


def _through_detection(judge: Judge, branch: FailingBranch) -> Steps:
    """The visible steps of the wrong continuation up to and including the one where the task
    sees the failure (`Judge.detection_step` over good steps, wrong step and continuation);
    all there are (an unfinished rollout's too) when it sees none."""
    before = (*branch.parent, branch.wrong_step)
    steps = judge.visible_steps(flatten(before) + branch.wrong_continuation)
    if steps is None or tuple(steps[: len(before)]) != before:
        return ()  # the rollout's own backspaces reached into its wrong step: nothing follows it
    rest = tuple(steps[len(before) :])
    seen = judge.detection_step([*before, *rest])
    if seen is None:
        return rest
    return rest[: max(seen - len(branch.parent), 0)]


def _clean_rows(tree: Tree, unit: Unit) -> list[Row]:
    tok = tree.judge.tokenizer
    rows = []
    for fix in _corrections(tree, tree.root):
        if tok.bksp_id in fix:
            continue
        ser = serialize(
            Trace(tree.judge.prompt, (Segment("keep", fix),)), unit, tok.bksp_id, tok.step_ends
        )
        rows.append(_trace_row(tree, "clean", ser))
    return rows


def _self_correction_rows(tree: Tree, unit: Unit) -> list[Row]:
    tok = tree.judge.tokenizer
    rows, seen = [], set()
    for node in tree.nodes.values():
        for rollout, ok in zip(node.rollouts, node.correct, strict=True):
            generated = flatten(node.steps) + rollout.tokens
            if not ok or tok.bksp_id not in rollout.tokens or generated in seen:
                continue
            seen.add(generated)
            ser = serialize_stream(
                tree.judge.prompt, generated + (tok.eos_id,), unit, tok.bksp_id, tok.step_ends
            )
            rows.append(_trace_row(tree, "self_correction", ser))
    return rows


def _step_row(tree: Tree, node: Node) -> Row:
    judge = tree.judge
    label = None
    if judge.task.has_step_checker:
        label = judge.first_error(node.steps) is None
    return {
        "prefix_ids": list(judge.prompt + flatten(node.steps[:-1])),
        "step_ids": list(node.steps[-1]),
        "step_index": len(node.steps) - 1,
        "step_text": judge.texts(node.steps[-1:])[0],
        "mc": node.mc,
        "n_rollouts": node.n_rollouts,
        "n_correct": sum(node.correct),
        "terminal": node.terminal,
        "exact_label": label,
    }


def _pair_row(tree: Tree, branch: FailingBranch, fix: tuple[int, ...], unit: Unit) -> Row:
    tok = tree.judge.tokenizer
    prompt = tree.judge.prompt + flatten(branch.parent)
    erase = serialize(
        Trace(prompt, (Segment("erase", branch.wrong_step),)), unit, tok.bksp_id, tok.step_ends
    )
    chosen = erase.input_ids[len(prompt) :] + list(fix)
    rejected = list(branch.wrong_step + branch.wrong_continuation)
    if branch.wrong_finished:  # the model's own continuation ended here, as the fix does
        rejected.append(tok.eos_id)
    return {
        "prompt_ids": list(prompt),
        "chosen_ids": chosen,
        "rejected_ids": rejected,
        "prompt_text": tok.decode(prompt),
        "chosen_text": tok.decode(chosen),
        "rejected_text": tok.decode(rejected),
    }
