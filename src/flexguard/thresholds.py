"""Policies: which score counts as unsafe under which regime, for which category and mode.

A :class:`Policy` turns risk scores (0–100) into a decision for *every* regime at once,
because the point of a risk score is to score once and decide for any strictness. An item
is unsafe under a regime when ``score > threshold``. Thresholds can be overridden per
harm category and per mode (prompt vs response); the most specific override wins:
mode+category, then category, then mode, then the global thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .rubric import Category, Regime, Tier, check_score
from .schema import MODES


def default_regimes() -> dict[str, Tier]:
    return {r.value: r.min_tier for r in Regime}


def default_thresholds() -> dict[str, float]:
    return {r.value: r.default_threshold for r in Regime}


def _category(value: object) -> Category:
    try:
        return Category.parse(value)
    except DataError as e:
        raise ConfigError(f"policy: {e}") from None


@dataclass
class Decisions:
    """Vectorised decisions of a policy.

    ``flags[regime]`` is a bool array; ``margins[regime]`` is ``score - threshold`` (positive
    means flagged); ``margin`` is the signed margin to the *nearest* threshold of any regime,
    the quantity to route borderline items to human review by (small ``|margin|``).
    Items without a score have NaN margins and are not flagged.
    """

    flags: dict[str, np.ndarray]
    margins: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]

    @property
    def margin(self) -> np.ndarray:
        m = np.stack(list(self.margins.values()))
        idx = np.nanargmin(np.where(np.isnan(m), np.inf, np.abs(m)), axis=0)
        return m[idx, np.arange(m.shape[1])]


#: What to do with an item the moderator could not judge (unparsable output, an error).
ON_UNJUDGED = ("flag", "review", "allow")
#: What to do with a score that may not be trusted (text out of scope, text not read to the end).
ON_UNCERTAIN = ("flag", "review", "score")


@dataclass
class Verdict:
    """Everything a caller reports for one item.

    ``decision`` is ``allow``, ``flag`` or ``review`` (route to a person); ``flagged`` is
    ``decision != "allow"``, so a caller that reads only the boolean fails closed. ``reason``
    says what decided: ``score``, ``label`` (a label-only moderator), ``parse_error``,
    ``error``, ``out_of_scope`` or ``truncated``. Also: the threshold ``flagged`` used, each
    regime's decision, margins (score − threshold) and thresholds, and the signed margin to the
    nearest threshold (``None`` without a score).
    """

    flagged: bool
    threshold: float | None
    decisions: dict[str, bool]
    margins: dict[str, float | None]
    thresholds: dict[str, float]
    margin: float | None
    decision: str = "allow"
    reason: str = "score"


@dataclass
class Policy:
    """Thresholds per regime, optionally per category and per mode.

    Parameters
    ----------
    thresholds : ``{regime: threshold}`` on the 0–100 scale; unsafe when ``score > threshold``.
    regimes : ``{regime: minimum gold tier}``: how each regime is defined on the rubric.
        Defaults to FlexBench's strict (≥LOW) / moderate (≥MODERATE) / loose (≥HIGH).
    categories : ``{category: {regime: threshold}}`` partial overrides.
    modes : ``{"prompt"|"response": {"thresholds": {...}, "categories": {...}}}`` overrides.
    default_regime : the regime whose decision is reported as ``flagged``.
    on_parse_error, on_error : what an item the moderator could not judge gets (its output
        did not parse; it raised): ``flag`` (default), ``review`` or ``allow``. Never silently safe.
    on_out_of_scope, on_truncated : what an unflagged item gets when the moderator cannot vouch
        for its score (a language it was not trained on; text it did not read to the end):
        ``review`` (default), ``flag`` or ``score`` (trust the score). A flagged item stays flagged.
    name : free text, shown in reports.

    Examples
    --------
    >>> p = Policy()
    >>> p.decide(35.0)
    {'strict': True, 'moderate': False, 'loose': False}
    """

    thresholds: dict[str, float] = field(default_factory=default_thresholds)
    regimes: dict[str, Tier] = field(default_factory=default_regimes)
    categories: dict[Category, dict[str, float]] = field(default_factory=dict)
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_regime: str = Regime.MODERATE.value
    on_parse_error: str = "flag"
    on_error: str = "flag"
    on_out_of_scope: str = "review"
    on_truncated: str = "review"
    name: str = "rubric-default"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.regimes = {str(k): Tier.parse(v) for k, v in self.regimes.items()}
        if not self.regimes:
            raise ConfigError("a policy needs at least one regime")
        self.thresholds = self._check(self.thresholds, "thresholds", partial=False)
        self.categories = {_category(c): self._check(t, f"categories.{c}") for c, t in self.categories.items()}
        modes: dict[str, dict[str, Any]] = {}
        for mode, spec in self.modes.items():
            if mode not in MODES:
                raise ConfigError(f"unknown mode {mode!r} in policy; expected one of {', '.join(MODES)}")
            spec = dict(spec or {})
            unknown = set(spec) - {"thresholds", "categories"}
            if unknown:
                raise ConfigError(f"modes.{mode}: unknown key(s) {', '.join(sorted(unknown))}; use 'thresholds' and 'categories'")
            modes[mode] = {
                "thresholds": self._check(spec.get("thresholds") or {}, f"modes.{mode}.thresholds"),
                "categories": {_category(c): self._check(t, f"modes.{mode}.categories.{c}")
                               for c, t in (spec.get("categories") or {}).items()},
            }
        self.modes = modes
        if self.default_regime not in self.regimes:
            raise ConfigError(f"default_regime {self.default_regime!r} is not a regime of this policy "
                              f"({', '.join(self.regimes)})")
        for key, allowed in (("on_parse_error", ON_UNJUDGED), ("on_error", ON_UNJUDGED),
                             ("on_out_of_scope", ON_UNCERTAIN), ("on_truncated", ON_UNCERTAIN)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        for mode_or_all in (None, *MODES):
            for cat in (None, *Category):
                self._check_order(self.resolve(category=cat, mode=mode_or_all), mode_or_all, cat)

    # -- construction helpers ---------------------------------------------------------
    def _check(self, t: Mapping[str, Any], where: str, partial: bool = True) -> dict[str, float]:
        if not isinstance(t, Mapping):
            raise ConfigError(f"{where} must be a mapping of regime to threshold, got {type(t).__name__}")
        unknown = [k for k in t if k not in self.regimes]
        if unknown:
            raise ConfigError(f"{where}: unknown regime(s) {', '.join(map(repr, unknown))}; known: {', '.join(self.regimes)}")
        if not partial and (missing := [r for r in self.regimes if r not in t]):
            raise ConfigError(f"{where}: no threshold for regime(s) {', '.join(missing)}")
        return {k: check_score(v, what=f"{where}.{k}") for k, v in t.items()}

    def _check_order(self, th: dict[str, float], mode: str | None, cat: Category | None) -> None:
        ordered = sorted(self.regimes, key=lambda r: self.regimes[r].rank)
        for a, b in zip(ordered, ordered[1:]):
            if th[a] > th[b]:
                where = "/".join(x for x in (mode, cat and cat.value) if x) or "global"
                raise ConfigError(
                    f"thresholds must not decrease with strictness: {a} ({th[a]:g}) > {b} ({th[b]:g}) [{where}]; "
                    f"a stricter regime must flag at least what a looser one flags"
                )

    @property
    def regime_names(self) -> list[str]:
        """Regimes from strictest (lowest minimum tier) to loosest."""
        return sorted(self.regimes, key=lambda r: self.regimes[r].rank)

    def resolve(self, *, category: Category | str | None = None, mode: str | None = None) -> dict[str, float]:
        """The thresholds that apply to one (category, mode) pair."""
        th = dict(self.thresholds)
        cat = None if category is None else Category.parse(category)
        spec = self.modes.get(mode) if mode else None
        if spec:
            th.update(spec["thresholds"])
        if cat is not None and cat in self.categories:
            th.update(self.categories[cat])
        if spec and cat is not None and cat in spec["categories"]:
            th.update(spec["categories"][cat])
        return th

    # -- decisions ------------------------------------------------------------------
    def decide(self, score: float, *, category: Category | str | None = None, mode: str | None = None) -> dict[str, bool]:
        """Decision of every regime for one score."""
        th = self.resolve(category=category, mode=mode)
        return {r: bool(score > th[r]) for r in self.regime_names}

    def decide_many(
        self,
        scores: Sequence[float] | np.ndarray,
        *,
        categories: Sequence[Category | str | None] | None = None,
        modes: Sequence[str | None] | str | None = None,
    ) -> Decisions:
        """Vectorised decisions for many scores (NaN = no score: never flagged)."""
        scores = np.asarray(scores, dtype=float)
        n = len(scores)
        if isinstance(modes, str) or modes is None:
            modes = [modes] * n
        if categories is None:
            categories = [None] * n
        if len(categories) != n or len(modes) != n:
            raise ConfigError("scores, categories and modes must have the same length")
        th = {r: np.full(n, self.thresholds[r]) for r in self.regimes}
        if self.categories or self.modes:
            keys = list(zip((None if c is None else str(c) for c in categories), modes))
            for key in set(keys):
                if key == (None, None):
                    continue
                mask = np.fromiter((k == key for k in keys), bool, n)
                for r, t in self.resolve(category=key[0], mode=key[1]).items():
                    th[r][mask] = t
        margins = {r: scores - th[r] for r in self.regime_names}
        flags = {r: np.nan_to_num(margins[r], nan=-1.0) > 0 for r in self.regime_names}
        return Decisions(flags=flags, margins=margins, thresholds=th)

    def verdict(self, score: float | None, *, label: bool | None = None, category: Category | str | None = None,
                mode: str | None = None, strictness: str | None = None, threshold: float | None = None,
                unjudged: str | None = None, out_of_scope: bool = False, truncated: bool = False) -> Verdict:
        """The full decision record of one result.

        A label-only moderator (``score`` None, ``label`` set) gets its one decision for every
        regime and no threshold. ``unjudged`` (``"parse_error"`` or ``"error"``) means the
        moderator could not judge the item: ``on_parse_error`` / ``on_error`` decide, for every
        regime. An unflagged item that is ``out_of_scope`` or ``truncated`` gets
        ``on_out_of_scope`` / ``on_truncated`` unless that is ``score``.
        """
        th = self.resolve(category=category, mode=mode)
        names = self.regime_names
        no_margins: dict[str, float | None] = {r: None for r in names}
        margins: dict[str, float | None]
        margin: float | None
        used: float | None
        if score is None and label is None:
            unjudged = unjudged or "parse_error"
        if score is None:
            flagged, used, margins, margin = bool(label), None, no_margins, None
            decisions = {r: bool(label) for r in names}
            reason = "label"
        else:
            flagged, used = self.flag(score, category=category, mode=mode, strictness=strictness, threshold=threshold)
            by_regime = {r: round(score - th[r], 3) for r in names}
            margin = min(by_regime.values(), key=abs)
            margins = dict(by_regime)
            decisions = {r: score > th[r] for r in names}
            reason = "score"
        if used is None and unjudged is not None:
            used = self.flag(None, category=category, mode=mode, strictness=strictness, threshold=threshold)[1]
        decision = "flag" if flagged else "allow"
        # What the moderator could not do never lowers a flag, only raises one. In order: an
        # unjudged item follows on_parse_error / on_error (its "allow" is final); a doubtful score
        # follows on_out_of_scope, then on_truncated ("score": trust it, look at the next rule).
        rules = [(self.on_error if unjudged == "error" else self.on_parse_error, unjudged)] if unjudged else []
        rules += [(rule, why) for rule, why, applies in ((self.on_out_of_scope, "out_of_scope", out_of_scope),
                                                         (self.on_truncated, "truncated", truncated)) if applies]
        for rule, why in rules if not flagged else []:
            if rule == "score":
                continue
            reason = why
            if rule != "allow":
                decision, decisions = rule, {r: True for r in names}
            break
        return Verdict(decision != "allow", used, decisions, margins, th, margin, decision=decision, reason=reason)

    # -- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "default_regime": self.default_regime,
            "regimes": {r: self.regimes[r].value for r in self.regime_names},
            "thresholds": {r: round(self.thresholds[r], 4) for r in self.regime_names},
        }
        if self.categories:
            d["categories"] = {c.value: t for c, t in self.categories.items()}
        if self.modes:
            d["modes"] = {m: {"thresholds": s["thresholds"], "categories": {c.value: t for c, t in s["categories"].items()}}
                          for m, s in self.modes.items()}
        for key in ("on_parse_error", "on_error", "on_out_of_scope", "on_truncated"):
            d[key] = getattr(self, key)
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        if not isinstance(d, Mapping):
            raise ConfigError(f"a policy must be a mapping, got {type(d).__name__}")
        known = {"name", "default_regime", "regimes", "thresholds", "categories", "modes", "meta", "on_parse_error",
                 "on_error", "on_out_of_scope", "on_truncated"}
        if unknown := set(d) - known:
            raise ConfigError(f"unknown policy key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        regimes = d.get("regimes") or default_regimes()
        thresholds = d.get("thresholds")
        if thresholds is None:
            if set(regimes) - set(default_thresholds()):
                raise ConfigError("custom regimes need explicit 'thresholds'")
            thresholds = {r: default_thresholds()[r] for r in regimes}
        return cls(
            thresholds=dict(thresholds), regimes=dict(regimes),
            categories=dict(d.get("categories") or {}), modes=dict(d.get("modes") or {}),
            default_regime=d.get("default_regime",
                                 Regime.MODERATE.value if Regime.MODERATE.value in regimes else next(iter(regimes))),
            name=d.get("name", "custom"), meta=dict(d.get("meta") or {}),
            **{k: d[k] for k in ("on_parse_error", "on_error", "on_out_of_scope", "on_truncated") if k in d},
        )

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Load a policy from YAML (or JSON, which is YAML)."""
        import yaml

        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; --policy takes a YAML file (flexguard calibrate --out writes one)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such policy file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file; a policy is YAML") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML: {e}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    def flag(
        self, score: float | None, *, category: Category | str | None = None, mode: str | None = None,
        strictness: str | None = None, threshold: float | None = None,
    ) -> tuple[bool, float]:
        """The single ``flagged`` verdict and the threshold it used.

        ``threshold`` (0–100) wins over ``strictness`` (a regime name), which wins over the
        policy's ``default_regime``. No score means not flagged.
        """
        if threshold is not None:
            t = check_score(threshold, what="threshold")
        else:
            regime = strictness or self.default_regime
            if regime not in self.regimes:
                raise ConfigError(f"unknown strictness {regime!r}; this policy has {', '.join(self.regime_names)}")
            t = self.resolve(category=category, mode=mode)[regime]
        return (score is not None and score > t), t
