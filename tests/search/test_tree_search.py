"""The search state machines, driven by the scripted policy with known mistakes."""

import pytest

from search.driver import Search, run_batched, run_sequential
from search.fake import ScriptedPolicy
from search.mcts import MctsParams, mcts
from search.omegaprm import OmegaParams, omegaprm
from search.tasks.countdown import CountdownTask
from search.traces import table_rows
from search.tree import SearchResult
from search.types import Ask, Rollout
from tests.conftest import make_tree, scripted


def omega(task, problem, tok, seed=7, **kw):
    return Search(omegaprm(make_tree(task, problem, tok), OmegaParams(**kw), seed))


def tree_signature(result):
    """Everything the search decided: nodes with their rollouts and visits, and the branches."""
    nodes = sorted((k, n.mc, n.n_rollouts, n.visits, n.n) for k, n in result.tree.nodes.items())
    return nodes, sorted((b.parent, b.wrong_step) for b in result.branches)


def test_located_errors_are_the_scripted_ones(add8, tok):
    task, problems = add8
    # one trap per problem and nearly no other errors: every wrong rollout goes wrong at the trap
    policy = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.3)
    results = run_batched([omega(task, p, tok, n_mc=16) for p in problems], policy)
    checked = 0
    for problem, result in zip(problems, results, strict=True):
        trap = policy.true_p_error(problem.prompt).index(0.3)
        for branch in result.branches:
            assert len(branch.parent) == trap
            judge = result.tree.judge
            assert judge.first_error([*branch.parent, branch.wrong_step]) == trap
            checked += 1
    assert checked >= len(problems)  # every problem had at least one failing branch


def test_screening_stops_when_all_right_or_all_wrong(add8, tok):
    task, problems = add8
    never = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.0)
    always = scripted(task, problems, tok, error_rate=0.0, trap_rate=1.0)
    for policy in (never, always):
        [result] = run_batched([omega(task, problems[0], tok, n_screen=8)], policy)
        assert result.branches == [] and result.rollouts_used == 8


def test_visits_count_selections_and_budget_bounds_them(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)
    [result] = run_batched([omega(task, problems[0], tok, budget=5)], policy)
    assert sum(n.visits for n in result.tree.nodes.values()) <= 5
    assert sum(n.visits for n in result.tree.nodes.values()) >= 1


def test_identical_prefixes_are_merged_and_reused(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)
    [result] = run_batched([omega(task, problems[0], tok, budget=30)], policy)
    nodes = result.tree.nodes
    assert len(nodes) == len({k for k in nodes})
    # MC estimates are never repeated: each probe holds exactly k rollouts (the root: K)
    assert all(n.n_rollouts == 8 for k, n in nodes.items() if k)
    assert result.rollouts_used == sum(n.n_rollouts for n in nodes.values())


@pytest.mark.parametrize("algorithm", ["omegaprm", "mcts"])
def test_batched_driver_gives_the_same_trees_as_sequential(add8, tok, algorithm):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)

    def make(p):
        tree = make_tree(task, p, tok)
        if algorithm == "mcts":
            return Search(mcts(tree, MctsParams(n_screen=16, simulations=10), 3))
        return Search(omegaprm(tree, OmegaParams(budget=20), 3))

    class Counting:  # the scripted policy, its calls counted
        calls = 0
        discards, tokens_generated = False, 0

        def sample(self, asks):
            Counting.calls += 1
            return policy.sample(asks)

        @property
        def generated(self):
            return policy.generated

    batched = run_batched([make(p) for p in problems], Counting())
    batched_calls, Counting.calls = Counting.calls, 0
    sequential = run_sequential([make(p) for p in problems], Counting())
    assert [tree_signature(r) for r in batched] == [tree_signature(r) for r in sequential]
    assert sum(len(r.branches) for r in batched) > 0
    assert batched_calls < Counting.calls / 4  # lockstep: far fewer, larger policy calls


def test_binary_and_exhaustive_locate_the_same_error_with_fewer_rollouts(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.4)
    found = {}
    for locate in ("binary", "exhaustive"):
        results = run_batched(
            [omega(task, p, tok, locate=locate, budget=4, n_mc=16) for p in problems], policy
        )
        found[locate] = (
            {
                (p.id, len(b.parent))
                for p, r in zip(problems, results, strict=True)
                for b in r.branches
            },
            sum(r.rollouts_used for r in results),
        )
    assert found["binary"][0] == found["exhaustive"][0]
    assert found["binary"][1] < found["exhaustive"][1]


