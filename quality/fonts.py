"""The one place that gives matplotlib a Chinese font, so every chart is labelled with Chinese names.

matplotlib's own fonts (DejaVu) have no CJK glyphs: without a CJK font a Chinese label is drawn as empty
boxes, which is why charts used to fall back to pinyin codes. `make setup` installs Debian's
`fonts-wqy-microhei` (WenQuanYi Micro Hei, 1.6 MB) beside chromium and kcat; any other CJK font that
fontconfig knows (Noto Sans CJK, Source Han Sans, a district's own) works too, and `YIWANG_CJK_FONT` may
name a font file. The file is registered with matplotlib directly, so a font installed after matplotlib
built its font cache is found as well. Nothing is ever downloaded.

    from quality.fonts import use_cjk_font
    use_cjk_font()             # before drawing: the family name, or None (charts fall back to codes)
    use_cjk_font(required=True)  # raises MissingCJKFont with what to install
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

FONT_ENV = "YIWANG_CJK_FONT"
KNOWN_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
INSTALL_HINT = "apt-get install fonts-wqy-microhei (make setup does), or set YIWANG_CJK_FONT to a font file"


class MissingCJKFont(RuntimeError):
    """No font that can draw Chinese is installed."""


def _fontconfig_files() -> list[str]:
    """Font files fontconfig says cover Chinese (`fc-list :lang=zh`), if fontconfig is there."""
    if shutil.which("fc-list") is None:
        return []
    try:
        listed = subprocess.run(
            ["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split(":")[0].strip() for line in listed.splitlines() if line.strip()})


def cjk_font_file() -> Path | None:
    """The font file charts use for Chinese: YIWANG_CJK_FONT, a known Debian font, else any fontconfig knows."""
    candidates = [os.environ.get(FONT_ENV, ""), *KNOWN_FILES, *_fontconfig_files()]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and Path(candidate).suffix.lower() in (".ttf", ".ttc", ".otf"):
            return Path(candidate)
    return None


@cache
def _register(path: str) -> str:
    from matplotlib import font_manager

    font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=path).get_name()


def use_cjk_font(required: bool = False) -> str | None:
    """Make matplotlib draw Chinese: register the CJK font and put it first in the sans-serif list (DejaVu stays
    behind it for what it lacks). Returns its family name; None (or MissingCJKFont when `required`) without one."""
    from matplotlib import rcParams

    path = cjk_font_file()
    if path is None:
        if required:
            raise MissingCJKFont(f"no font that can draw Chinese is installed: {INSTALL_HINT}")
        return None
    family = _register(str(path))
    rcParams["font.family"] = "sans-serif"
    rcParams["font.sans-serif"] = [family, *[f for f in rcParams["font.sans-serif"] if f != family]]
    rcParams["axes.unicode_minus"] = False  # the CJK fonts lack U+2212; a hyphen-minus reads the same
    return family


def draws_chinese(text: str = "数据质量 区民政局") -> bool:
    """Whether matplotlib, as configured now, has a glyph for every character of `text` in the font it picks."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family=["sans-serif"])))
    return all(font.get_char_index(ord(ch)) != 0 for ch in text if not ch.isspace())
