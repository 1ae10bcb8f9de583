"""Experiments behind RESULTS.md that run models of their own: they bootstrap, search, train or
fine-tune, for minutes to hours, and print (or write) their figures. Run one from the repository
root:

    .venv/bin/python experiments/NAME.py --help

- `backtrack_grid.py`: bootstrap once, search per backspace unit, train the four attention x unit
  models and evaluate them beside the bootstrap model (issue 4).
- `bootstrap_forms.py`: bootstraps on optimal paths, search streams and backspace streams at equal
  compute, over seeds (the Stream-of-Search comparison).
- `loss_ablation.py`: which training targets hurt, fine-tuning a finished run's bootstrap model on
  variants of its selection (issue 5).
- `token_probe.py`: where the fine-tuning loss sits when the backspace is new, and what fitting
  its embedding rows alone does.
- `value_search.py`: value-guided search against Monte Carlo search on a finished run's models:
  rollouts and wall time per correctly located first error (issue 16).

Tables computed from finished runs are `halluc table NAME` (`pipeline.tables`); speed benchmarks
against a baseline in the same run are in `benchmarks/` (BENCHMARKS.md).
"""
