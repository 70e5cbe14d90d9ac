"""Mutation check: break one core behaviour at a time and confirm a test fails.

Run from the repository root with the project installed in editable mode:
    python tests/mutations.py [NAME ...]
Each mutation edits one line of the package, runs the tests that should catch it, and puts the
line back. The results go in tests/README.md. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (file, line as it is, line broken, tests that must fail)
MUTATIONS: dict[str, tuple[str, str, str, str]] = {
    "best-weight restore deleted": (
        "autotune/trial/fit.py",
        "    if restore_best:\n        model.load_state_dict(best_state)\n",
        "    if restore_best:\n        pass\n",
        "tests/test_train.py",
    ),
    "early stopping never stops": (
        "autotune/trial/fit.py",
        "        if epoch - last_gain >= patience:\n",
        "        if False:\n",
        "tests/test_train.py",
    ),
    "frozen BatchNorm left in train mode": (
        "autotune/trial/fit.py",
        "            m.eval()\n",
        "            pass\n",
        "tests/test_train.py",
    ),
    "epochs not reported to the pruner": (
        "autotune/search/objective.py",
        "            trial.report(value, epoch)\n",
        "",
        "tests/test_objective.py",
    ),
    "pruner's verdict ignored": (
        "autotune/search/objective.py",
        "            if out or (reach is None and trial.should_prune()):\n",
        "            if out:\n",
        "tests/test_objective.py",
    ),
    "a slimmed child out of reach trained on": (
        "autotune/search/objective.py",
        "            if out or (reach is None and trial.should_prune()):\n",
        "            if reach is None and trial.should_prune():\n",
        "tests/test_slimming.py",
    ),
    "a near copy of its parent trained": (
        "autotune/search/stages.py",
        "    if settings.pareto or not of_parent or params < NEAR_COPY * of_parent:\n",
        "    if True:\n",
        "tests/test_slimming.py",
    ),
    "budget constraints not recorded": (
        "autotune/search/objective.py",
        "            trial.set_constraint(key, value)\n",
        "            pass\n",
        "tests/test_slimming.py",
    ),
    "over-budget trials trained anyway": (
        "autotune/search/objective.py",
        "        if any(v > 0 for v in over.values()) and not tuning:\n",
        "        if False:\n",
        "tests/test_slimming.py",
    ),
    "stage 1 recorded as over the budget": (
        "autotune/search/objective.py",
        "        for key, value in ({} if tuning else over).items():\n",
        "        for key, value in over.items():\n",
        "tests/test_slimming.py",
    ),
    "gate placed before the layer's normalisation": (
        "autotune/rank/placement.py",
        "            points.append(Point(names[node.module], 1, norms[node]))\n",
        "            pass\n",
        "tests/test_pruning.py tests/test_importance.py",
    ),
    "depthwise channels not recorded": (
        "autotune/trial/prune.py",
        "    tp.prune_depthwise_conv_out_channels,\n",
        "",
        "tests/test_zoo.py::test_pruning_equals_gating_and_the_analysis_leaves_the_model_as_it_was[mobilenet_v3_small]",
    ),
    "head gates spread over every head's slice": (
        "autotune/rank/gates.py",
        "                gate = gate.repeat_interleave(point.width, dim=1)\n",
        "                gate = gate.repeat(1, point.width)\n",
        "tests/test_heads.py::test_a_dead_head_ranks_last_and_goes_first",
    ),
    "pruning removes the highest-ranked channels": (
        "autotune/trial/prune.py",
        "        return total / count.clamp(min=1)\n",
        "        return -total / count.clamp(min=1)\n",
        "tests/test_pruning.py",
    ),
    "analysis explains the user's model itself, not a copy": (
        "autotune/rank/methods.py",
        "        copied = copy.deepcopy(model).cpu().eval()\n",
        "        copied = model.cpu().eval()\n",
        "tests/test_importance.py",
    ),
    "focal loss NaN below gamma 1": (
        "autotune/trial/losses.py",
        "    weight = (1.0 - log_p.exp()).clamp_min(1e-6) ** gamma\n",
        "    weight = (1.0 - log_p.exp()) ** gamma\n",
        "tests/test_losses.py",
    ),
    "stage 2 slims the worst stage-1 model": (
        "autotune/search/stages.py",
        "    return max(done, key=lambda t: rank_key(t, sign(metric)))\n",
        "    return min(done, key=lambda t: rank_key(t, sign(metric)))\n",
        "tests/test_slimming.py",
    ),
    "export ignores a slimmed trial's parent": (
        "autotune/results/export.py",
        "    parent = TrialRecord.from_trial(trial).parent\n",
        "    parent = None\n",
        "tests/test_slimming.py",
    ),
    "re-run redoes finished trials": (
        "autotune/search/runner.py",
        "        total = self.settings.trials\n",
        "        total = self.settings.trials + started(study)\n",
        "tests/test_study.py",
    ),
    "checkpoint kept for a worse trial, not the best": (
        "autotune/search/objective.py",
        "            improves = best is None or scores > rank_key(best, s)[:2]\n",
        "            improves = best is None or scores < rank_key(best, s)[:2]\n",
        "tests/test_cli.py tests/test_slimming.py",
    ),
    "a .pt2 with a repeated entry name accepted": (
        "autotune/load/trust.py",
        "    if twice is not None:\n",
        "    if False:\n",
        "tests/test_trust.py::test_a_repeated_entry_runs_no_code_whichever_copy_a_reader_picks",
    ),
    "a power tower in a .pt2 shape expression evaluated": (
        "autotune/load/trust.py",
        "        if _too_large(node):\n",
        "        if False:\n",
        "tests/test_trust.py::test_a_shape_expression_too_costly_to_evaluate_is_refused",
    ),
    "a trial of this pid taken for this process's whatever its run id": (
        "autotune/search/identity.py",
        'worker.get("run") == RUN and ',
        "",
        "tests/test_resume.py::test_a_trial_of_this_pid_with_another_run_id_is_failed_and_retried",
    ),
    "a live pid taken for the worker whatever its start time": (
        "autotune/search/identity.py",
        "    return started is None or current is None or float(started) == current\n",
        "    return True\n",
        "tests/test_resume.py::test_a_live_worker_of_this_machine_is_waited_for_and_a_reused_pid_is_not",
    ),
    "a recipe trial stopped by Ctrl-C not queued again": (
        "autotune/search/trials.py",
        "        stopped = t.state == TrialState.FAIL and (rec.interrupted or rec.surplus)\n",
        "        stopped = False\n",
        "tests/test_resume.py::test_a_recipe_trial_stopped_by_ctrl_c_is_trained_as_the_recipe_by_the_next_run",
    ),
    "a recipe run again under a stage-2 number slimmed as stage 2": (
        "autotune/search/objective.py",
        "            stage = 1\n",
        "            pass\n",
        "tests/test_resume.py::test_a_recipe_trial_stopped_by_ctrl_c_is_trained_as_the_recipe_by_the_next_run",
    ),
    "the retry of a dead recipe trial not the recipe": (
        "autotune/search/trials.py",
        "            user_attrs=kept | ({RECIPE: True} if rec.recipe else {}),\n",
        "",
        "tests/test_resume.py::test_the_retry_of_a_recipe_trial_whose_worker_died_is_the_recipe",
    ),
    "a trial continued from its checkpoint with the dropout generator of a fresh start": (
        "autotune/trial/resume.py",
        '        torch.set_rng_state(saved["rng"])\n',
        "        pass\n",
        "tests/test_trial_resume.py",
    ),
    "an interrupted trial with a checkpoint not queued again": (
        "autotune/search/runner.py",
        "        for n in enqueue_resumes(study, kept):\n",
        "        for n in []:\n",
        "tests/test_trial_resume.py",
    ),
    "another machine's copy of a checkpoint not read": (
        "autotune/trial/resume.py",
        "            if self.shared.fetch(copy):\n",
        "            if False:\n",
        "tests/test_trial_resume.py::test_a_trial_stopped_on_one_machine_continues_on_another_from_the_checkpoint_store",
    ),
    "a checkpoint's copy written over the last whole one": (
        "autotune/search/resume_store.py",
        "        slot = 1 if last == self.store.artifact_id(self.number, 0) else 0\n",
        "        slot = 0\n",
        "tests/test_trial_resume.py::test_a_trial_stopped_on_one_machine_continues_on_another_from_the_checkpoint_store",
    ),
    "a Ctrl-C not held while Optuna records a trial": (
        "autotune/search/runner.py",
        "with held():",
        "if True:",
        "tests/test_interrupts.py",
    ),
    "a signal stops a storage call half-way": (
        "autotune/search/study.py",
        "    hold_in_calls(storage_of(study))  # the trials' calls too, the sampler's and the "
        "pruner's\n",
        "",
        "tests/test_interrupts.py::test_a_sigterm_inside_a_storage_call_waits_for_its_end_and_the_results_are_written",
    ),
    "a signal stops a file half-written": (
        "autotune/paths.py",
        "    with held():\n",
        "    if True:\n",
        "tests/test_interrupts.py::test_a_sigterm_while_a_checkpoint_is_written_stops_the_trial_once_the_file_is_whole",
    ),
    "a journal's cut last line left for the next append": (
        "autotune/search/journal.py",
        "    if not _torn(path):\n",
        "    if True:\n",
        "tests/test_storage.py::test_a_journal_whose_last_write_was_cut_short_is_mended_and_written_on",
    ),
    "a worker runs on after its parent died": (
        "autotune/search/pool.py",
        "    stop_with_parent()\n",
        "",
        "tests/test_crash.py::test_a_worker_whose_parent_was_killed_stops_and_leaves_no_trial_running",
    ),
    "a trial over the latency budget exported": (
        "autotune/search/study.py",
        '    return {"params": rec.total_params, "macs": rec.macs, '
        '"latency_ratio": rec.latency_ratio}\n',
        '    return {"params": rec.total_params, "macs": rec.macs}\n',
        "tests/test_latency_budget.py::test_a_trial_over_the_latency_budget_is_never_exported",
    ),
    "a SIGTERM at the end of a search loses the bundle": (
        "autotune/api.py",
        "        with deferred():  # a SIGTERM now waits for the bundle, as a scheduler's grace "
        "allows\n",
        "        if True:\n",
        "tests/test_interrupts.py::test_a_sigterm_at_the_end_of_a_search_waits_for_the_bundle_then_stops_it",
    ),
    "model.onnx exported with a fixed batch size": (
        "autotune/results/onnx_export.py",
        "                dynamic_shapes=({0: torch.export.Dim.AUTO},),\n",
        "                dynamic_shapes=None,\n",
        "tests/test_onnx.py::test_the_onnx_model_matches_pytorch_at_any_batch_size",
    ),
    "a --max-params no model can meet searched anyway": (
        "autotune/search/size_floor.py",
        "    if floor is None or floor.params <= limit:\n",
        "    if True:\n",
        "tests/test_slimming.py::test_a_size_budget_no_model_of_the_space_meets_is_refused_before_the_analysis",
    ),
    "the parameter floor above what a trial reaches": (
        "autotune/search/size_floor.py",
        "            d if d == c else min(c, 1) "
        "for d, c in zip(param.shape, cut.shape, strict=True)\n",
        "            d if d == c else c for d, c in zip(param.shape, cut.shape, strict=True)\n",
        "tests/test_slimming.py::test_no_model_a_space_builds_is_smaller_than_its_floor",
    ),
    "a width gate that keeps the LayerNorm's full statistics": (
        "autotune/rank/width.py",
        "    mean = (x * g).sum(-1, keepdim=True) / count\n",
        "    mean = x.mean(-1, keepdim=True)\n",
        "tests/test_width.py::test_removing_width_channels_equals_closing_their_gates_in_the_layernorms",
    ),
    "an over-budget child not raised to the slimming that fits": (
        "autotune/search/fit_budget.py",
        "    if not line or fits(built, sizes) or config.prune_layers:\n",
        "    if True:\n",
        "tests/test_fit_budget.py",
    ),
    "a stage-2 child judged against the top's final score at every age": (
        "autotune/search/stages.py",
        "        return min(self.floor, top - self.margin * standard_error(top, self.samples))\n",
        "        return self.floor\n",
        "tests/test_selection.py::test_a_child_keeping_pace_with_the_top_child_at_its_age_goes_on",
    ),
}


def run(name: str) -> str:
    """Apply mutation ``name``, run its tests, restore the file. The verdict: ``caught`` only
    when the mutant compiles and pytest ran its tests and one failed (exit code 1); ``MISSED``
    when they all passed; ``BROKEN`` when the row no longer applies (its line is gone), the
    mutant does not compile, or pytest could not run the tests (a collection or usage error
    is no catch)."""
    file, before, after, tests = MUTATIONS[name]
    path = ROOT / file
    original = path.read_text()
    if original.count(before) != 1:
        return f"BROKEN: the line to break is not in {file} exactly once: {before!r}"
    mutant = original.replace(before, after)
    try:
        compile(mutant, file, "exec")
    except SyntaxError as e:
        return f"BROKEN: the mutant does not compile ({e})"
    path.write_text(mutant)
    try:
        # One process (-n 0): the named tests are few, and workers would cost more than they save.
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider"]
        done = subprocess.run(
            [*command, *tests.split()],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        path.write_text(original)
    failed = [ln for ln in done.stdout.splitlines() if ln.startswith("FAILED")]
    if done.returncode == 0:
        return f"MISSED ({tests})"
    if done.returncode == 1 and failed:
        return f"caught by {failed[0].removeprefix('FAILED ')}"
    tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
    return f"BROKEN: pytest exited {done.returncode} ({tail})"


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"no such mutation: {unknown}; known: {list(MUTATIONS)}")
        return 2
    verdicts = {}
    for name in names or list(MUTATIONS):  # every row, to the end, whatever the verdicts
        verdicts[name] = run(name)
        print(f"{name}: {verdicts[name]}", flush=True)
    bad = [n for n, v in verdicts.items() if not v.startswith("caught")]
    # The plain closing line test runners print: a caught mutant passed, the rest failed.
    print(f"mutations: {len(verdicts) - len(bad)} passed, {len(bad)} failed", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
