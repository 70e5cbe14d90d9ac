from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from autotune.errors import DataError, ModelLoadError
from autotune.load.data import load_data
from autotune.load.models import load_model

X = torch.randn(4, 8)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.allclose(a(X), b(X))


def test_torchscript_file_loads(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(tiny_model), str(path))
    loaded = load_model(path)
    assert loaded.format == "torchscript"
    assert _same_outputs(loaded.module, tiny_model)


def test_export_program_loads(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(tiny_model, (X,)), path)
    loaded = load_model(path)
    assert loaded.format == "export"
    assert _same_outputs(loaded.module, tiny_model)


def test_an_export_program_loads_in_the_form_its_trials_train(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    # A trial's model is a deep copy of the source, and a program's .module() loses its hooks
    # in one: a source that kept them was timed slower, so an unchanged model ran at 0.5x.
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(tiny_model, (X,)), path)
    source = load_model(path).module
    trial = copy.deepcopy(source)
    assert len(source._forward_pre_hooks) == len(trial._forward_pre_hooks)
    assert len(source._forward_hooks) == len(trial._forward_hooks)


def test_state_dict_with_module_arch(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "sd.pt"
    torch.save(tiny_model.state_dict(), path)
    loaded = load_model(path, arch="conftest:TinyNet")
    assert loaded.format == "state_dict" and loaded.arch == "conftest:TinyNet"
    assert _same_outputs(loaded.module, tiny_model)


def test_state_dict_with_torchvision_arch(tmp_path: Path) -> None:
    import torchvision

    net = torchvision.models.resnet18(num_classes=5).eval()
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": net.state_dict()}, path)  # a common checkpoint layout
    loaded = load_model(path, arch="torchvision:resnet18", num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x))


