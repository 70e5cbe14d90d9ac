"""Image folders too large to hold stream from disk; preprocessing as the model was trained;
the ``augment`` parameter; the data fingerprint."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState
from PIL import Image
from rich.console import Console
from torch import nn

from autotune.api import search
from autotune.config import TrialConfig
from autotune.errors import DataError, SpaceError
from autotune.load.data import load_data
from autotune.load.job import DataSpec, Job
from autotune.load.streams import Streamed
from autotune.load.tasks import TaskData
from autotune.search.prepare import adapt_space
from autotune.search.space import load_space
from autotune.trial import augment
from autotune.trial.fit import evaluate, fine_tune

ROOT = Path(__file__).resolve().parents[1]


def tiny_cnn(classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, classes),
    )


def make_folder(root: Path, per_class: int, side: int = 16) -> Path:
    """Two classes told apart by colour, with some noise, in train/ and val/."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("val", max(2, per_class // 3))):
        for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = torch.randint(-30, 30, (side, side, 3), generator=g)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture
def tiny_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resident limit of ~10 KB: every test folder streams."""
    monkeypatch.setenv("AUTOTUNE_RESIDENT_MB", "0.01")


def _both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TaskData, TaskData]:
    """One small image folder read resident, then streamed (a resident limit of ~10 KB)."""
    folder = make_folder(tmp_path, 6)
    resident = load_data(str(folder))
    monkeypatch.setenv("AUTOTUNE_RESIDENT_MB", "0.01")
    return resident, load_data(str(folder), workers=1)


def test_a_folder_above_the_limit_streams_and_reads_the_same_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident, streamed = _both_ways(tmp_path, monkeypatch)
    assert not resident.streamed and streamed.streamed
    assert isinstance(streamed.x_train, Streamed) and streamed.x_train.shape == (12, 3, 16, 16)
    assert streamed.preprocessing["storage"] == "streamed from disk"
    assert torch.equal(streamed.x_val[:], resident.x_val)  # type: ignore[arg-type]
    assert torch.equal(streamed.y_train, resident.y_train)
    # Evaluation through the loader's worker process equals evaluation of the tensors.
    model = tiny_cnn().eval()
    assert evaluate(model, streamed.x_val, streamed.y_val) == evaluate(
        model, resident.x_val, resident.y_val
    )


def test_training_on_streamed_batches_equals_training_on_the_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident, streamed = _both_ways(tmp_path, monkeypatch)
    config = TrialConfig(lr=1e-2, batch_size=4)
    a, b = tiny_cnn(), tiny_cnn()
    fit_a = fine_tune(a, resident, config, max_epochs=2, patience=5)
    fit_b = fine_tune(b, streamed, config, max_epochs=2, patience=5)
    assert fit_a.history == fit_b.history
    assert fit_a.wait_seconds == 0.0 and fit_b.wait_seconds > 0.0
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_a_streamed_folder_searches_end_to_end(tmp_path: Path, tiny_limit: None) -> None:
    folder = make_folder(tmp_path / "data", 8)
    model = tmp_path / "model.pt"
    torch.save(tiny_cnn(), model)
    from autotune.load.job import ModelSpec

    out = io.StringIO()
    space = {
        "lr": {"low": 1e-3, "high": 3e-2, "log": True},
        "augment": ["none", "light"],
        "prune": {"low": 0.0, "high": 0.5},
        "analysis": {"samples": 8, "background": 4, "nsamples": 2},
        "fit": {"max_epochs": 2, "patience": 2},
    }
    result = search(
        ModelSpec(str(model), trust_model=True),
        DataSpec(str(folder), workers=1, normalize="0.5,0.25"),
        space=space,
        trials=4,
        out=tmp_path / "run",
        console=Console(file=out, width=1000),
        export_preprocessing=True,
    )
    printed = out.getvalue()
    assert "streamed from disk by 1 loader workers" in printed.splitlines()[0]
    states = [t.state for t in result.study.trials]
    assert TrialState.FAIL not in states and states.count(TrialState.COMPLETE) >= 3
    sampled = {t.params["augment"] for t in result.study.trials if "augment" in t.params}
    assert sampled and sampled <= {"none", "light"}
    assert result.best is not None
    config = yaml.safe_load((result.best.folder / "config.yaml").read_text())
    pre = config["data"]["preprocessing"]
    assert pre["storage"] == "streamed from disk"
    assert pre["normalize"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert "augment" in config["params"]
    # The exported program takes raw [0, 1] images and normalises them itself.
    program = torch.export.load(str(result.best.folder / "model.pt2")).module()
    raw = torch.rand(3, 3, 16, 16)
    expected = result.best.model((raw - 0.5) / 0.25)
    assert torch.allclose(program(raw), expected, atol=1e-5)


def test_resize_shorter_side_and_centre_crop_then_normalise(tmp_path: Path) -> None:
    # 30 x 10: a white centre square between black sides. Squashed to 10 x 10 the image would
    # be one third white; resized on its shorter side and centre-cropped it is all white.
    pixels = torch.zeros(10, 30, 3, dtype=torch.uint8)
    pixels[:, 10:20] = 255
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(pixels.numpy()).save(tmp_path / split / name / f"{i}.png")
    plain = load_data(str(tmp_path), image_size=10)
    assert plain.x_train.shape == (4, 3, 10, 10)
    assert torch.all(plain.x_train[:] == 1.0)  # type: ignore[index]
    halved = load_data(str(tmp_path), image_size=5, normalize="0.5,0.25")
    assert halved.x_train.shape == (4, 3, 5, 5)
    # (1 - 0.5) / 0.25 inside the square; its edge columns blend with the black sides.
    inside = halved.x_train[:, :, :, 1:4]  # type: ignore[index]
    assert torch.allclose(inside, torch.full_like(inside, 2.0))
    imagenet = load_data(str(tmp_path), image_size=10, normalize="imagenet")
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(imagenet.x_train[0, :, 0, 0], expected)  # type: ignore[index]
    assert imagenet.preprocessing["normalize"]["mean"] == [0.485, 0.456, 0.406]


def test_bad_normalize_values_are_refused_with_the_forms(tmp_path: Path) -> None:
    make_folder(tmp_path, 2)
    for bad in ("imagenett", "0.5", "0.5,0", "1,2,3"):
        with pytest.raises(DataError, match="imagenet, none or MEAN,STD"):
            load_data(str(tmp_path), normalize=bad)
    with pytest.raises(DataError, match="applies to image folders"):
        load_data("sklearn:wine", normalize="imagenet")


def test_the_model_s_own_normalisation_is_used_when_none_is_given(tmp_path: Path) -> None:
    make_folder(tmp_path, 2)
    model = tiny_cnn()
    model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # as timm models
    data = DataSpec(str(tmp_path)).load(model)
    assert data.preprocessing["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert DataSpec(str(tmp_path), normalize="none").load(model).preprocessing["normalize"] is None


def test_light_augmentation_crops_and_flips_per_sample_by_seed() -> None:
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    a = augment.light(x, torch.Generator().manual_seed(0))
    b = augment.light(x, torch.Generator().manual_seed(0))
    c = augment.light(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], x[0])  # changed, within the image's own value range
    assert a.min() >= x.min() and a.max() <= x.max()


def test_augment_is_a_space_parameter_that_trains_and_sits_out_on_tiny_inputs(
    tmp_path: Path,
) -> None:
    space = load_space({"augment": ["none", "light"], "lr": 0.01})
    assert space.params["augment"].choices == ("none", "light")
    with pytest.raises(SpaceError, match="heavy"):
        load_space({"augment": ["heavy"]})
    data = load_data(str(make_folder(tmp_path, 4)))
    with_aug = fine_tune(tiny_cnn(), data, TrialConfig(augment="light"), max_epochs=2, patience=5)
    without = fine_tune(tiny_cnn(), data, TrialConfig(), max_epochs=2, patience=5)
    assert with_aug.history[0]["train_loss"] != without.history[0]["train_loss"]
    digits = Job.from_objects(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), load_data("demo"))
    kept, notes = adapt_space(space, digits)
    assert "augment" not in kept.params and "16 px" in notes[0]


def test_fingerprint_is_stable_and_changes_with_a_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "a", 3)
    first = load_data(str(folder)).fingerprint()
    assert load_data(str(folder)).fingerprint() == first
    copy = shutil.copytree(folder, tmp_path / "b")  # another place, the same files
    assert load_data(str(copy)).fingerprint() == first
    assert load_data(str(folder), normalize="imagenet").fingerprint() != first
    image = folder / "train" / "red" / "1.png"
    Image.new("RGB", (16, 16), (255, 255, 255)).save(image)
    assert load_data(str(folder)).fingerprint() != first


MEASURE = """
import json, os, re, sys, torch
from torch import nn
from autotune.load.data import load_data
from autotune.trial.fit import evaluate
torch.set_num_threads(1)
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2))
peaks = []
for folder, limit_mb in ((sys.argv[1], "1"), (sys.argv[2], "1"), (sys.argv[2], "1000")):
    os.environ["AUTOTUNE_RESIDENT_MB"] = limit_mb
    data = load_data(folder, workers=0)
    evaluate(model, data.x_train, data.y_train)
    # VmHWM: the process's peak resident memory so far (ru_maxrss carries the parent's over exec)
    peak = int(re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1))
    peaks.append({"streamed": data.streamed, "peak_mb": peak / 1024})
    del data
