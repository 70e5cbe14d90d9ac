from __future__ import annotations

import torch
from torch import nn

from autotune.config import TrialConfig
from autotune.load.anatomy import layers
from autotune.load.demo import DigitsCNN
from autotune.trial.freeze import apply, unfreeze


def test_norm_layers_travel_with_the_layer_before() -> None:
    names = [(layer.name, layer.modules) for layer in layers(DigitsCNN())]
    assert names[0] == ("features.0", ("features.0", "features.1"))
    assert [n for n, _ in names] == ["features.0", "features.3", "features.7", "head.1", "head.3"]


def test_unfreeze_trains_only_the_last_k_layers() -> None:
    model = DigitsCNN()
    chosen = unfreeze(model, 2)
    assert chosen == ["head.1", "head.3"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias"}
    unfreeze(model, None)
    assert all(p.requires_grad for p in model.parameters())


def test_dropout_is_inserted_before_the_classifier_and_the_source_is_untouched() -> None:
    source = DigitsCNN().eval()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    model = apply(source, TrialConfig(dropout=0.3, unfreeze=1))
    head = model.head[3]
    assert isinstance(head, nn.Sequential) and isinstance(head[0], nn.Dropout) and head[0].p == 0.3
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), source(x))  # dropout is the identity in eval mode
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    assert all(p.requires_grad for p in source.parameters())


def test_existing_dropout_is_adjusted_not_duplicated() -> None:
    source = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    model = apply(source, TrialConfig(dropout=0.4))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.4


def test_a_bare_linear_model_cannot_take_dropout() -> None:
    from torch import nn

    from autotune.trial.freeze import can_set_dropout

    assert not can_set_dropout(nn.Linear(4, 2))
    assert can_set_dropout(nn.Sequential(nn.Linear(4, 2)))
