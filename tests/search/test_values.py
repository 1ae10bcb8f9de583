"""Value-guided search (search/values.py): a valuer whose values equal the MC
estimates gives the MC search with fewer rollouts; a valuer that knows the script locates the
scripted errors without rollouts; the driver batches value asks across problems."""

import pytest

from search.driver import Search, run_batched, run_sequential
from search.errors import HallucError, ParamError
from search.fake import ScriptedValuer
from search.mcts import MctsParams, mcts
from search.omegaprm import OmegaParams, omegaprm
from search.tree import Node, flatten
from search.values import ValueParams
from tests.conftest import make_tree, scripted


class TableValuer:
    """Values looked up by prefix; a prefix it was not given gets `default`, or is an error (the
    search valued a node the reference search did not)."""

    def __init__(self, table, default=None):
        self.table, self.default, self.calls = table, default, 0

    def values(self, prefixes):
        self.calls += 1
        if self.default is None:
            return [self.table[p] for p in prefixes]
        return [self.table.get(p, self.default) for p in prefixes]


def run_mcts(task, problems, tok, policy, value=None, valuer=None, simulations=20):
    params = MctsParams(n_screen=16, simulations=simulations)
    searches = [
        Search(mcts(make_tree(task, p, tok), params, 3, *([value] if value else [])))
        for p in problems
    ]
    return run_batched(searches, policy, valuer=valuer)


def shape(result):
    """What the search decided, without where its values came from: every node's place, visit
    count, value sum and children, and the failing branches."""
    nodes = sorted(
        (k, n.n, n.w, n.expanded, n.terminal, sorted(c.steps for c in n.children))
        for k, n in result.tree.nodes.items()
    )
    return nodes, sorted((b.parent, b.wrong_step) for b in result.branches)


def mc_table(results):
    """prefix -> mc of every node the MC search rolled out (the root aside)."""
    return {
        r.tree.judge.prompt + flatten(k): n.mc
        for r in results
        for k, n in r.tree.nodes.items()
        if k and n.n_rollouts
    }


def test_model_values_equal_to_mc_give_the_mc_search_with_fewer_rollouts(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.02, trap_rate=0.5)
    by_mc = run_mcts(task, problems, tok, policy)
    valuer = TableValuer(mc_table(by_mc))
    by_model = run_mcts(
        task, problems, tok, policy, ValueParams("model", threshold=0.0), valuer=valuer
    )
    assert [shape(r) for r in by_model] == [shape(r) for r in by_mc]
    assert sum(len(r.branches) for r in by_mc) > 0
    for m, v in zip(by_mc, by_model, strict=True):
        # the leaves' k rollouts are all that is saved: screening and expansions are the same
        leaf_rollouts = sum(n.n_rollouts for k, n in m.tree.nodes.items() if k)
        assert v.rollouts_used == m.rollouts_used - leaf_rollouts
        assert v.tree.values_used == sum(1 for k, n in m.tree.nodes.items() if k and n.n_rollouts)
    assert sum(r.rollouts_used for r in by_model) < 0.5 * sum(r.rollouts_used for r in by_mc)
    # mix: rollouts and the (equal) model value; half of each is the MC value again, exactly
    by_mix = run_mcts(task, problems, tok, policy, ValueParams("mix", 0.5, 0.0), valuer)
    assert [shape(r) for r in by_mix] == [shape(r) for r in by_mc]
    assert [r.rollouts_used for r in by_mix] == [r.rollouts_used for r in by_mc]


def test_other_values_steer_the_search_elsewhere(add8, tok):
    """The comparison above can fail: values that are not the MC estimates change the tree."""
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.02, trap_rate=0.5)
    by_mc = run_mcts(task, problems, tok, policy)
    flipped = TableValuer({p: 1 - v for p, v in mc_table(by_mc).items()}, default=0.5)
    by_model = run_mcts(task, problems, tok, policy, ValueParams("model", threshold=0.0), flipped)
    assert [shape(r) for r in by_model] != [shape(r) for r in by_mc]


@pytest.mark.parametrize("algorithm", ["omegaprm", "mcts"])
def test_a_valuer_that_knows_the_script_finds_the_traps_without_rollouts(add8, tok, algorithm):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.5)
    value = ValueParams("model", threshold=0.0)  # off the path the true value is exactly 0
    valuer = ScriptedValuer(policy)
    searches = []
    for p in problems:
        tree = make_tree(task, p, tok)
        if algorithm == "mcts":
            searches.append(Search(mcts(tree, MctsParams(n_screen=16, simulations=20), 1, value)))
        else:
            searches.append(Search(omegaprm(tree, OmegaParams(n_screen=16), 1, value)))
    results = run_batched(searches, policy, valuer=valuer)
    located = 0
    for problem, result in zip(problems, results, strict=True):
        trap = policy.true_p_error(problem.prompt).index(0.5)
        for branch in result.branches:
            assert len(branch.parent) == trap
            assert result.tree.judge.first_error([*branch.parent, branch.wrong_step]) == trap
            located += 1
        if algorithm == "omegaprm":  # the screening's rollouts, nothing to locate with
            assert result.rollouts_used == 16
    assert located >= len(problems) // 2


