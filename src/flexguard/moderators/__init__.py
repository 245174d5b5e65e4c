"""Moderator backends: one protocol, one lazy registry.

A backend is any object with ``name``, ``score(items) -> list[ModerationResult]`` and
``info() -> dict`` (what goes into run manifests). Backends are registered by import path
so that ``import flexguard`` never imports torch or an HTTP client.

A model spec is ``NAME`` or ``NAME:ARG``, e.g. ``embedded``, ``hf:Tommy-DING/FlexGuard-Qwen3-8B``,
``openai:http://127.0.0.1:8000/v1#FlexGuard-Qwen3-8B`` or ``predictions:preds.jsonl``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Protocol, Sequence, runtime_checkable

from ..errors import BackendError, ConfigError, UnknownBackendError
from ..schema import Item, ModerationResult

DEFAULT_MODEL = "embedded"

#: name -> "module:Class". Add entries with :func:`register`.
BACKENDS: dict[str, str] = {
    "embedded": "flexguard.moderators.embedded:EmbeddedModerator",
    "embedded-frozen": "flexguard.moderators.embedded:FrozenEmbeddedModerator",
    "embedded-ensemble": "flexguard.moderators.embedded:EnsembleEmbeddedModerator",
    "embedded-large": "flexguard.moderators.embedded:LargeEmbeddedModerator",
    "predictions": "flexguard.moderators.predictions:PredictionsModerator",
    "hf": "flexguard.moderators.hf:HFModerator",
    "openai": "flexguard.moderators.openai_compat:OpenAICompatibleModerator",
    "llamaguard": "flexguard.moderators.baselines:LlamaGuardModerator",
    "openai-moderation": "flexguard.moderators.baselines:OpenAIModerationModerator",
}


@runtime_checkable
class Moderator(Protocol):
    """What every backend provides.

    ``score`` must return one result per item, in order, and must not raise for a single
    unparsable model output (set ``parse_error`` instead). Capabilities are class attributes.
    """

    name: str
    supports_response_mode: bool

    def score(self, items: Sequence[Item]) -> list[ModerationResult]: ...

    def info(self) -> dict[str, Any]: ...


#: name -> the optional extra its imports need
EXTRAS = {"hf": "llm", "openai": "llm", "llamaguard": "llm", "openai-moderation": "llm"}


def register(name: str, target: str | type) -> None:
    """Register a backend under ``name`` (a class or a ``"module:Class"`` path)."""
    BACKENDS[name] = target  # type: ignore[assignment]


def unregister(name: str) -> None:
    BACKENDS.pop(name, None)


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, sep, arg = spec.partition(":")
    if name not in BACKENDS and sep and "/" in name + sep:  # e.g. a bare URL: not a backend name
        return spec, None
    return name, (arg if sep else None)


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise UnknownBackendError(f"Unknown model backend {name!r}.{hint} Available: {', '.join(sorted(BACKENDS))}")
    target = BACKENDS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise _missing_extra(name, e) from None
    return target


def _missing_extra(name: str, e: ImportError) -> BackendError:
    """An optional extra is missing (e.g. torch for ``hf``): say which, and how to install it."""
    extra = EXTRAS.get(name, "all")
    return BackendError(f"the {name!r} backend needs the '{extra}' extra ({e.name or e} is not installed): "
                        f"pip install 'flexguard[{extra}]'")


def backend_options(cls: type) -> set[str] | None:
    """Option names a backend's constructor takes (its ``options`` attribute, else its named
    parameters with defaults: the required ones come from the spec); None when it takes any keyword."""
    if (declared := getattr(cls, "options", None)) is not None:
        return set(declared)
    params = list(inspect.signature(cls).parameters.values())  # the constructor's, without self
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty}


def get_moderator(spec: str = DEFAULT_MODEL, **options: Any) -> Moderator:
    """Build a moderator from a spec such as ``"embedded"`` or ``"hf:./my-model"``.

    Options go to the backend's constructor (e.g. ``mode="expected"`` for LLM backends);
    options a backend does not take are a :class:`ConfigError` naming the ones it does take.
    """
    name, arg = parse_spec(spec)
    cls = backend_class(name)
    accepted = backend_options(cls)
    if accepted is not None and (bad := sorted(set(options) - accepted)):
        raise ConfigError(f"model {spec!r} does not take option(s) {', '.join(bad)}; "
                          f"it takes {', '.join(sorted(accepted)) or 'none'}")
    try:
        return cls.from_spec(arg, **options) if hasattr(cls, "from_spec") else cls(**options)
    except ImportError as e:  # backends import their heavy dependencies when built
        raise _missing_extra(name, e) from None
