from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyNet, blobs

from autotune.errors import DataError, ModelLoadError
from autotune.load.data import check_model_fits, load_data
from autotune.load.tasks import carve, from_tensors


def test_tensors_file_with_all_splits(tensors_file: Path) -> None:
    data = load_data(str(tensors_file))
    assert data.x_test is not None
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (160, 40, 40)
    assert data.y_train.dtype == torch.int64 and data.x_train.dtype == torch.float32


def test_npz_file_carves_a_validation_split_by_seed(tmp_path: Path) -> None:
    x, y = blobs(100)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x.numpy(), y_train=y.numpy().astype(np.float64))
    a, b = load_data(str(path)), load_data(str(path))
    assert (len(a.x_train), len(a.x_val)) == (80, 20)
    assert torch.equal(a.x_val, b.x_val)  # the same split every time
    assert not torch.equal(a.x_val, load_data(str(path), split_seed=1).x_val)


def test_csv_with_named_target_and_string_classes(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = ["f1,f2,kind"] + [
        f"{i % 7},{(i * 3) % 5},{'cat' if i % 2 else 'dog'}" for i in range(50)
    ]
    path.write_text("\n".join(rows))
    data = load_data(str(path), target="kind")
    assert data.classes == ["cat", "dog"]
    assert data.feature_names == ["f1", "f2"]
    assert data.x_train.shape[1] == 2 and len(data.x_train) + len(data.x_val) == 50


def test_csv_without_target_column_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="--target"):
        load_data(str(path))


def test_a_csv_with_a_header_and_no_rows_says_so(tmp_path: Path) -> None:
    # Its empty columns read as text: the error named a "not numeric" feature column.
    path = tmp_path / "d.csv"
    path.write_text("a,b,target\n")
    with pytest.raises(DataError, match=r"^CSV file '.*d\.csv' has no rows under its header"):
        load_data(str(path))


def test_a_csv_of_labels_alone_says_it_has_no_feature_columns(tmp_path: Path) -> None:
    # The model's forward pass failed on inputs of shape (0,) instead.
    path = tmp_path / "d.csv"
    path.write_text("kind\n" + "yes\nno\n" * 10)
    with pytest.raises(DataError, match=r"has no feature columns beside its label column 'kind'"):
        load_data(str(path), target="kind")


def test_image_folder_loads_with_model_channels(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 10), colour).save(folder / f"{i}.png")
    data = load_data(str(tmp_path), image_size=8, channels=3)
    assert data.classes == ["blue", "red"]
    assert data.x_train.shape == (6, 3, 8, 8) and data.x_val.shape == (6, 3, 8, 8)
    red = data.x_train[data.y_train == 1][0]
    assert red[0].mean() > 0.9 and red[2].mean() < 0.1
    gray = load_data(str(tmp_path), image_size=8, channels=1)
    assert gray.x_train.shape == (6, 1, 8, 8)


@pytest.mark.parametrize("side", [0, -5, 100_000])
def test_an_image_size_that_is_no_side_is_refused_in_one_line(tmp_path: Path, side: int) -> None:
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (12, 10)).save(tmp_path / c / "0.png")
    with pytest.raises(DataError, match=f"--image-size {side} is not a side in pixels: give one"):
        load_data(str(tmp_path), image_size=side)


@pytest.mark.parametrize(
    "name,shape,classes",
    [("digits", (1, 8, 8), 10), ("wine", (13,), 3), ("breast_cancer", (30,), 2)],
)
def test_sklearn_sets(name: str, shape: tuple[int, ...], classes: int) -> None:
    data = load_data(f"sklearn:{name}")
    assert tuple(data.x_train.shape[1:]) == shape and data.num_classes == classes
    assert data.x_test is not None and len(data.x_test) > 0


def test_demo_data_is_shifted_digits() -> None:
    data = load_data("demo")
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_test is not None
    assert set(data.y_train.tolist()) == set(range(10))


def _file(tmp_path: Path, **arrays: object) -> str:
    path = tmp_path / "bad.pt"
    torch.save(arrays, path)
    return str(path)


def test_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"lacks \['y_train'\]"):
        load_data(_file(tmp_path, x_train=torch.zeros(4, 2)))


def test_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="x_train has 4 samples but y_train has 3"):
        load_data(_file(tmp_path, x_train=torch.zeros(4, 2), y_train=torch.zeros(3)))


def test_nan_inputs_name_the_sample(tmp_path: Path) -> None:
    x = torch.zeros(10, 2)
    x[7, 1] = float("nan")
    with pytest.raises(DataError, match="NaN or inf values \\(first in sample 7\\)"):
        load_data(_file(tmp_path, x_train=x, y_train=torch.zeros(10, dtype=torch.long)))


def test_non_integer_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"non-integer labels \(e\.g\. 0\.5\)"):
        load_data(
            _file(tmp_path, x_train=torch.zeros(5, 2), y_train=torch.tensor([0, 1, 0.5, 1, 0]))
        )


def test_negative_labels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="negative label -1"):
        load_data(
            _file(tmp_path, x_train=torch.zeros(5, 2), y_train=torch.tensor([0, 1, -1, 1, 0]))
        )