print(json.dumps(peaks))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    # Both above one evaluation batch (128), so both runs decode full batches.
    small = make_folder(tmp_path / "small", 70, side=64)
    large = make_folder(tmp_path / "large", 350, side=64)  # 932 images: 46 MB as tensors
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(small), str(large)],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    small_run, large_run, resident_run = json.loads(done.stdout.splitlines()[-1])
    assert small_run["streamed"] and large_run["streamed"] and not resident_run["streamed"]
    # What streaming saves: held as tensors, the same images raise the peak by their 46 MB.
    assert resident_run["peak_mb"] - large_run["peak_mb"] > 40
    # Five times the images, streamed: the peak moves by allocator noise (8-17 MB seen), well
    # under half of what the added images cost when held as tensors.
    streamed_growth = large_run["peak_mb"] - small_run["peak_mb"]
    assert streamed_growth < (resident_run["peak_mb"] - small_run["peak_mb"]) / 2


def test_a_large_torch_dataset_streams_and_trains(tiny_limit: None) -> None:
    from torch.utils.data import TensorDataset

    from autotune.load.tasks import from_datasets

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, 16, 16, generator=g), torch.arange(40) % 2
    data = from_datasets(TensorDataset(x, y), workers=0)
    assert data.streamed and (len(data.x_train), len(data.x_val)) == (32, 8)
    assert from_datasets(TensorDataset(x, y), workers=0).fingerprint() == data.fingerprint()
    x[5] += 1  # one input changed: a sample of up to 64 inputs per split enters the fingerprint
    assert from_datasets(TensorDataset(x, y), workers=0).fingerprint() != data.fingerprint()
    result = fine_tune(tiny_cnn(), data, TrialConfig(batch_size=8), max_epochs=1, patience=1)
    assert result.epochs_run == 1 and math.isfinite(result.history[0]["train_loss"])


