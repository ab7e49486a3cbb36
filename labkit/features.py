"""Features for perceptual losses (CRN's feature matching, SRN's ID-MRF, SemIA's patch loss).

Every extractor takes images (N, 3, H, W), float in [0, 1], and returns a list of
feature maps, one (N, C_i, H_i, W_i) tensor per requested layer, in the order the
layers were asked for. Its parameters are frozen and it stays in eval mode, but it
is differentiable with respect to the images, so it can sit inside a loss.

Two sources exist:

* ``VGG19Features``: ImageNet VGG-19, as the papers used. Needs torchvision's weight
  file ``vgg19-dcbb9e9d.pth`` supplied by hand (nothing is downloaded here).
* ``JudgeFeatures``: the encoder of the course's judge segmentation network, the
  offline default when no VGG weights are present.

``load_feature_extractor`` picks one and prints which, so each run records it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checks import check_device, check_non_empty, check_path
from .data.validation import check_images as _check_images

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's file name for ImageNet VGG-19
CRN_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# VGG-19 ("E" config): output channels of each conv, "M" = 2x2 pooling with stride 2.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
             512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
KINDS = ("auto", "vgg19", "judge")


class WeightsFileError(ValueError):
    """A weight file exists but cannot be read as a state dict."""


def check_images(images, name: str = "images") -> torch.Tensor:
    """Raise ValueError unless ``images`` is a float (N, 3, H, W) tensor in [0, 1] with N ≥ 1."""
    return _check_images(images, name, ndim=(4,), non_empty=True)


def _layer_names(layers, default, available, what: str, hint: str) -> tuple[str, ...]:
    """``layers`` as a tuple of names from ``available``: one name, a non-empty sequence, or None (``default``)."""
    if layers is None:
        return tuple(default)
    layers = tuple(check_non_empty((layers,) if isinstance(layers, str) else layers, "layers"))
    bad = [n for n in layers if not isinstance(n, str) or n not in available]
    if bad:
        raise ValueError(f"layers has unknown {what} layer(s) {bad}; {hint}")
    return layers


class FeatureExtractor(nn.Module):
    """Base class: frozen, always in eval mode, differentiable w.r.t. its input.

    Attributes: ``name`` ("vgg19" or "judge"), ``layer_names`` (the layers returned,
    in order) and ``source`` (where the weights came from).
    """

    name: str = ""

    def __init__(self, layer_names, source: str):
        super().__init__()
        self.layer_names = tuple(layer_names)
        self.source = str(source)

    def freeze(self) -> "FeatureExtractor":
        """Stop parameter gradients and switch to eval mode (call at the end of __init__)."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True):
        """Ignore ``mode``: a loss network must not switch batch norm or dropout to training
        when the generator that owns it calls ``.train()``."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.extract(check_images(images))

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Provenance for run records: {"name", "layers", "source"}."""
        return {"name": self.name, "layers": list(self.layer_names), "source": self.source}


def _vgg19_layer_index() -> dict[str, tuple[int, int]]:
    """Map "convB_K"/"reluB_K" to (index in ``features`` of that conv's ReLU, block B)."""
    index, i, block, k = {}, 0, 1, 1
    for v in VGG19_CFG:
        if v == "M":
            i, block, k = i + 1, block + 1, 1
        else:
            index[f"conv{block}_{k}"] = index[f"relu{block}_{k}"] = (i + 1, block)
            i, k = i + 2, k + 1
    return index