def test_omegaprm_mix_with_no_weight_is_the_mc_search(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)

    def search(value):
        searches = [
            Search(omegaprm(make_tree(task, p, tok), OmegaParams(budget=10), 5, value))
            for p in problems
        ]
        return run_batched(searches, policy, valuer=ScriptedValuer(policy, noise=0.3))

    mc, mix = search(ValueParams()), search(ValueParams("mix", mix=0.0, threshold=0.0))
    sig = [sorted((k, n.mc, n.n_rollouts, n.visits) for k, n in r.tree.nodes.items()) for r in mc]
    assert sig == [
        sorted((k, n.mc, n.n_rollouts, n.visits) for k, n in r.tree.nodes.items()) for r in mix
    ]
    assert all(n.value is not None for r in mix for k, n in r.tree.nodes.items() if k)


def test_value_asks_are_batched_across_problems(add8, tok):
    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.05)
    value = ValueParams("mix", 0.5, 0.3)

    def searches():
        return [
            Search(mcts(make_tree(task, p, tok), MctsParams(n_screen=16, simulations=8), 2, value))
            for p in problems
        ]

    batched_valuer, sequential_valuer = ScriptedValuer(policy, 0.2), ScriptedValuer(policy, 0.2)
    batched = run_batched(searches(), policy, valuer=batched_valuer)
    sequential = run_sequential(searches(), policy, valuer=sequential_valuer)
    assert [shape(r) for r in batched] == [shape(r) for r in sequential]
    assert batched_valuer.calls < sequential_valuer.calls / 4


def test_value_params_and_a_missing_valuer_say_what_is_wrong(add8, tok):
    with pytest.raises(ParamError, match="value_threshold"):
        ValueParams("model", threshold=1.0)
    with pytest.raises(ParamError, match="mix"):
        ValueParams("mix", mix=1.5)
    node = Node(steps=((1,),), correct=[True, False, False, False], rollouts=[None] * 4)
    node.value = 0.75
    assert ValueParams("mix", mix=0.2).of(node) == pytest.approx(0.8 * 0.25 + 0.2 * 0.75)
    assert ValueParams("model").of(node) == 0.75 and ValueParams().of(node) == 0.25
    task, problems = add8
    policy = scripted(task, problems, tok)
    search = Search(mcts(make_tree(task, problems[0], tok), MctsParams(), 1, ValueParams("model")))
    with pytest.raises(HallucError, match="search.value_model"):
        run_batched([search], policy)


def test_the_benchmark_counts_rollouts_per_correct_location(add8, tok):
    """experiments/value_search.py's core on the scripted policy: a valuer that knows the script
    locates every error right without a rollout past the screening; MC pays for its locations."""
    from experiments.value_search import compare, methods
    from pipeline.config import load_config

    task, problems = add8
    policy = scripted(task, problems, tok, error_rate=0.0, trap_rate=0.5)
    cfg = load_config("arith-tiny", ["search.omegaprm.budget=4", "search.mcts.simulations=10"])
    chosen = methods([0.0, 0.5], mix=0.5)
    result = compare(cfg, task, tok, problems, policy, ScriptedValuer(policy), chosen)
    rows = result["methods"]
    assert len(rows) == len(chosen)
    exhaustive, binary = rows["omegaprm exhaustive mc"], rows["omegaprm binary mc"]
    assert exhaustive["vs_exhaustive"] == 1.0 and binary["vs_exhaustive"] < 1.0
    model = rows["omegaprm model@0"]
    assert model["accuracy"] == 1.0 and model["rollouts"] == 0 and model["values"] > 0
    assert rows["omegaprm mix@0"]["rollouts"] > 0  # the probes' rollouts, as MC
    for name, row in rows.items():
        assert row["correct"] <= row["located"], name
        assert row["screening_rollouts"] == len(problems) * (32 if "mcts" in name else 16)
    m = result["matched"]["omegaprm"]
    assert m["equal_accuracy"] and m["rollout_ratio"] == 0.0
    assert result["matched"]["mcts"]["value"].startswith("mcts ")
