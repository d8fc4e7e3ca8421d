"""A student that reuses its teacher's classifier: SimKD's delivered model, as an architecture of the zoo.

Chen, Mei, Zhang, Wang, Feng & Chen, "Knowledge Distillation with the Reused Teacher Classifier"
(CVPR 2022): the student's backbone up to its last feature stage, the paper's projector (1x1, 3x3,
1x1 convolutions, each with BN and ReLU) onto the teacher's channels, a global average pool and the
teacher's own classifier. It is spelt `simkd:<student>+<teacher>` with options after `?`
(`factor`, the projector's bottleneck; `teacher_width`), e.g. `simkd:cnn_s+cnn_l?factor=4`: the name
is the architecture as a checkpoint's `meta.json` records it (the student's width is the meta's
`width`), and `engine.model.zoo.MODELS` builds it like any other, so measuring, pruning, quantizing
and loading need nothing of their own. The backbone is the student traced with torch.fx up to its
last stage (its own pool and classifier are not part of the model), so the whole model traces for
int8 conversion and structured pruning.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.core.errors import ConfigError

PREFIX = "simkd:"
DEFAULT_FACTOR = 2
MAX_FACTOR = 64
_PART = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a zoo architecture's name (no timm:/torchvision: names)


@dataclass(frozen=True)
class ReusedHeadArch:
    student: str  # the zoo architecture of the backbone (built at the checkpoint's width)
    teacher: str  # the zoo architecture whose classifier is reused
    factor: int = DEFAULT_FACTOR  # the projector's middle width is the teacher's channels / factor
    teacher_width: float = 1.0  # the teacher's width multiplier

    def __post_init__(self) -> None:
        for role in ("student", "teacher"):
            name = getattr(self, role)
            if not isinstance(name, str) or not _PART.match(name):
                raise ConfigError(f"the {role} of a simkd architecture must be an architecture of the zoo (see "
                                  f"`models`; not timm:/torchvision: names), got {name!r}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or not 1 <= self.factor <= MAX_FACTOR:
            raise ConfigError(f"factor of a simkd architecture must be a whole number in [1, {MAX_FACTOR}], "
                              f"got {self.factor!r}")
        w = self.teacher_width
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w <= 4:
            raise ConfigError(f"teacher_width of a simkd architecture must be in (0, 4], got {w!r}")

    @property
    def spec(self) -> str:
        """The canonical spelling (options left out at their defaults)."""
        opts = []
        if self.factor != DEFAULT_FACTOR:
            opts.append(f"factor={self.factor}")
        if self.teacher_width != 1.0:
            opts.append(f"teacher_width={self.teacher_width:g}")
        return f"{PREFIX}{self.student}+{self.teacher}" + (f"?{'&'.join(opts)}" if opts else "")


def is_reused_head(arch: object) -> bool:
    return isinstance(arch, str) and arch.startswith(PREFIX)


def parse(arch: str) -> ReusedHeadArch:
    """Validates `simkd:<student>+<teacher>[?factor=N&teacher_width=W]`; the error names what is wrong."""
    body, _, query = arch[len(PREFIX):].partition("?")
    parts = body.split("+")
    if len(parts) != 2:
        raise ConfigError(f"architecture {arch!r}: a simkd architecture is simkd:<student>+<teacher>, two zoo "
                          f"names joined by '+', got {len(parts)} part(s)")
    options: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in ("factor", "teacher_width"):
            raise ConfigError(f"architecture {arch!r}: option {item!r} is not one of factor=<whole number>, "
                              f"teacher_width=<number>")
        try:
            options[key] = int(value) if key == "factor" else float(value)
        except ValueError:
            raise ConfigError(f"architecture {arch!r}: option {key} must be a number, got {value!r}") from None
    try:
        return ReusedHeadArch(parts[0], parts[1], **options)
    except ConfigError as e:
        raise ConfigError(f"architecture {arch!r}: {e}") from None


class PaperProjector(nn.Module):
    """The paper's projector on feature maps: 1x1 (C_s -> C_t / factor), 3x3, 1x1 (-> C_t), each with BN and ReLU."""

    def __init__(self, s_channels: int, t_channels: int, factor: int = DEFAULT_FACTOR):
        super().__init__()
        mid = max(1, t_channels // factor)
        self.body = nn.Sequential(
            nn.Conv2d(s_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, t_channels, 1, bias=False), nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ReusedHeadStudent(nn.Module):
    """backbone (the student up to its last stage) -> align (pool to the teacher's map size, or identity) ->
    projector -> global average pool -> the teacher's classifier (`head`)."""

    def __init__(self, backbone: nn.Module, align: nn.Module, projector: PaperProjector, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.align = align
        self.projector = projector
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        """The projected feature map, aligned with the teacher's last stage (what SimKD's loss compares)."""
        return self.projector(self.align(self.backbone(x)["map"]))

    def classify(self, features: Tensor) -> Tensor:
        return self.head(torch.flatten(self.pool(features), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


@torch.no_grad()
def _map_shape(model: nn.Module, stage: str, example: Tensor) -> tuple[int, ...]:
    """The per-sample shape of what `stage` produces (the model run once in eval mode, its mode restored)."""
    seen: list[Tensor] = []
    handle = model.get_submodule(stage).register_forward_hook(lambda m, a, out: seen.append(out))
    was_training = model.training
    try:
        model.eval()(example)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen or not isinstance(seen[0], Tensor):
        raise ConfigError(f"stage '{stage}' of {type(model).__name__} did not produce a tensor")
    return tuple(seen[0].shape[1:])


def reused_head_student(student: nn.Module, student_stage: str, teacher: nn.Module, teacher_stage: str,
                        teacher_classifier: str, factor: int, example: Tensor) -> ReusedHeadStudent:
    """The student's backbone (sharing the student's modules), a fresh projector onto the teacher's last stage,
    and a frozen copy of the teacher's classifier; what SimKD trains and what a checkpoint rebuilds."""
    from torchvision.models.feature_extraction import create_feature_extractor

    s_shape, t_shape = _map_shape(student, student_stage, example), _map_shape(teacher, teacher_stage, example)
    if len(s_shape) != 3 or len(t_shape) != 3:
        raise ConfigError(f"simkd's conv projector needs feature maps [C, H, W] from the last stages "
                          f"('{student_stage}' gives {list(s_shape)}, '{teacher_stage}' {list(t_shape)}); use "
                          f"projector linear")
    if s_shape[1] < t_shape[1] or s_shape[2] < t_shape[2]:
        raise ConfigError(f"simkd's conv projector pools the student's map to the teacher's size, but the "
                          f"student's {list(s_shape)} is smaller than the teacher's {list(t_shape)}; use "
                          f"projector linear")
    head = teacher.get_submodule(teacher_classifier)
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"simkd reuses the classifier as a Linear layer, but the teacher's classifier "
                          f"'{teacher_classifier}' is a {type(head).__name__}; pick another architecture or method")
    try:
        backbone = create_feature_extractor(student, {student_stage: "map"})
    except Exception as e:  # noqa: BLE001 - torch.fx fails in many ways on untraceable code
        raise ConfigError(f"simkd's conv projector needs a student torch.fx can trace up to '{student_stage}' "
                          f"({type(e).__name__}: {e}); use projector linear") from None
    align = nn.AdaptiveAvgPool2d(t_shape[1:]) if s_shape[1:] != t_shape[1:] else nn.Identity()
    return ReusedHeadStudent(backbone, align, PaperProjector(s_shape[0], t_shape[0], factor),
                             copy.deepcopy(head).requires_grad_(False))
