"""Tests for labkit.features (no real VGG weights: a random state dict stands in for
torchvision's vgg19-dcbb9e9d.pth)."""
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit import features as lf
from labkit.features import JudgeFeatures, VGG19Features, load_feature_extractor

CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-style file: random conv weights plus classifier.* keys."""
    torch.manual_seed(0)
    state = VGG19Features().state_dict()
    state["classifier.0.weight"] = torch.randn(8, 4)
    state["classifier.0.bias"] = torch.randn(8)
    state["classifier.6.weight"] = torch.randn(3, 8)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg(vgg_file):
    return VGG19Features.from_weights(vgg_file[0])


class StubJudge(nn.Module):
    feature_names = ("enc1", "enc2")
    source = "stub-judge.pt"

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def encoder_features(self, images):
        x = self.bn(self.a(images))
        return [x, self.b(x)]


@pytest.fixture
def stub_judge_module(monkeypatch):
    mod = types.ModuleType("labkit.judge")
    mod.calls = []

    def load_judge(path=None, device="cpu"):
        mod.calls.append(device)
        return StubJudge().to(device)

    mod.load_judge = load_judge
    monkeypatch.setitem(sys.modules, "labkit.judge", mod)
    return mod


def test_state_dict_keys_are_torchvision_names():
    keys = set(VGG19Features().state_dict())
    expected = {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    assert keys == expected
    weights = sorted(int(k.split(".")[1]) for k in keys if k.endswith("weight"))
    assert weights == CONV_INDICES


def test_from_weights_loads_saved_values_and_ignores_classifier(vgg, vgg_file):
    path, state = vgg_file
    loaded = vgg.state_dict()
    assert set(loaded) == {k for k in state if k.startswith("features.")}
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    assert vgg.source == str(path)
    assert vgg.describe() == {"name": "vgg19", "layers": list(lf.CRN_LAYERS), "source": str(path)}


def test_output_shapes_of_crn_layers(vgg):
    out = vgg(torch.rand(2, 3, 64, 128))
    assert vgg.layer_names == ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
    shapes = [tuple(t.shape) for t in out]
    assert shapes == [(2, 64, 64, 128), (2, 128, 32, 64), (2, 256, 16, 32),
                      (2, 512, 8, 16), (2, 512, 4, 8)]


def test_features_are_after_relu_of_normalised_input(vgg):
    x = torch.rand(1, 3, 16, 16)
    f = vgg.features
    xn = (x - torch.tensor(lf.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(lf.IMAGENET_STD).view(1, 3, 1, 1)
    conv1_2 = F.relu(f[2](F.relu(f[0](xn))))
    conv2_1 = F.relu(f[5](F.avg_pool2d(conv1_2, 2)))
    model = VGG19Features(layers=("conv1_2", "relu2_1"))
    model.load_state_dict(vgg.state_dict())
    a, b = model(x)
    assert torch.allclose(a, conv1_2, atol=1e-5)
    assert torch.allclose(b, conv2_1, atol=1e-5)
    assert (b >= 0).all()


def test_pool_option():
    assert isinstance(VGG19Features().features[4], nn.AvgPool2d)  # default avg, as CRN
    maxed = VGG19Features(layers=("conv1_1",), pool="max")
    assert all(isinstance(maxed.features[i], nn.MaxPool2d) for i in (4, 9, 18, 27, 36))
    with pytest.raises(ValueError, match="pool"):
        VGG19Features(pool="median")


def test_runs_only_as_deep_as_deepest_layer():
    model = VGG19Features(layers=("conv2_1",))
    seen = []
    for i, layer in enumerate(model.features):
        layer.register_forward_hook(lambda m, inp, out, i=i: seen.append(i))
    out = model(torch.rand(1, 3, 8, 8))
    assert max(seen) == 6 and len(out) == 1 and out[0].shape == (1, 128, 4, 4)


def test_unknown_layer_name():
    with pytest.raises(ValueError, match="conv3_5"):
        VGG19Features(layers=("conv3_5",))


def test_gradients_reach_input_not_parameters(vgg):
    assert not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    vgg.train()  # a parent model's .train() must not unfreeze or change mode
    assert not vgg.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(f.square().mean() for f in vgg(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())


@pytest.mark.parametrize("bad", [torch.rand(2, 1, 32, 32), torch.rand(3, 32, 32),
                                 torch.rand(2, 4, 32, 32)])
def test_bad_input_shape(vgg, bad):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*" + re.escape(str(tuple(bad.shape)))):
        vgg(bad)


def test_bad_input_range_dtype_and_size(vgg):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vgg(torch.rand(1, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match="float"):
        vgg(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ValueError, match="too small"):
        vgg(torch.rand(1, 3, 8, 8))


def test_missing_file_names_path(tmp_path, monkeypatch):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        VGG19Features.from_weights(path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    hub = tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(hub))):
        VGG19Features.from_weights()
    with pytest.raises(FileNotFoundError, match=re.escape(str(hub))):
        load_feature_extractor("vgg19", verbose=False)


def test_corrupt_file_names_file(tmp_path):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a valid state dict"):
        VGG19Features.from_weights(path)
    torch.save([torch.zeros(1)], path)  # readable, but not a state dict
    with pytest.raises(lf.WeightsFileError, match="not a valid state dict"):
        VGG19Features.from_weights(path)


def test_wrong_shape_and_missing_keys_are_named(tmp_path, vgg_file):
    state = dict(vgg_file[1])
    state["features.10.weight"] = torch.zeros(256, 128, 1, 1)
    del state["features.34.bias"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        VGG19Features.from_weights(path)
    msg = str(err.value)
    assert "features.10.weight" in msg and "(256, 128, 3, 3)" in msg
    assert "features.34.bias" in msg and "(512,)" in msg


def test_unknown_kind():
    with pytest.raises(ValueError, match="auto.*vgg19.*judge"):
        load_feature_extractor("alexnet")


def test_auto_falls_back_to_judge(tmp_path, monkeypatch, stub_judge_module, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ext = load_feature_extractor("auto")
    assert isinstance(ext, JudgeFeatures) and stub_judge_module.calls == ["cpu"]
    assert "judge" in capsys.readouterr().out and ext.source == "stub-judge.pt"
    assert ext.describe() == {"name": "judge", "layers": ["enc1", "enc2"], "source": "stub-judge.pt"}
    assert all(not p.requires_grad for p in ext.parameters()) and not ext.judge.training
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = ext(x)
    ref = ext.judge.encoder_features(x)
    assert [o.shape for o in out] == [(2, 4, 16, 16), (2, 6, 8, 8)]
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    out[1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_auto_prefers_vgg_in_hub_cache(tmp_path, monkeypatch, stub_judge_module, vgg_file, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth").symlink_to(vgg_file[0])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ext = load_feature_extractor("auto", layers=("conv1_2",))
    assert isinstance(ext, VGG19Features) and stub_judge_module.calls == []
    assert "VGG-19" in capsys.readouterr().out


def test_judge_layer_selection(stub_judge_module):
    judge = StubJudge()
    ext = JudgeFeatures(judge, layers=("enc2",))
    assert ext.layer_names == ("enc2",) and ext(torch.rand(1, 3, 8, 8))[0].shape == (1, 6, 4, 4)
    with pytest.raises(ValueError, match="enc1"):
        JudgeFeatures(StubJudge(), layers=("enc9",))