def test_state_dict_without_arch_says_to_pass_arch(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    path = tmp_path / "sd.pt"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(path)


def test_state_dict_of_another_arch_is_refused(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "sd.pt"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(
        ModelLoadError, match="do not fit --arch 'conftest:TinyNet' with --num-classes 7"
    ):
        load_model(path, arch="conftest:TinyNet", num_classes=7)


def test_pickled_module_needs_trust(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_model, path)
    with pytest.raises(ModelLoadError, match="--trust-model") as info:
        load_model(path)
    assert "runs code" in str(info.value)
    loaded = load_model(path, trust_model=True)
    assert loaded.format == "pickle"
    assert _same_outputs(loaded.module, tiny_model)


class _Payload:
    """Unpickling it creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(
    ("planted", "named"),
    [
        (lambda marker: _Payload(marker), "exec)"),  # a builtin function
        (lambda marker: torch.nn.ReLU(), "(torch.nn.modules.activation.ReLU)"),  # a class
    ],
    ids=["function", "class"],
)
def test_a_state_dict_holding_a_pickled_object_names_it_and_the_safe_ways(
    tmp_path: Path, planted: object, named: str
) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3), "bias": planted(marker)}, path)  # type: ignore[operator]
    with pytest.raises(ModelLoadError) as info:
        load_model(path, arch="torchvision:resnet18")
    message = str(info.value)
    assert "pickled Python object (" in message and named in message and "--trust-model" in message
    # torch's own advice (retry with weights_only=False) is the unsafe way: not repeated.
    assert "weights_only" not in message and "\n" not in message
    assert not marker.exists()


_USER_CODE = """
import torch
from torch import nn

class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x)

if __name__ == "__main__":
    import sys
    torch.save(UserNet(), sys.argv[1])
"""


def test_a_trusted_training_checkpoint_is_read_for_its_state_dict(tmp_path: Path) -> None:
    import argparse

    code = tmp_path / "usernet.py"
    code.write_text(_USER_CODE)
    arch = f"{code}:UserNet"
    weights = {"fc.weight": torch.randn(3, 8), "fc.bias": torch.randn(3)}
    path = tmp_path / "checkpoint.pt"
    # A training script's checkpoint: the weights beside the run's arguments.
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ModelLoadError, match=r"argparse.Namespace.*--trust-model"):
        load_model(path, arch=arch)
    loaded = load_model(path, arch=arch, trust_model=True)
    assert loaded.format == "state_dict"
    assert torch.equal(loaded.module.state_dict()["fc.weight"], weights["fc.weight"])
    torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ModelLoadError, match="neither a state_dict nor a module"):
        load_model(path, arch=arch, trust_model=True)


def test_pickled_module_from_user_script_loads_with_code(tmp_path: Path) -> None:
    code = tmp_path / "usernet.py"
    code.write_text(textwrap.dedent(_USER_CODE))
    path = tmp_path / "user.pt"
    # Saved from a script, the class is pickled as __main__.UserNet.
    subprocess.run([sys.executable, str(code), str(path)], check=True)
    with pytest.raises(ModelLoadError, match="--code"):
        load_model(path, trust_model=True)
    loaded = load_model(path, trust_model=True, code=code)
    assert type(loaded.module).__name__ == "UserNet"
    assert loaded.module(X).shape == (4, 3)


def test_arch_file_imports_the_module_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model file split in two, as a user's project often is: net.py imports blocks.py.
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "sibling_blocks.py").write_text(
        "from torch import nn\n\ndef block():\n    return nn.Linear(8, 3)\n"
    )
    (tmp_path / "sibling_net.py").write_text(
        "from torch import nn\nfrom sibling_blocks import block\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = block()\n\n"
        "    def forward(self, x):\n        return self.fc(x)\n"
    )
    weights = {"fc.weight": torch.ones(3, 8), "fc.bias": torch.zeros(3)}
    torch.save(weights, tmp_path / "net.pt")
    try:
        loaded = load_model(tmp_path / "net.pt", arch=f"{tmp_path / 'sibling_net.py'}:Net")
    finally:
        for name in ("sibling_net", "sibling_blocks"):  # no later test sees them imported
            sys.modules.pop(name, None)
    assert torch.allclose(loaded.module(X), X.sum(1, keepdim=True).expand(4, 3))  # its weights
    # The folder comes after the installed packages: a file there named like one never wins.
    assert sys.path.index(str(tmp_path.resolve())) == len(sys.path) - 1


def test_a_missing_arch_file_is_named_as_the_arch_option(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.ones(3, 8)}, tmp_path / "net.pt")
    missing = tmp_path / "nets.py"
    with pytest.raises(ModelLoadError, match=r"^--arch file .*nets\.py' does not exist"):
        load_model(tmp_path / "net.pt", arch=f"{missing}:Net")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a model at all", b"PK\x03\x04broken zip", b"hello", b"a,b,target\n1,2,0\n"],
)
def test_corrupt_file_gets_one_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"cannot read model file|damaged") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    # Not PyTorch's advice to load it with weights_only=False: that would run what it holds.
    assert "weights_only" not in str(info.value)
    if content in (b"not a model at all", b"hello", b"a,b,target\n1,2,0\n"):
        # A text or CSV file too: its unpickler fails as a KeyError or IndexError.
        assert "it is not a file torch.save wrote, or it is damaged" in str(info.value)
    if content == b"":
        assert "it is empty or cut short" in str(info.value)
    # The same file as data says the same.
    with pytest.raises(DataError, match="cannot read tensors file") as as_data:
        load_data(str(path))
    assert "weights_only" not in str(as_data.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_demo_model_loads_and_is_pretrained() -> None:
    loaded = load_model("demo")
    assert isinstance(loaded.module, torch.nn.Module) and not loaded.module.training
    assert loaded.arch == "autotune.load.demo:DigitsCNN"


@pytest.mark.parametrize(
    ("option", "flag"),
    [({"arch": "torchvision:resnet18"}, "--arch"), ({"num_classes": 5}, "--num-classes")],
)
def test_an_arch_or_class_count_given_with_the_demo_model_is_refused_before_it_loads(
    option: dict, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autotune.load.demo
    from autotune.load.job import ModelSpec

    def loaded() -> None:
        raise AssertionError("the demo model was loaded")

    monkeypatch.setattr(autotune.load.demo, "demo_files", loaded)
    with pytest.raises(
        ModelLoadError, match=f"{flag} .* does not apply to --model demo"
    ) as refused:
        ModelSpec("demo", **option).load()  # the Python API's way to pass them
    assert f"drop {flag}, or give a model file" in str(refused.value)


def test_a_demo_study_that_recorded_an_arch_is_rebuilt_without_it() -> None:
    from autotune.load.job import Job

    arch = {"arch": "torchvision:resnet18", "num_classes": 10}
    job = Job.from_record({"model": {"path": "demo", **arch}, "data": {"spec": "demo"}})
    assert job.model.arch == "autotune.load.demo:DigitsCNN"


OWN_NETWORK = {
    "torchscript": "a TorchScript archive",
    "export": "a torch.export program",
    "pickle": "a pickled module",
}


def _save_whole(kind: str, model: torch.nn.Module, folder: Path) -> Path:
    """``model`` in a file of format ``kind``: one that holds its network, not only weights."""
    path = folder / f"m.{'pt2' if kind == 'export' else 'pt'}"
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    elif kind == "export":
        batch = ({0: torch.export.Dim.AUTO},)
        torch.export.save(torch.export.export(model, (X,), dynamic_shapes=batch), path)
    else:
        torch.save(model, path)
    return path


@pytest.mark.parametrize("kind", list(OWN_NETWORK))
@pytest.mark.parametrize(
    "option", [["--arch", "torchvision:resnet18"], ["--num-classes", "5"]], ids=["arch", "classes"]
)
def test_an_arch_or_class_count_given_with_a_model_that_holds_its_network_is_refused(
    kind: str, option: list[str], tiny_model: torch.nn.Module, tensors_file: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from autotune.cli import app

    path, out = _save_whole(kind, tiny_model, tmp_path), tmp_path / "out"
    trust = ["--trust-model"] if kind == "pickle" else []
    args = ["search", "--model", str(path), *option, *trust, "--data", str(tensors_file)]
    result = CliRunner().invoke(app, [*args, "--trials", "1", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    flag, value = option[0], repr(option[1]) if option[0] == "--arch" else option[1]
    said = f"{flag} {value} does not apply to model {str(path)!r} ({OWN_NETWORK[kind]} holds its"
    assert line.startswith(f"error: {said} own architecture")
    assert line.endswith(f": drop {flag}")
    assert not out.exists()  # refused as the model loads, before the data, analysis or study


@pytest.mark.parametrize("kind", list(OWN_NETWORK))
def test_a_study_that_recorded_an_arch_its_model_never_used_is_rebuilt_without_it(
    kind: str, tiny_model: torch.nn.Module, tensors_file: Path, tmp_path: Path
) -> None:
    """Studies searched before --arch was refused for these formats stored it, ignored: export
    rebuilds them without it, and without asking to trust the code it names."""
    from autotune.load.job import Job

    path = _save_whole(kind, tiny_model, tmp_path)
    model = {"path": str(path), "format": kind, "arch": "net.py:Net", "num_classes": 3}
    job = Job.from_record(
        {"model": model, "data": {"spec": str(tensors_file)}}, trust_model=kind == "pickle"
    )
    assert job.model.format == kind and job.model.arch is None
    assert _same_outputs(job.model.module, tiny_model)


def test_the_command_line_names_the_pickled_object_of_a_state_dict(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autotune.cli import app

    marker = tmp_path / "ran"
    path = tmp_path / "weights.pt"
    torch.save({"conv1.weight": _Payload(marker)}, path)
    args = ["search", "--model", str(path), "--arch", "torchvision:resnet18", "--data", "demo"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "pickled Python object (" in line and "exec" in line
    assert "--trust-model" in line and "weights_only" not in line
    assert not marker.exists() and not (tmp_path / "out" / "study.journal").exists()


def test_a_folder_given_as_the_model_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model file '.*' is a folder: pass the path of a"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("arch", "refusal"),
    [
        (":Net", r"^--arch ':Net' is not of the form torchvision:NAME"),
        ("{file}:", r"^--arch '.*nets\.py:' is not of the form torchvision:NAME"),
        ("{file}:Broken", r"^--arch '.*:Broken': cannot build it with \{\}: RuntimeError: no GPU"),
    ],
)
def test_an_arch_with_no_module_or_class_or_whose_class_fails_is_one_line(
    tmp_path: Path, arch: str, refusal: str
) -> None:
    torch.save({"fc.weight": torch.ones(3, 8)}, tmp_path / "net.pt")
    file = tmp_path / "nets.py"
    file.write_text(
        "class Broken:\n    def __init__(self):\n        raise RuntimeError('no GPU')\n"
    )
    try:
        with pytest.raises(ModelLoadError, match=refusal):
            load_model(tmp_path / "net.pt", arch=arch.format(file=file))
    finally:
        sys.modules.pop("nets", None)  # no later test sees it imported


@pytest.mark.parametrize("count", [-1, 0, 1])
def test_a_class_count_under_two_is_refused_before_the_network_is_built(
    tmp_path: Path, count: int
) -> None:
    torch.save({"fc.weight": torch.ones(3, 8)}, tmp_path / "net.pt")
    with pytest.raises(ModelLoadError, match=rf"^--num-classes {count}: a classifier tells 2 or"):
        load_model(tmp_path / "net.pt", arch="torchvision:resnet18", num_classes=count)


def test_a_code_file_that_calls_sys_exit_is_named_not_left_to_end_autotune(tmp_path: Path) -> None:
    from autotune.load.architecture import import_code

    script = tmp_path / "train_script.py"
    script.write_text("import sys\nsys.exit(3)  # a training script's end\n")
    try:
        with pytest.raises(ModelLoadError, match=r"^importing --code file .* failed: SystemExit"):
            import_code(script)
    finally:
        sys.modules.pop("train_script", None)


def _said_of_model(path: Path, *flags: str) -> str:
    """The one line ``autotune search --model PATH`` says of a model file it refuses."""
    from typer.testing import CliRunner

    from autotune.cli import app

    args = ["search", "--model", str(path), "--data", "demo", *flags]
    result = CliRunner().invoke(app, [*args, "--out", str(path.parent / "out")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert not (path.parent / "out").exists()
    return line


@pytest.mark.parametrize("arch", [None, "conftest:TinyNet"])
def test_a_data_file_given_as_the_model_is_called_a_data_file(
    tmp_path: Path, arch: str | None
) -> None:
    # It read as a state_dict (tensors by name): "holds only weights (a state_dict): pass
    # --arch", or with --arch, "the weights do not fit".
    path = tmp_path / "data.pt"
    torch.save({"x_train": torch.randn(6, 8), "y_train": torch.arange(6) % 3}, path)
    assert _said_of_model(path, *(["--arch", arch] if arch else [])) == (
        f"error: model file {str(path)!r} looks like a data file (it holds x_train and y_train), "
        "not a model: pass it as --data, and the model as --model"
    )


def test_a_zip_archive_pytorch_did_not_write_is_one_line_naming_the_formats(
    tmp_path: Path,
) -> None:
    import numpy as np

    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    # It was torch's "cannot read model file ...: [enforce fail at inline_container.cc:180] .
    # file in archive is not in a subdirectory: hello.txt".
    assert _said_of_model(path) == (
        f"error: model file {str(path)!r} is a zip archive that PyTorch did not write (it holds "
        "hello.txt): pass a model saved with torch.save (a state_dict or a module), "
        "torch.jit.save or torch.export.save"
    )
    data = tmp_path / "data.npz"  # a zip of .npy files
    np.savez(data, x_train=np.zeros((6, 8)), y_train=np.zeros(6))
    assert "looks like a data file (it holds x_train and y_train)" in _said_of_model(data)


@pytest.mark.parametrize(
    ("saved", "kind"),
    [({}, "dict"), (OrderedDict(), "OrderedDict"), ({"state_dict": OrderedDict()}, "OrderedDict")],
)
def test_an_empty_state_dict_is_said_to_hold_no_weights(
    tmp_path: Path, saved: object, kind: str
) -> None:
    path = tmp_path / "empty.pt"
    torch.save(saved, path)
    # It was "holds a OrderedDict that is neither a state_dict nor a module".
    assert _said_of_model(path) == (
        f"error: model file {str(path)!r} holds no weights (an empty {kind}): save "
        "model.state_dict() of the trained network, or the module itself"
    )


def test_what_is_neither_a_state_dict_nor_a_module_is_named_with_its_article(
    tmp_path: Path,
) -> None:
    torch.save(3, tmp_path / "int.pt")
    with pytest.raises(ModelLoadError, match=r"holds an int that is neither a state_dict nor a"):
        load_model(tmp_path / "int.pt")
