"""Architectures by name from timm and torchvision, built without downloading anything.

`timm:<name>` or `torchvision:<name>`, optionally followed by constructor options after a `?`:
`timm:vit_tiny_patch16_224?depth=2&patch_size=8`. Option names are the library's own keyword
arguments; values are whole numbers, decimals or true/false (nothing else is accepted, so a name
never runs code). The weights always come from the user (an upload) or from training here:
`pretrained=False` / `weights=None`, so nothing is fetched from a hub.

Each name brings its own input: the side its library builds it for (`img_size=` in the options
overrides it) and the mean/std its weights were trained with (timm's `pretrained_cfg`, torchvision's
weights transforms), which image folders are loaded at (engine/model/data.py).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from torch import nn

from engine.core.errors import ConfigError

SOURCES = ("timm", "torchvision")
MAX_OPTIONS = 16
# set by the lab from the data and the upload, never by a name
RESERVED = {"pretrained", "weights", "num_classes", "in_chans", "checkpoint_path", "pretrained_cfg",
            "pretrained_cfg_overlay", "pretrained_strict", "features_only", "cache_dir", "weights_backbone",
            "progress", "image_size", "scriptable", "exportable", "no_jit"}
_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,99}$")
_OPTION = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
FALLBACK_MEAN, FALLBACK_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class NamedArch:
    source: str  # timm or torchvision
    name: str  # the library's model name
    options: tuple[tuple[str, int | float | bool], ...] = ()  # constructor keyword arguments, sorted

    @property
    def spec(self) -> str:
        """The canonical spelling (what a checkpoint's meta records as its arch)."""
        opts = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.options)
        return f"{self.source}:{self.name}" + (f"?{opts}" if opts else "")


@dataclass(frozen=True)
class InputDefaults:
    image_size: int  # the side the architecture is built for
    mean: tuple[float, ...]
    std: tuple[float, ...]


def is_named(arch: object) -> bool:
    return isinstance(arch, str) and arch.split(":", 1)[0] in SOURCES and ":" in arch


def _value(key: str, text: str, arch: str) -> int | float | bool:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"option '{key}' of '{arch}' must be a number or true/false, got '{text}'") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"option '{key}' of '{arch}' must be a finite number, got '{text}'")
    return value


@functools.lru_cache(maxsize=256)
def parse(arch: str) -> NamedArch:
    """Validates `source:name?key=value&...`; the error names what is wrong."""
    source, _, rest = arch.partition(":")
    if source not in SOURCES:
        raise ConfigError(f"an architecture by name starts with {' or '.join(s + ':' for s in SOURCES)}, got '{arch}'")
    name, _, query = rest.partition("?")
    if not _NAME.match(name):
        raise ConfigError(f"'{name}' is not a {source} model name (lower-case letters, digits, '_' and '.')")
    _check_exists(source, name)
    options: dict[str, int | float | bool] = {}
    for part in filter(None, query.split("&")):
        key, eq, text = part.partition("=")
        if not eq or not _OPTION.match(key) or not text:
            raise ConfigError(f"options of '{arch}' are key=value pairs joined by '&', got '{part}'")
        if key in RESERVED:
            raise ConfigError(f"option '{key}' of '{arch}' is set by the lab (classes and channels come from the data, "
                              f"weights from your upload); leave it out")
        if key in options:
            raise ConfigError(f"option '{key}' is given twice in '{arch}'")
        options[key] = _value(key, text, arch)
    if len(options) > MAX_OPTIONS:
        raise ConfigError(f"'{arch}' has {len(options)} options; at most {MAX_OPTIONS} are accepted")
    if "img_size" in options and (not isinstance(options["img_size"], int) or not 4 <= options["img_size"] <= 1024):
        raise ConfigError(f"option img_size of '{arch}' must be a whole number in [4, 1024], got {options['img_size']}")
    return NamedArch(source, name, tuple(sorted(options.items())))


def canonical(arch: str) -> str:
    return parse(arch).spec