class VGG19Features(FeatureExtractor):
    """The conv stack of ImageNet VGG-19, under the state-dict keys torchvision uses.

    ``features`` is the nn.Sequential of torchvision's ``vgg19().features``: index 0
    is conv1_1, 1 its ReLU, 2 conv1_2, 3 ReLU, 4 pool, ... 34 conv5_4, 35 ReLU, 36 pool.
    Block B (1..5) works at 1/2**(B-1) of the input resolution, with 64, 128, 256, 512,
    512 channels. Layer "convB_K" (same as "reluB_K") is the output of the K-th conv of
    block B AFTER its ReLU, as in CRN's official TensorFlow code, so conv1_2 on a
    (N, 3, H, W) input is (N, 64, H, W) and conv5_2 is (N, 512, H/16, W/16). The
    default layers are CRN's (conv1_2 ... conv5_2). The stack runs only as deep as the
    deepest requested layer.

    Input: images in [0, 1], normalised here with ImageNet mean/std (torchvision's
    convention; CRN's MatConvNet VGG subtracted a 0..255 mean instead).

    pool: "avg" (default) or "max". CRN replaced VGG's max pooling by average pooling,
    following Gatys et al.: max pooling passes gradient only to the largest value of
    each 2x2 window, so the loss' gradient on the generated image is sparse and
    blocky; average pooling spreads it over every pixel and gives smoother images.
    Pooling has no weights, so the ImageNet weights stay valid either way.
    """

    name = "vgg19"
    LAYERS = _vgg19_layer_index()

    def __init__(self, layers=CRN_LAYERS, pool: str = "avg", source: str = "random init (no weights loaded)"):
        layers = self.check_layers(layers)
        self.check_pool(pool)
        super().__init__(layers, source)
        self.pool = pool
        mods, c_in = [], 3
        for v in VGG19_CFG:
            if v == "M":
                mods.append(nn.AvgPool2d(2, 2) if pool == "avg" else nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU()]
                c_in = v
        self.features = nn.Sequential(*mods)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._taps = [self.LAYERS[n][0] for n in layers]
        self._depth = max(self._taps) + 1
        self._min_size = 2 ** (max(self.LAYERS[n][1] for n in layers) - 1)
        self.freeze()

    @classmethod
    def check_layers(cls, layers) -> tuple[str, ...]:
        """One layer name or a non-empty sequence of them (None: :data:`CRN_LAYERS`)."""
        return _layer_names(layers, CRN_LAYERS, cls.LAYERS, "VGG-19",
                            "use convB_K or reluB_K, B in 1..5, K in 1..2 (blocks 1-2) or 1..4 (blocks 3-5)")

    @staticmethod
    def check_pool(pool) -> str:
        if not isinstance(pool, str) or pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        return pool

    def extract(self, images):
        if min(images.shape[-2:]) < self._min_size:
            raise ValueError(f"images of size {tuple(images.shape[-2:])} are too small for layers "
                             f"{self.layer_names}: H and W must be >= {self._min_size}")
        x, found = (images - self.mean) / self.std, {}
        for i, layer in enumerate(self.features[:self._depth]):
            x = layer(x)
            if i in self._taps:
                found[i] = x
        return [found[i] for i in self._taps]

    @staticmethod
    def default_path() -> Path:
        """Where torchvision would have cached the weights: <hub dir>/checkpoints/vgg19-dcbb9e9d.pth."""
        return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME

    @classmethod
    def from_weights(cls, path=None, layers=CRN_LAYERS, pool: str = "avg") -> "VGG19Features":
        """Build from a torchvision VGG-19 state dict (``classifier.*`` keys are ignored).

        path None: the torch hub cache (``default_path()``). Raises FileNotFoundError if
        the file is absent, WeightsFileError (a ValueError) if it is not a readable state
        dict, ValueError listing keys that are missing, unexpected or wrongly shaped.
        ``layers`` and ``pool`` are checked before the file is read.
        """
        layers, pool = cls.check_layers(layers), cls.check_pool(pool)
        path = check_path(path, "path") if path is not None else cls.default_path()
        if not path.is_file():
            raise FileNotFoundError(f"VGG-19 weights not found at {path}. Nothing is downloaded: supply "
                                    f"torchvision's {VGG19_FILENAME} there or pass its path")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsFileError(f"{path} is not a valid state dict ({type(err).__name__}: {err})") from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsFileError(f"{path} is not a valid state dict (got {type(state).__name__} "
                                   "rather than a dict of tensors)")
        model = cls(layers=layers, pool=pool, source=str(path))
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        problems = [f"{k}: missing, expected shape {s}" for k, s in expected.items() if k not in state]
        problems += [f"{k}: shape {tuple(state[k].shape)}, expected {s}" for k, s in expected.items()
                     if k in state and tuple(state[k].shape) != s]
        problems += [f"{k}: unexpected key" for k in state if k not in expected]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(f"{path} does not hold VGG-19 weights in torchvision's layout: "
                             + "; ".join(problems[:5]) + more)
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model


class JudgeFeatures(FeatureExtractor):
    """Encoder features of the judge segmentation network.

    judge: an object with ``encoder_features(images) -> list[Tensor]`` (images (N, 3, H, W)
    in [0, 1], one (N, C_i, H_i, W_i) map per entry of ``judge.feature_names``). layers:
    names from ``judge.feature_names``; None means all. The judge's parameters are frozen
    in place, so do not train the same judge object afterwards.
    """

    name = "judge"

    def __init__(self, judge, layers=None, source: str | None = None):
        if not callable(getattr(judge, "encoder_features", None)) or \
                not isinstance(getattr(judge, "feature_names", None), (tuple, list)):
            raise ValueError(f"judge must be a network with encoder_features() and feature_names "
                             f"(labkit.judge.load_judge()), got {type(judge).__name__}")
        names = tuple(judge.feature_names)
        layers = _layer_names(layers, names, names, "judge", f"available: {names}")
        if source is None:
            source = getattr(judge, "source", None) or f"{type(judge).__name__} (checkpoint unknown)"
        super().__init__(layers, source)
        self.judge = judge  # registered as a submodule if it is an nn.Module
        self._taps = [names.index(n) for n in layers]
        self.freeze()

    def extract(self, images):
        feats = self.judge.encoder_features(images)
        return [feats[i] for i in self._taps]


def _load_judge(device="cpu"):
    """Import labkit.judge only when needed, so this module imports without it."""
    from .judge import load_judge
    return load_judge(device=device)


def load_feature_extractor(kind: str = "auto", vgg_weights=None, layers=None, device="cpu",
                           verbose: bool = True) -> FeatureExtractor:
    """Return the perceptual feature extractor for a run, on ``device``.

    kind "vgg19": ``VGG19Features.from_weights(vgg_weights)`` (hub cache if None).
    kind "judge": ``JudgeFeatures(load_judge())``.
    kind "auto": VGG-19 if ``vgg_weights`` is given or the hub cache has the file, else
    the judge. Layer names differ between the two, so leave ``layers`` None with "auto".
    With ``verbose`` it prints which extractor and weights were used; store
    ``extractor.describe()`` with the run too. ``device`` is checked first: a
    device name that exists here (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``) or a torch.device.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown feature extractor kind {kind!r}; allowed: {KINDS}")
    check_device(device)
    if kind == "auto":
        kind = "vgg19" if vgg_weights is not None or VGG19Features.default_path().is_file() else "judge"
    if kind == "vgg19":
        extractor = VGG19Features.from_weights(vgg_weights, layers=layers)
        label = f"VGG-19 {', '.join(extractor.layer_names)}"
    else:
        extractor = JudgeFeatures(_load_judge(device), layers=layers)
        label = "judge encoder"
    extractor = extractor.to(device)
    if verbose:
        print(f"perceptual features: {label} ({extractor.source})")
    return extractor
