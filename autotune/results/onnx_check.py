"""Checks an exported ``model.onnx`` in a clean interpreter: run by ``results.onnx_export`` as
``python -I onnx_check.py MODEL.onnx MODEL.pt2|- CHECK.npz THREADS SECONDS``, it imports no
autotune module (only what a deployment has: numpy, onnxruntime, and torch for the PyTorch
timing), so what it finds is what a user loading the file finds.

It runs the ONNX model with onnxruntime on the CPU on the batch in ``CHECK.npz`` (``inputs``,
of another batch size than the one the model was exported with, so the dynamic batch dimension
is exercised), compares with the PyTorch output there (``expected``), then times onnxruntime
and the ``.pt2`` program on that batch in alternation, and prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def main(onnx_path: str, program_path: str, check: str, threads: int, seconds: float) -> None:
    import numpy as np
    import onnxruntime as ort

    data = np.load(check)
    inputs, expected = data["inputs"], data["expected"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = {name: inputs}
    got = session.run(None, feed)[0]
    if got.shape != expected.shape:
        raise SystemExit(f"output shape {list(got.shape)}, PyTorch's {list(expected.shape)}")
    runs = [lambda: session.run(None, feed)]
    if program_path != "-":
        import torch

        torch.set_num_threads(threads)
        program = torch.export.load(program_path).module()
        batch = torch.from_numpy(inputs)

        def pytorch() -> None:
            with torch.no_grad():
                program(batch)

        runs.append(pytorch)
    times = _interleaved(runs, seconds)
    medians = [1000 * statistics.median(t) for t in times]
    found = {
        "max_abs_diff": float(np.abs(got.astype(np.float64) - expected).max()),
        "samples": len(inputs),
        "onnxruntime": ort.__version__,
        "onnxruntime_ms": medians[0],
        "pytorch_ms": medians[1] if len(medians) > 1 else None,
    }
    print(json.dumps(found))


def _interleaved(runs: list, seconds: float) -> list[list[float]]:
    """Wall times of each run, alternating, after two warm-up rounds, for about ``seconds``."""
    times: list[list[float]] = [[] for _ in runs]
    start = time.perf_counter()
    for run in runs * 2:
        run()
    round_s = (time.perf_counter() - start) / 2
    repeats = int(min(500, max(5, seconds / max(round_s, 1e-9))))
    for i in range(repeats):
        order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
        for j in order:
            began = time.perf_counter()
            runs[j]()
            times[j].append(time.perf_counter() - began)
    return times


if __name__ == "__main__":
    onnx_file, program_file, npz, threads, seconds = sys.argv[1:6]
    main(onnx_file, program_file, npz, int(threads), float(seconds))
