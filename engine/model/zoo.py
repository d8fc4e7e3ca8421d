"""The model zoo: every architecture is built as `build(num_classes, in_channels, image_size, width)`.

Torchvision architectures are built without pretrained weights and adapted to small inputs: the
stem takes `in_channels`, a 3x3 stride-1 stem and no early max-pool below 64 px, and pools that
would shrink the map below 1x1 are dropped. Each entry also names its feature stages (module
paths, coarse to fine, for feature distillation) and its classifier (the last Linear).

Besides the zoo, any timm or torchvision classification model by name (`timm:convnext_tiny`,
`torchvision:efficientnet_b0`, options after `?`), unchanged, at its own input size: see
engine/model/named.py. `MODELS.get` answers for those names too, and for SimKD's delivered student,
`simkd:<student>+<teacher>` (the student's backbone, the paper's projector and the teacher's classifier:
engine/model/reused_head.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.core.errors import ConfigError
from engine.core.registry import Registry
from engine.model import named, reused_head

SMALL_INPUT = 64  # below this side length, stems keep full resolution


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[[int, int, int, float], nn.Module]
    stages: tuple[str, ...]  # module paths whose outputs are the feature stages
    classifier: str  # module path of the final Linear


class ModelRegistry(Registry[ModelSpec]):
    """The zoo's registry; a `timm:` or `torchvision:` name is answered with a spec read off that model, a
    `simkd:` name with the spec of its composite."""

    def get(self, name: str) -> ModelSpec:
        if named.is_named(name):
            return _named_spec(named.canonical(name))
        if reused_head.is_reused_head(name):
            return _reused_head_spec(reused_head.parse(name))
        try:
            return super().get(name)
        except ConfigError as e:
            raise ConfigError(f"{e}; or any timm/torchvision classification model by name, e.g. "
                              f"timm:vit_tiny_patch16_224 or torchvision:efficientnet_b0") from None

    def __contains__(self, name: object) -> bool:
        if named.is_named(name):
            try:
                named.parse(name)
            except ConfigError:
                return False
            return True
        if reused_head.is_reused_head(name):
            try:
                self.get(name)
            except ConfigError:
                return False
            return True
        return super().__contains__(name)


MODELS: ModelRegistry = ModelRegistry("architecture")


def _named_spec(arch: str) -> ModelSpec:
    stages, classifier = named.layout(arch)
    source = arch.split(":", 1)[0]
    return ModelSpec(arch, f"{source} {arch.split(':', 1)[1]}, built without pretrained weights", functools.partial(
        named.build_named, arch), stages, classifier)


def _reused_head_spec(arch: reused_head.ReusedHeadArch) -> ModelSpec:
    for role, part in (("student", arch.student), ("teacher", arch.teacher)):
        if part not in MODELS.names():
            raise ConfigError(f"architecture {arch.spec!r}: its {role} {part!r} is not an architecture of the zoo; "
                              f"known: {', '.join(MODELS.names())}")
    return ModelSpec(arch.spec, f"{arch.student} backbone + SimKD's conv projector + {arch.teacher}'s classifier",
                     functools.partial(_build_reused_head, arch), ("backbone", "projector"), "head")


def _build_reused_head(arch: reused_head.ReusedHeadArch, num_classes: int, in_channels: int, image_size: int,
                       width: float = 1.0) -> nn.Module:
    """The student (at `width`) and the teacher (at the arch's teacher_width) built fresh; only the teacher's
    classifier is kept. The weights come from the checkpoint."""
    s_spec, t_spec = MODELS.get(arch.student), MODELS.get(arch.teacher)
    student = s_spec.build(num_classes, in_channels, image_size, width)
    teacher = t_spec.build(num_classes, in_channels, image_size, arch.teacher_width)
    example = torch.zeros(1, in_channels, image_size, image_size)
    return reused_head.reused_head_student(student, s_spec.stages[-1], teacher, t_spec.stages[-1], t_spec.classifier,
                                           arch.factor, example)


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# ---------------------------------------------------------------- small CNNs for the embedded data


class SmallCNN(nn.Module):
    """Three conv stages (the first two end in a 2x2 max-pool), global average pool, one Linear."""

    def __init__(self, channels: list[list[int]], num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        stages, cin, side = [], in_channels, image_size
        for i, stage in enumerate(channels):
            layers: list[nn.Module] = []
            for cout in stage:
                layers.append(conv_bn_relu(cin, cout))
                cin = cout
            if i < len(channels) - 1 and side >= 4:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            stages.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _cnn(channels: list[list[int]]):
    def build(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
        return SmallCNN([[_ch(c, width) for c in s] for s in channels], num_classes, in_channels, image_size)

    return build


MODELS.register("cnn_l")(ModelSpec(
    "cnn_l", "teacher-sized CNN, 5 conv layers (~0.42M params)",
    _cnn([[32], [64, 128], [128, 160]]), ("features.0", "features.1", "features.2"), "fc"))
MODELS.register("cnn_s")(ModelSpec(
    "cnn_s", "student-sized CNN, 4 conv layers (~0.1M params)",
    _cnn([[24], [48, 64], [96]]), ("features.0", "features.1", "features.2"), "fc"))


# ---------------------------------------------------------------- CIFAR ResNets (He et al. 2016, Sec. 4.2)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        # projection shortcut (option B): traceable by structured pruning, unlike zero-padding
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int, width: float):
        super().__init__()
        n = (depth - 2) // 6
        widths = [_ch(16, width), _ch(32, width), _ch(64, width)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin, layers = widths[0], []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


for _depth in (20, 56):
    MODELS.register(f"resnet{_depth}")(ModelSpec(
        f"resnet{_depth}", f"CIFAR-style ResNet-{_depth} (16-32-64 channels)",
        lambda nc, ic, sz, w=1.0, d=_depth: CifarResNet(d, nc, ic, w), ("layer1", "layer2", "layer3"), "fc"))


# ---------------------------------------------------------------- torchvision, adapted to small inputs


def _small_stem(conv: nn.Conv2d, in_channels: int, image_size: int) -> nn.Conv2d:
    """The same conv with in_channels inputs; 3x3 stride 1 when the image is small."""
    if image_size < SMALL_INPUT:
        return nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None)


def _drop_excess_pools(features: nn.Sequential, image_size: int) -> None:
    """Replaces max-pools that would shrink the feature map below 1x1 with identities."""
    side = image_size
    for i, m in enumerate(features):
        if isinstance(m, nn.MaxPool2d):
            if side // 2 < 1:
                features[i] = nn.Identity()
            else:
                side //= 2


def _resnet(name: str):
    def build(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
        import torchvision.models as tvm

        if width != 1.0:
            raise ConfigError(f"{name} has no width multiplier; width must be 1.0, got {width}")
        m = getattr(tvm, name)(weights=None, num_classes=num_classes)
        m.conv1 = _small_stem(m.conv1, in_channels, image_size)
        if image_size < SMALL_INPUT:
            m.maxpool = nn.Identity()
        return m

    return build


def _vgg(name: str):
    def build(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
        import torchvision.models as tvm

        if width != 1.0:
            raise ConfigError(f"{name} has no width multiplier; width must be 1.0, got {width}")
        m = getattr(tvm, name)(weights=None)
        first = m.features[0]
        m.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, 1, 1)
        _drop_excess_pools(m.features, image_size)
        if image_size < SMALL_INPUT:  # CIFAR-style head: 512 -> classes instead of 25088 -> 4096 -> 4096
            m.avgpool = nn.AdaptiveAvgPool2d(1)
            m.classifier = nn.Sequential(nn.Linear(512, num_classes))
        else:
            m.classifier[-1] = nn.Linear(m.classifier[-1].in_features, num_classes)
        return m

    return build


def _mobilenet(name: str):
    def build(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
        import torchvision.models as tvm

        kwargs = {"width_mult": width} if name == "mobilenet_v2" else {}
        if name != "mobilenet_v2" and width != 1.0:
            raise ConfigError(f"{name} has no width multiplier here; width must be 1.0, got {width}")
        m = getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)
        stem = m.features[0][0]
        m.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, 1 if image_size < SMALL_INPUT else 2, 1,
                                     bias=False)
        return m

    return build


def _squeezenet(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    import torchvision.models as tvm

    if width != 1.0:
        raise ConfigError(f"squeezenet1_1 has no width multiplier; width must be 1.0, got {width}")
    m = tvm.squeezenet1_1(weights=None, num_classes=num_classes)
    m.features[0] = nn.Conv2d(in_channels, 64, 3, 1 if image_size < SMALL_INPUT else 2, 1)
    _drop_excess_pools(m.features, image_size)
    return m


def _densenet(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    import torchvision.models as tvm

    if width != 1.0:
        raise ConfigError(f"densenet121 has no width multiplier; width must be 1.0, got {width}")
    m = tvm.densenet121(weights=None, num_classes=num_classes)
    m.features.conv0 = _small_stem(m.features.conv0, in_channels, image_size)
    if image_size < SMALL_INPUT:
        m.features.pool0 = nn.Identity()
    return m


def _efficientnet(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    import torchvision.models as tvm

    if width != 1.0:
        raise ConfigError(f"efficientnet_b0 has no width multiplier; width must be 1.0, got {width}")
    m = tvm.efficientnet_b0(weights=None, num_classes=num_classes)
    m.features[0][0] = nn.Conv2d(in_channels, 32, 3, 1 if image_size < SMALL_INPUT else 2, 1, bias=False)
    return m


_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    MODELS.register(_name)(ModelSpec(_name, f"torchvision {_name}, small-input stem", _resnet(_name),
                                     _RESNET_STAGES, "fc"))
MODELS.register("vgg11_bn")(ModelSpec("vgg11_bn", "torchvision VGG-11 with BN, CIFAR head below 64 px",
                                      _vgg("vgg11_bn"), ("features.6", "features.13", "features.20"),
                                      "classifier.0"))
MODELS.register("vgg16_bn")(ModelSpec("vgg16_bn", "torchvision VGG-16 with BN, CIFAR head below 64 px",
                                      _vgg("vgg16_bn"), ("features.12", "features.22", "features.32"),
                                      "classifier.0"))
MODELS.register("mobilenet_v2")(ModelSpec("mobilenet_v2", "torchvision MobileNetV2 (width multiplier)",
                                          _mobilenet("mobilenet_v2"), ("features.3", "features.6", "features.13",
                                                                       "features.18"), "classifier.1"))
MODELS.register("mobilenet_v3_small")(ModelSpec("mobilenet_v3_small", "torchvision MobileNetV3-Small",
                                                _mobilenet("mobilenet_v3_small"),
                                                ("features.1", "features.3", "features.8", "features.12"),
                                                "classifier.3"))
MODELS.register("squeezenet1_1")(ModelSpec("squeezenet1_1", "torchvision SqueezeNet 1.1 (conv classifier)",
                                           _squeezenet, ("features.4", "features.7", "features.12"),
                                           "classifier.1"))
MODELS.register("densenet121")(ModelSpec("densenet121", "torchvision DenseNet-121, small-input stem", _densenet,
                                         ("features.transition1", "features.transition2",
                                          "features.transition3", "features.norm5"), "classifier"))
MODELS.register("efficientnet_b0")(ModelSpec("efficientnet_b0", "torchvision EfficientNet-B0", _efficientnet,
                                             ("features.2", "features.3", "features.5", "features.8"),
                                             "classifier.1"))


# ---------------------------------------------------------------- entry points


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be at least 1, got {in_channels}")
    if image_size < 4:
        raise ConfigError(f"image_size must be at least 4, got {image_size}")
    if not (0 < width <= 4) or math.isnan(width):
        raise ConfigError(f"width must be in (0, 4], got {width}")
    if named.is_named(arch):
        arch = named.canonical(arch)
        model = named.build_named(arch, num_classes, in_channels, image_size, width)
    else:
        spec = MODELS.get(arch)
        arch = spec.name  # a simkd: name in its canonical spelling
        model = spec.build(num_classes, in_channels, image_size, width)
    model.arch = arch  # what measure() records as the point's model (copies and pruned models keep it)
    return model


def catalog() -> list[dict]:
    """One row per architecture (for `models` and the app), then the two by-name families and SimKD's composite."""
    rows = [{"name": n, "description": s.description, "stages": list(s.stages), "classifier": s.classifier}
            for n, s in MODELS.items()]
    rows += [{"name": f"{source}:<name>", "description": f"any {source} classification model by name, e.g. {example} "
              f"(no pretrained weights: upload yours)", "stages": [], "classifier": ""}
             for source, example in (("timm", "timm:vit_tiny_patch16_224?depth=2"),
                                     ("torchvision", "torchvision:efficientnet_b0"))]
    rows.append({"name": "simkd:<student>+<teacher>", "description": "SimKD's student with the paper's conv projector "
                 "and the teacher's classifier, e.g. simkd:cnn_s+cnn_l?factor=4 (made by distill --method simkd "
                 "--projector conv)", "stages": ["backbone", "projector"], "classifier": "head"})
    return rows


def input_defaults(arch: str) -> named.InputDefaults | None:
    """The image side and normalisation an architecture by name expects; None for the zoo's own (they
    take the dataset's)."""
    return named.input_defaults(arch) if named.is_named(arch) else None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path; the error lists nearby names."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:40]
        raise ConfigError(f"layer '{path}' does not exist in {type(model).__name__}; layers include: "
                          f"{', '.join(names)}") from None