def _check_exists(source: str, name: str) -> None:
    if source == "timm":
        import timm

        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ConfigError(f"timm has no model '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))
        if "." in name:  # the tag picks the weights' input size and mean/std
            try:
                known = timm.get_pretrained_cfg(name) is not None
            except RuntimeError:  # timm: "Invalid pretrained tag"
                known = False
            if not known:
                tags = timm.list_pretrained(f"{name.split('.')[0]}.*")[:8]
                raise ConfigError(f"timm has no weights tag '{name}'" + (f"; tags: {', '.join(tags)}" if tags else ""))
    else:
        import torchvision.models as tvm

        names = tvm.list_models(module=tvm)  # classification models only
        if name not in names:
            close = [n for n in names if n.split("_")[0] == name.split("_")[0]][:8]
            raise ConfigError(f"torchvision has no classification model '{name}'"
                              + (f"; similar: {', '.join(close)}" if close else ""))


def _timm_cfg(name: str) -> dict:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


@functools.lru_cache(maxsize=64)
def input_defaults(arch: str) -> InputDefaults:
    """The input an architecture by name expects: its side and the normalisation of its weights."""
    named = parse(arch)
    opts = dict(named.options)
    if named.source == "timm":
        cfg = _timm_cfg(named.name)
        side = int(opts.get("img_size", (cfg.get("input_size") or (3, 224, 224))[-1]))
        mean, std = tuple(cfg.get("mean") or FALLBACK_MEAN), tuple(cfg.get("std") or FALLBACK_STD)
    else:
        import torchvision.models as tvm

        transforms = tvm.get_model_weights(named.name).DEFAULT.transforms()
        side = int(opts.get("img_size", transforms.crop_size[0]))
        mean, std = tuple(transforms.mean), tuple(transforms.std)
    return InputDefaults(side, tuple(float(v) for v in mean), tuple(float(v) for v in std))


def _fixed_input_size(named: NamedArch) -> bool:
    """Whether the model is built for one input side (vision transformers: position embeddings)."""
    if named.source == "timm":
        return bool(_timm_cfg(named.name).get("fixed_input_size"))
    return named.name.startswith("vit_")


def build_named(arch: str, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    """A freshly initialised model (no pretrained weights, nothing downloaded) for the data's classes,
    channels and image side."""
    named = parse(arch)
    if width != 1.0:
        raise ConfigError(f"{named.spec} has no width multiplier; width must be 1.0, got {width} (set the "
                          f"library's own options in the name instead, e.g. ?embed_dim=96)")
    kwargs = {k: v for k, v in named.options if k != "img_size"}
    own = dict(named.options).get("img_size")
    if own is not None and own != image_size:
        raise ConfigError(f"{named.spec} is built for {own}-pixel images but the data is {image_size} px; "
                          f"load the images at {own} px (image_size) or change img_size in the name")
    fixed = _fixed_input_size(named)
    try:
        if named.source == "timm":
            import timm

            if fixed:
                kwargs["img_size"] = image_size
            model = timm.create_model(named.name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                      **kwargs)
        else:
            import torchvision.models as tvm

            if in_channels != 3:
                raise ConfigError(f"{named.spec} takes 3-channel (RGB) images and the data has {in_channels} "
                                  f"channel(s); use a timm model (it adapts its stem) or RGB data")
            if fixed:
                kwargs["image_size"] = image_size
            model = tvm.get_model(named.name, weights=None, num_classes=num_classes, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as e:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{named.source} could not build '{named.spec}' for {num_classes} classes, "
                          f"{in_channels} channels, {image_size} px: {text}") from None
    return model


@functools.lru_cache(maxsize=64)
def layout(arch: str) -> tuple[tuple[str, ...], str]:
    """(feature stage paths, classifier path) of an architecture by name, read off a throwaway instance."""
    named = parse(arch)
    probe = 997  # a class count no hidden layer has, so the classifier is the layer with that many outputs
    side = input_defaults(arch).image_size
    model = build_named(arch, probe, 3, side)
    classifier = ""
    for name, m in model.named_modules():
        if (isinstance(m, nn.Linear) and m.out_features == probe) or (isinstance(m, nn.Conv2d) and m.out_channels == probe):
            classifier = name
            break  # the first one: distilled DeiTs have a second head after it
    if not classifier:
        raise ConfigError(f"{named.spec} has no Linear or Conv layer with one output per class; it cannot be used here")
    stages: tuple[str, ...] = ()
    info = getattr(model, "feature_info", None)
    if named.source == "timm" and info is not None:
        paths = [f["module"] for f in info if isinstance(f, dict) and f.get("module")]
        stages = tuple(p for p in paths if p and _exists(model, p))[-4:]
    elif all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        stages = ("layer1", "layer2", "layer3", "layer4")
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        n = len(model.features)
        stages = tuple(dict.fromkeys(f"features.{i}" for i in (n // 4, n // 2, 3 * n // 4, n - 1)))
    return stages, classifier


def _exists(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False
