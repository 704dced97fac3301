"""The search: the trial loop, evaluators, statuses, Pareto pruning, studies, reports."""