def test_mcts_finds_scripted_errors_and_backs_up_values(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.5)
    results = run_batched(
        [
            Search(mcts(make_tree(task, p, tok), MctsParams(n_screen=16, simulations=30), 1))
            for p in problems
        ],
        policy,
    )
    for problem, result in zip(problems, results, strict=True):
        trap = policy.true_p_error(problem.prompt).index(0.5)
        root = result.tree.root
        if result.branches:
            assert root.n > 1  # simulations were backed up through the root
        for branch in result.branches:
            assert len(branch.parent) == trap
    assert sum(len(r.branches) for r in results) > 0


def test_countdown_search_locates_invalid_steps(tok):
    task = CountdownTask(seed=1)
    problems = task.problems("train", 10)
    policy = scripted(task, problems, tok, error_rate=0.1, trap_rate=0.5)
    results = run_batched([omega(task, p, tok, n_mc=16) for p in problems], policy)
    rows = [r for res in results for r in table_rows(res)["traces"] if r["kind"] == "correction"]
    assert rows
    agree = sum(r["mc_error_step"] == r["exact_error_step"] for r in rows) / len(rows)
    assert agree > 0.9


def test_self_corrections_from_a_policy_that_backtracks(add8, tok):
    task, problems = add8
    for unit in ("token", "step"):
        policy = ScriptedPolicy(
            task, problems, tok, error_rate=0.05, trap_rate=0.6, fix_rate=0.5, unit=unit
        )
        results = run_batched(
            [
                Search(omegaprm(make_tree(task, p, tok, unit), OmegaParams(budget=4), 2))
                for p in problems
            ],
            policy,
        )
        rows = [r for res in results for r in table_rows(res)["traces"]]
        selfc = [r for r in rows if r["kind"] == "self_correction"]
        assert selfc, unit
        for r in selfc:
            assert r["n_backspaces"] > 0 and "<|bksp|>" in r["raw_text"]
            assert "<|bksp|>" not in r["visible_text"]
            assert task.is_correct(task_problem(problems, r), r["visible_text"].split("\n"))


def test_a_right_answer_through_a_wrong_step_is_not_correct(add8, tok):
    """With an exact step checker, correct = right answer and no wrong visible step: such a
    rollout is no clean trace, no self-correction and no evidence for mc."""
    task, problems = add8
    problem = problems[0]
    ref = task.reference(problem)
    bad = ref[1][:-1] + str((int(ref[1][-1]) + 1) % 10)  # step 1 with its last digit changed
    right = "\n".join(ref)
    wrong_step = "\n".join([ref[0], bad, *ref[2:]])
    assert task.is_correct(problem, wrong_step.split("\n"))  # the answer alone is right

    def fixed_first_step(text):  # writes step 0 wrong, erases the wrong digit, goes on
        rest = text[len(ref[0]) :]
        return tok.encode(ref[0] + "7\n") + [tok.bksp_id] * 2 + tok.encode(rest)

    ids = [tok.encode(wrong_step), fixed_first_step(wrong_step)]
    ids += [tok.encode(right), fixed_first_step(right)]
    tree = make_tree(task, problem, tok)
    assert tree.judge.texts(tree.judge.visible_steps(ids[1])) == wrong_step.split("\n")
    verdicts = tree.add_rollouts(tree.root, [Rollout(tuple(x), True) for x in ids])
    assert verdicts == [False, False, True, True]
    traces = table_rows(SearchResult(tree, []))["traces"]
    assert [(r["kind"], r["visible_text"]) for r in traces] == [
        ("clean", right),
        ("self_correction", right),
    ]


def task_problem(problems, row):
    return next(p for p in problems if p.prompt == row["prompt_text"])


def test_scripted_counters_give_the_rollout_lengths_and_no_compute(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.3)
    asks = [Ask(tuple(tok.encode(p.prompt)), 3, "end", seed=i) for i, p in enumerate(problems)]
    got = policy.sample(asks)
    assert policy.generated == [[len(r.tokens) for r in rs] for rs in got]
    assert policy.tokens_generated == 0 and not policy.discards  # no model decoded them


def test_driver_rejects_a_policy_that_answers_short(add8, tok):
    task, problems = add8

    class Short:
        generated, discards, tokens_generated = [], False, 0

        def sample(self, asks):
            return [[Rollout((), True)] * (a.n - 1) for a in asks]

    with pytest.raises(ValueError, match="rollouts for an ask"):
        run_batched([omega(task, problems[0], tok)], Short())


def test_asks_carry_distinct_reproducible_seeds(add8, tok):
    task, problems = add8
    seen: list[Ask] = []
    base = scripted(task, problems, tok, error_rate=0.05)

    class Recording:  # the scripted policy, its asks recorded
        discards, tokens_generated = False, 0

        def sample(self, asks):
            seen.extend(asks)
            return base.sample(asks)

        @property
        def generated(self):
            return base.generated

    run_batched([omega(task, problems[0], tok, budget=10)], Recording())
    first = [a.seed for a in seen]
    seen.clear()
    run_batched([omega(task, problems[0], tok, budget=10)], Recording())
    assert [a.seed for a in seen] == first
    assert len(set(first)) == len(first)