def test_a_nan_in_streamed_inputs_is_refused_up_front_like_a_resident_one(
    tiny_limit: None,
) -> None:
    from torch.utils.data import TensorDataset

    from autotune.load.tasks import from_datasets, from_tensors

    x, y = torch.rand(40, 3, 16, 16), torch.arange(40) % 2
    x[17, 1, 2, 3] = float("nan")
    said = r"x_train holds NaN or inf values \(first in sample 17\); clean or impute them first"
    with pytest.raises(DataError, match=said):
        from_tensors(x, y, x_val=x[:8].nan_to_num(), y_val=y[:8])
    with pytest.raises(DataError, match=said):  # before any search starts reading batches
        from_datasets(TensorDataset(x, y), TensorDataset(x[:8].nan_to_num(), y[:8]), workers=0)
    x[17] = 0.5
    assert from_datasets(TensorDataset(x, y), workers=0).streamed


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf"])
def test_a_resident_limit_that_is_no_size_is_named_in_one_line(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotune.errors import DataError
    from autotune.load.streams import resident_limit

    monkeypatch.setenv("AUTOTUNE_RESIDENT_MB", value)
    with pytest.raises(DataError, match=rf"^AUTOTUNE_RESIDENT_MB='{value}' is not a size in"):
        resident_limit()
    monkeypatch.setenv("AUTOTUNE_RESIDENT_MB", "0.5")
    assert resident_limit() == 2**19