def test_empty_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the val split is empty"):
        load_data(
            _file(
                tmp_path,
                x_train=torch.zeros(5, 2),
                y_train=torch.zeros(5),
                x_val=torch.zeros(0, 2),
                y_val=torch.zeros(0),
            )
        )


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_text("x")
    with pytest.raises(DataError, match=r"unknown format '\.parquet'"):
        load_data(str(tmp_path / "d.parquet"))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nope.pt"))


def test_labels_out_of_the_models_range(tiny_model: torch.nn.Module) -> None:
    x, y = blobs(30)
    y[5] = 4  # TinyNet has 3 outputs
    data = from_tensors(x, y)
    with pytest.raises(DataError, match="label 4 but the model outputs only 3 class scores"):
        check_model_fits(tiny_model, data)


def test_input_shape_mismatch(tiny_model: torch.nn.Module) -> None:
    data = from_tensors(torch.randn(30, 5), torch.zeros(30, dtype=torch.long))
    with pytest.raises(DataError, match=r"cannot take inputs of shape \(5,\)"):
        check_model_fits(tiny_model, data)


def test_output_width_must_match_named_classes() -> None:
    x, y = blobs(30)
    data = from_tensors(x, y, classes=["a", "b", "c", "d"])
    with pytest.raises(
        DataError, match="outputs 3 class scores but data '<in memory>' has 4 classes"
    ):
        check_model_fits(TinyNet().eval(), data)
    assert check_model_fits(TinyNet(4).eval(), data) == 4


@pytest.mark.parametrize(("key", "meant"), [("x_vall", "x_val"), ("X_test", "x_test")])
def test_a_misspelt_split_is_refused_not_dropped(tmp_path: Path, key: str, meant: str) -> None:
    x, y = blobs(40)
    other = "y" + meant[1:]
    torch.save({"x_train": x, "y_train": y, key: x[:10], other: y[:10]}, tmp_path / "d.pt")
    with pytest.raises(
        DataError,
        match=f"has '{key}', which is not a split autotune reads \\(did you mean '{meant}'",
    ):
        load_data(str(tmp_path / "d.pt"))


def test_training_labels_of_one_class_are_refused(tiny_model: torch.nn.Module) -> None:
    x, _ = blobs(30)
    data = from_tensors(x, torch.zeros(30, dtype=torch.long), classes=["cat", "dog", "owl"])
    with pytest.raises(
        DataError, match="every training label is class 'cat'; a classifier needs samples of"
    ):
        check_model_fits(tiny_model, data)


def test_a_model_with_one_class_score_is_refused() -> None:
    x, y = blobs(30)
    with pytest.raises(DataError, match="the model outputs 1 class score per sample"):
        check_model_fits(TinyNet(1).eval(), from_tensors(x, y % 2))


def test_torch_datasets_become_task_data(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from torch.utils.data import TensorDataset

    from autotune import from_datasets, make_job

    x, y = blobs()
    data = from_datasets(TensorDataset(x[:200], y[:200]), test=TensorDataset(x[200:], y[200:]))
    assert len(data.x_train) + len(data.x_val) == 200 and len(data.x_test) == 40
    job = make_job(tiny_model, TensorDataset(x, y))  # a Dataset straight into the API
    assert job.num_classes == 3 and len(job.data.x_val) == 48
    with pytest.raises(DataError, match="the training dataset must give"):
        from_datasets([(torch.zeros(2), 0), (torch.zeros(3), 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("fraction", "train", "val"), [(0.999, 0, 30), (0.001, 30, 0)])
def test_a_val_fraction_that_empties_a_split_says_what_it_leaves(
    fraction: float, train: int, val: int
) -> None:
    x, y = blobs(30)
    with pytest.raises(
        DataError, match=f"a {fraction:g} split of 30 samples leaves {train} to train on and {val}"
    ):
        carve(x, y, fraction, seed=0)


@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        ({"image_size": 32}, "--image-size 32 applies to image folders; data 'demo' is not one"),
        ({"target": "label"}, "--target label applies to CSV files; data 'demo' is not one"),
        ({"workers": -1}, "--loader-workers must be 0 or more, got -1"),
    ],
)
def test_an_option_for_another_kind_of_data_is_refused(option: dict, refusal: str) -> None:
    with pytest.raises(DataError, match=refusal):
        load_data("demo", **option)


def test_data_of_another_shape_than_the_model_takes_is_named_with_its_shape() -> None:
    # An MLP of 8 features given 1x8x8 images maps the last axis and returns no (N, C) rows.
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 3)).eval()
    with pytest.raises(
        DataError, match=r"returns \(2, 1, 8, 3\) for a batch of 2 inputs of shape \(1, 8, 8\)"
    ) as refused:
        check_model_fits(mlp, load_data("demo"))
    assert "check that the data is what the model takes" in str(refused.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_model_whose_weights_hold_nan_or_inf_is_refused_before_the_search(bad: float) -> None:
    x, y = blobs(30)
    model = TinyNet().eval()
    with torch.no_grad():
        model.out.bias[0] = bad  # a damaged file's weights
    with pytest.raises(
        ModelLoadError, match="the model returns NaN or inf class scores for finite inputs"
    ):
        check_model_fits(model, from_tensors(x, y))


@pytest.mark.parametrize(
    "keys", [{1: "x", "y_train": "y"}, {"x_train": "x", "y_train": "y", 0: "x"}]
)
def test_a_tensors_file_with_keys_that_are_not_strings_is_read_or_refused_in_one_line(
    tmp_path: Path, keys: dict
) -> None:
    x, y = blobs(30)
    torch.save({k: {"x": x, "y": y}[v] for k, v in keys.items()}, tmp_path / "d.pt")
    if "x_train" in keys:  # the other keys are not splits: left aside, as any such key is
        assert load_data(str(tmp_path / "d.pt")).x_train.shape[1:] == (8,)
        return
    with pytest.raises(DataError, match=r"lacks \['x_train'\]; it has \['1', 'y_train'\]"):
        load_data(str(tmp_path / "d.pt"))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.uint8, torch.int32, torch.int64])
