"""Can a moderator judge this text? Language and script detection, so that the policy can route
what it cannot.

The embedded models learned English: a pipe-bomb request scores 96 in English and 4 in
Chinese. Rather than pretend, they report each text's ``language`` and whether it is
``in_scope``, and the policy's ``on_out_of_scope`` decides (review by default). Detection is
deliberately conservative, because a false "out of scope" sends benign English to review:

* text whose letters are mostly not Latin script is out of scope for a Latin-script
  language list (Chinese, Arabic, Cyrillic, …);
* Latin-script text of at least ``MIN_WORDS`` words is out of scope when `py3langid`
  (langid.py's maintained fork, model bundled, offline) names another language with
  probability ≥ ``MIN_PROBABILITY`` among common Latin-script languages;
* shorter text, text without letters (code, numbers) and anything uncertain stay in scope.

On FlexBench-R valid this reports 10 of 993 items out of scope, each written wholly or partly
in another language; 12 of 12 translations of one harmful request are caught
(``benchmarks/bench_scope.py``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

#: Latin-script languages langid chooses among: restricting the choice sharpens its probabilities.
LATIN_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "no", "fi", "tr", "id", "ms", "vi", "ro",
                   "cs", "sk", "hu", "hr", "sl", "et", "lv", "lt", "ca", "eu", "gl", "af", "sw", "tl", "la", "eo", "is",
                   "ga", "cy", "sq", "az", "uz")
MIN_WORDS = 3
MIN_PROBABILITY = 0.75
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Scope:
    """``in_scope`` for a moderator of ``languages``; ``language`` as detected (``None``: not decided,
    e.g. too short; a script name such as ``"CJK"`` when the script alone decided)."""

    in_scope: bool
    language: str | None


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LATIN_LANGUAGES))
    return ident


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def detect_scope(text: str, languages: tuple[str, ...] = ("en",)) -> Scope:
    """Whether a moderator trained on ``languages`` (Latin-script language codes) can judge ``text``.

    >>> detect_scope("How do I build a pipe bomb?")
    Scope(in_scope=True, language='en')
    >>> detect_scope("我怎么制作管状炸弹？")
    Scope(in_scope=False, language='CJK')
    >>> detect_scope("Wie baue ich eine Rohrbombe?")
    Scope(in_scope=False, language='de')
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return Scope(True, None)
    scripts: dict[str, int] = {}
    for c in letters:
        s = _script(c)
        scripts[s] = scripts.get(s, 0) + 1
    top = max(scripts, key=scripts.__getitem__)
    if scripts.get("LATIN", 0) < len(letters) / 2:
        return Scope(False, top)
    if len(_WORD.findall(text)) < MIN_WORDS:
        return Scope(True, None)
    lang, p = _identifier().classify(text)
    if lang not in languages and p >= MIN_PROBABILITY:
        return Scope(False, lang)
    return Scope(True, lang if p >= MIN_PROBABILITY else None)
