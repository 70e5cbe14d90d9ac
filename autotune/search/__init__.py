"""The Optuna study: the search space, storage, sampler and pruner, seed trials, the objective,
and the worker that runs trials."""
