"""The Optuna study: the search space, storage, sampler and pruner, seed trials, the objective,
the worker that runs trials, which trials count and what becomes of a dead worker's
(``trials``), and the extra worker processes of ``--workers`` (``pool``)."""