def test_integer_inputs_of_any_width_are_read_as_float(tmp_path: Path, dtype: torch.dtype) -> None:
    x, y = blobs(30)
    torch.save({"x_train": (x * 10).to(dtype), "y_train": y}, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"))
    assert data.x_train.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_inputs_that_are_no_real_numbers_are_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    x, y = blobs(30)
    torch.save({"x_train": x.to(dtype), "y_train": y}, tmp_path / "d.pt")
    with pytest.raises(DataError, match=f"x_train has dtype {dtype}; inputs must be real numbers"):
        load_data(str(tmp_path / "d.pt"))


def test_a_sparse_tensor_in_a_tensors_file_is_read_as_dense(tmp_path: Path) -> None:
    x, y = blobs(30)
    torch.save({"x_train": x.to_sparse(), "y_train": y.to_sparse()}, tmp_path / "d.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's note on checking sparse tensors is not printed
        data = load_data(str(tmp_path / "d.pt"))
    assert data.x_train.layout == torch.strided
    assert torch.equal(torch.cat([data.x_train, data.x_val]).sort(0).values, x.sort(0).values)


class _Buffered(torch.nn.Module):
    """Its weights a buffer, not a parameter: nothing an optimizer can train."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_a_model_without_parameters_is_refused_before_the_search() -> None:
    x, y = blobs(30)
    with pytest.raises(ModelLoadError, match=r"^the model has no parameters, so there is nothing"):
        check_model_fits(_Buffered().eval(), from_tensors(x, y))


@pytest.mark.parametrize("content", [b"hello", b"x_train,y_train\n1,0\n", "npy"])
def test_a_npz_file_that_is_no_archive_is_refused_without_advice_to_unpickle(
    tmp_path: Path, content: bytes | str
) -> None:
    path = tmp_path / "d.npz"
    if content == "npy":  # np.save's output, renamed
        with path.open("wb") as f:
            np.save(f, np.zeros((4, 2)))
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"it is not a \.npz archive, or it is damaged") as e:
        load_data(str(path))
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_datasets_fractional_labels_are_refused_not_truncated(
    streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.utils.data import TensorDataset

    from autotune.load import tasks

    if streamed:  # too large to hold: its labels are read apart from its inputs
        monkeypatch.setattr(tasks, "resident_limit", lambda: 0)
    x, y = blobs(40)
    with pytest.raises(DataError, match=r"non-integer labels \(e\.g\. 0\.5\)"):
        tasks.from_datasets(TensorDataset(x, y.float() + 0.5))  # int() read 1.5 as class 1
    # Labels of shape (1,), as some Datasets give them, are still class indices.
    data = tasks.from_datasets(TensorDataset(x, y.unsqueeze(1)))
    assert torch.equal(torch.cat([data.y_train, data.y_val]).sort().values, y.sort().values)


@pytest.mark.parametrize(
    ("model", "data", "refusal"),
    [
        (None, "sklearn:wine", r"^model= of type 'NoneType' is no model: pass a model file path"),
        ("MODEL", ("x", "y"), r"^data= of type 'tuple' is no data: pass .*autotune\.from_tensors"),
        ("MODEL", {"x_train": 0}, r"^data= of type 'dict' is no data"),
    ],
)
def test_the_python_api_names_a_model_or_data_of_the_wrong_type(
    model: object, data: object, refusal: str
) -> None:
    from autotune import AutotuneError, make_job

    model = TinyNet().eval() if model == "MODEL" else model
    with pytest.raises(AutotuneError, match=refusal):
        make_job(model, data)  # type: ignore[arg-type]


def test_the_python_api_takes_the_data_as_a_path(tmp_path: Path) -> None:
    from autotune import make_job

    x, y = blobs(40)
    torch.save({"x_train": x, "y_train": y}, tmp_path / "d.pt")
    job = make_job(TinyNet().eval(), tmp_path / "d.pt")  # as model= takes one
    assert job.data.spec == str(tmp_path / "d.pt") and job.data_spec is not None