def test_every_trace_ends_with_end_of_sequence_under_loss(add8, tok):
    task, problems = add8
    policy = ScriptedPolicy(task, problems, tok, error_rate=0.05, trap_rate=0.6, fix_rate=0.3)
    results = run_batched([omega(task, p, tok, budget=4) for p in problems], policy)
    rows = [r for res in results for r in table_rows(res)["traces"]]
    assert {r["kind"] for r in rows} == {"correction", "clean", "self_correction"}
    for r in rows:
        assert r["input_ids"][-1] == tok.eos_id and r["loss_mask"][-1] == 1
    pairs = [p for res in results for p in table_rows(res)["pairs"]]
    assert pairs
    for pair in pairs:
        assert pair["chosen_ids"][-1] == tok.eos_id
        # the scripted rollouts all finish: the model's own wrong continuation ends as it did
        assert pair["rejected_ids"][-1] == tok.eos_id
        assert tok.eos_id not in pair["rejected_ids"][:-1]


def runs_of(ids, bksp):
    """Backspace runs in `ids`, counted directly."""
    return sum(t == bksp and (i == 0 or ids[i - 1] != bksp) for i, t in enumerate(ids))


@pytest.mark.parametrize("unit", ["token", "step"])
def test_every_trace_counts_its_steps_runs_and_precise_erases(add8, tok, unit):
    task, problems = add8
    policy = ScriptedPolicy(
        task, problems, tok, error_rate=0.05, trap_rate=0.6, fix_rate=0.5, unit=unit
    )
    searches = [
        Search(omegaprm(make_tree(task, p, tok, unit), OmegaParams(budget=4), 2)) for p in problems
    ]
    rows = [r for res in run_batched(searches, policy) for r in table_rows(res)["traces"]]
    assert {r["kind"] for r in rows} == {"correction", "clean", "self_correction"}
    for r in rows:
        generated = r["input_ids"][r["prompt_len"] : -1]  # without end-of-sequence
        # every delimiter written finishes a step, and so does the end (the answer line has none)
        assert r["steps_written"] == generated.count(tok.delim_id) + 1, r["raw_text"]
        assert r["erase_events"] == runs_of(generated, tok.bksp_id)
        assert 0 <= r["precise_erases"] <= r["erase_events"]
    # a correction erases its wrong step: precise exactly when the checker finds an error up to
    # it (a finished step; an unfinished one, the answer line, has no verdict)
    corrections = [r for r in rows if r["kind"] == "correction" and erases_a_finished_step(r, tok)]
    assert corrections
    for r in corrections:
        assert r["precise_erases"] == (r["exact_error_step"] is not None)
    assert any(r["precise_erases"] < r["erase_events"] for r in rows)  # not all precise


def erases_a_finished_step(row, tok):
    """Whether a correction's erased tokens end with the step delimiter."""
    (_, end), *_ = row["erase_spans"]
    return row["input_ids"][end - 1] == tok.delim_id


def test_precise_only_keeps_the_self_correction_that_erased_a_wrong_step(add8, tok):
    from pipeline.config import SelectConfig
    from pipeline.stages.select import select_backtrack

    task, problems = add8
    problem = problems[0]
    ref = task.reference(problem)
    rest = tok.encode("".join("\n" + step for step in ref[1:]))
    precise = tok.encode(ref[0] + "7\n") + [tok.bksp_id] * 2 + rest  # erases "7\n"
    # erases the delimiter of the right first step (a right finished step) and writes it again
    imprecise = tok.encode(ref[0] + "\n") + [tok.bksp_id] + rest
    tree = make_tree(task, problem, tok)
    rollouts = [Rollout(tuple(x), True) for x in (precise, imprecise)]
    assert tree.add_rollouts(tree.root, rollouts) == [True, True]
    rows = [r | {"problem_id": problem.id} for r in table_rows(SearchResult(tree, []))["traces"]]
    own = [(r["erase_events"], r["precise_erases"]) for r in rows if r["kind"] != "clean"]
    assert own == [(1, 1), (1, 0)]
    s = SelectConfig(precise_only=True, clean_share=0.0)
    chosen = select_backtrack(rows, s, seed=0)
    assert [r["raw_text"] for r in chosen] == [tok.decode(precise)]
    assert len(select_backtrack(rows, SelectConfig(clean_share=0.0), seed=0)) == 2
