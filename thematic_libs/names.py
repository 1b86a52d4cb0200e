"""Chinese personal names as other departments write them: one normalisation for every match by name.

Departments write the same person's name differently: traditional characters (陳偉 for 陈伟: Hong Kong
and Macau documents, hospital systems that still store them), full-width letters and spaces, the
middle dot of ethnic-minority names in any of its forms (·, •, ．, ・), a space between surname and
given name, or one character typed by ear (张筱宇 for 张晓宇). Everything in the platform that matches
people by name goes through `name_keys` (and `describe_name_match` to explain a match), so that each
comparison sees the same forms:

- `normalised`: NFKC (full-width to half-width), every middle-dot form to `·`, white space removed,
  lower case (Latin letters), traditional to simplified (OpenCC `t2s`);
- `surname` / `given`: kept apart where the source separates them (a space or comma between the two
  parts), else the compound surnames of `COMPOUND_SURNAMES` or the first character; names with a
  middle dot have no surname in this sense (the parts are personal and father's names);
- `pinyin_tones` / `pinyin`: the normalised name in pinyin, one default reading per character
  (pypinyin, TONE3 style: `xiao3`), with and without tones, so that a homophone slip compares equal
  while a different name does not. Per-character readings are deliberate: a phrase-aware reading
  could give the same character two readings in two names and part a homophone pair.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import opencc
from pypinyin import Style, pinyin

_T2S = opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional characters to simplified (OpenCC `t2s`): the one converter of the platform."""
    return _T2S.convert(text)


MIDDLE_DOTS = "·•．・‧∙⋅.･"
_DOTS = re.compile(f"[{re.escape(MIDDLE_DOTS)}]+")
_SPACE = re.compile(r"\s+")
_SEPARATED = re.compile(r"^\s*(\S+)\s*[,，\s]\s*(\S+)\s*$")
COMPOUND_SURNAMES = frozenset(
    [
        *("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文"),
        *("司徒", "夏侯", "轩辕", "令狐", "钟离", "端木", "澹台", "西门", "南宫", "呼延", "独孤"),
    ]
)


@dataclass(frozen=True)
class NameKeys:
    normalised: str
    surname: str | None
    given: str
    pinyin_tones: str
    pinyin: str


def _simplified(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _DOTS.sub("·", text)
    return to_simplified(text.lower())


@functools.lru_cache(maxsize=65536)
def _reading(char: str) -> str:
    """Default pinyin reading of one character in TONE3 style (neutral tone: no digit); itself if none."""
    reading = pinyin(char, style=Style.TONE3, heteronym=False, errors=lambda c: c)[0][0]
    return reading


def _pinyin(name: str) -> tuple[str, str]:
    tones = " ".join(_reading(c) for c in name if c != "·")
    return tones, re.sub(r"[0-9]", "", tones)


@functools.lru_cache(maxsize=262144)
def name_keys(raw: str | None) -> NameKeys | None:
    """The comparison forms of one name (None for a missing or blank name)."""
    if raw is None or not raw.strip():
        return None
    separated = _SEPARATED.match(unicodedata.normalize("NFKC", raw)) if "·" not in _simplified(raw) else None
    normalised = _SPACE.sub("", _simplified(raw))
    if "·" in normalised:
        surname, given = None, normalised
    elif separated:
        surname, given = (
            _SPACE.sub("", _simplified(separated.group(1))),
            _SPACE.sub("", _simplified(separated.group(2))),
        )
    elif normalised[:2] in COMPOUND_SURNAMES and len(normalised) > 2:
        surname, given = normalised[:2], normalised[2:]
    else:
        surname, given = normalised[:1], normalised[1:]
    tones, plain = _pinyin(normalised)
    return NameKeys(normalised, surname, given, tones, plain)


def normalise_name(raw: str | None) -> str | None:
    """The normalised form of a name (see the module docstring); None for a missing or blank name."""
    keys = name_keys(raw)
    return keys.normalised if keys else None


def name_columns(names: Iterable[str | None]) -> dict[str, list[str | None]]:
    """Columns `name_norm`, `name_surname`, `name_pinyin_tones`, `name_pinyin` for a column of names
    (each distinct name computed once)."""
    out: dict[str, list[str | None]] = {"name_norm": [], "name_surname": [], "name_pinyin_tones": [], "name_pinyin": []}
    for raw in names:
        keys = name_keys(raw)
        out["name_norm"].append(keys.normalised if keys else None)
        out["name_surname"].append(keys.surname if keys else None)
        out["name_pinyin_tones"].append(keys.pinyin_tones if keys else None)
        out["name_pinyin"].append(keys.pinyin if keys else None)
    return out


def _forms(raw: str, keys: NameKeys) -> list[str]:
    """What normalisation changed in a name as delivered."""
    nfkc = unicodedata.normalize("NFKC", raw)
    forms = []
    if nfkc != raw:
        forms.append("full-width characters")
    if _SPACE.search(nfkc.strip()):
        forms.append("a space inside")
    if any(c in MIDDLE_DOTS and c != "·" for c in nfkc):
        forms.append("another middle-dot form")
    if to_simplified(nfkc) != nfkc:
        forms.append("traditional characters")
    return forms


def describe_name_match(a: str | None, b: str | None) -> str:
    """Why two names compare as they do, in words a reviewer can check against the two records, e.g.
    `traditional characters in 陳偉; equal after normalisation (陈伟)` or
    `pinyin equal with tones: 筱/晓 (xiao3); surname equal`."""
    ka, kb = name_keys(a), name_keys(b)
    if ka is None or kb is None:
        return "a name is missing"
    notes = [f"{', '.join(forms)} in {raw}" for raw, keys in ((a, ka), (b, kb)) if (forms := _forms(raw, keys))]
    if ka.normalised == kb.normalised:
        relation = "names equal" if a == b else f"equal after normalisation ({ka.normalised})"
    else:
        differing = (
            [(x, y) for x, y in zip(ka.normalised, kb.normalised, strict=False) if x != y]
            if len(ka.normalised) == len(kb.normalised)
            else []
        )
        slips = ", ".join(f"{x}/{y} ({_reading(x)})" for x, y in differing)
        if ka.pinyin_tones == kb.pinyin_tones:
            relation = f"pinyin equal with tones: {slips}"
        elif ka.pinyin == kb.pinyin:
            relation = f"pinyin equal without tones: {slips or ka.pinyin}"
        elif len(differing) == 1:
            x, y = differing[0]
            relation = f"one character different: {x}/{y} ({_reading(x)} vs {_reading(y)})"
        else:
            relation = f"names differ: {ka.normalised} vs {kb.normalised}"
        if ka.surname is not None and kb.surname is not None:
            relation += "; surname equal" if ka.surname == kb.surname else "; surname differs"
    return "; ".join([*notes, relation])
