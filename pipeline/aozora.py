"""Aozora Bunko (青空文庫) text hygiene: turn a raw Aozora text file into plain text.

What goes: the notation-explanation block under the title, the bibliography/credits footer (from the
first ``底本：`` line on), ruby readings ``《…》`` and the ruby-start mark ``｜`` (the base text
stays: ``羅生門《らしょうもん》`` -> ``羅生門``), and every ``［＃…］`` annotation. Gaiji notes
``※［＃「…」、第3水準1-85-54］`` become the character itself (JIS X 0213 plane-row-cell, or ``U+XXXX``);
those with no code become ``〓`` (the conventional placeholder). Repeat marks ``／＼`` and ``／″＼``
become ``〳〵`` and ``〴〵``. Lines are right-stripped and blank lines dropped, so one work is one
block of lines (the format of ``aozora_ja.txt`` in the shared data).
"""

from __future__ import annotations

import re

GETA = "〓"
_GAIJI = re.compile(r"※［＃([^］]*)］")
_JIS_CODE = re.compile(r"(?:第[34]水準)?([12])-(\d{1,2})-(\d{1,2})")
_UNICODE_CODE = re.compile(r"U\+([0-9A-Fa-f]{4,6})")
_ANNOTATION = re.compile(r"［＃[^］]*］")
_RUBY = re.compile(r"《[^》]*》")
_DIVIDER = re.compile(r"^-{20,}$")


def jis_x0213_char(plane: int, row: int, cell: int) -> str | None:
    """The character at JIS X 0213 plane-row-cell, via the EUC-JIS-2004 codec."""
    if not (1 <= row <= 94 and 1 <= cell <= 94):
        return None
    raw = bytes([0xA0 + row, 0xA0 + cell])
    if plane == 2:
        raw = b"\x8f" + raw
    try:
        return raw.decode("euc_jis_2004")
    except UnicodeDecodeError:
        return None


def _gaiji(match: re.Match[str]) -> str:
    note = match.group(1)
    if m := _UNICODE_CODE.search(note):
        try:
            return chr(int(m.group(1), 16))
        except (ValueError, OverflowError):
            return GETA
    if m := _JIS_CODE.search(note):
        return jis_x0213_char(int(m.group(1)), int(m.group(2)), int(m.group(3))) or GETA
    return GETA


def strip_front_matter(lines: list[str]) -> list[str]:
    """Drops the notation-explanation block: the lines between the first two long ``-----`` lines."""
    dividers = [i for i, line in enumerate(lines[:80]) if _DIVIDER.match(line.strip())]
    if len(dividers) >= 2:
        return lines[: dividers[0]] + lines[dividers[1] + 1 :]
    return lines


def strip_footer(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        if line.startswith("底本："):
            return lines[:i]
    return lines


def clean_markup(text: str) -> str:
    """Gaiji, annotations, ruby and repeat marks; line structure untouched."""
    text = _GAIJI.sub(_gaiji, text)
    text = _ANNOTATION.sub("", text)
    text = _RUBY.sub("", text).replace("｜", "")
    return text.replace("／″＼", "〴〵").replace("／＼", "〳〵")


def clean_aozora(text: str) -> str:
    """A raw Aozora text (str, any line endings) as plain text, one line per paragraph."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = strip_footer(strip_front_matter(lines))
    body = clean_markup("\n".join(lines))
    kept = [line.rstrip() for line in body.split("\n")]
    return "\n".join(line for line in kept if line) + "\n"


def read_aozora(path: str, encoding: str | None = None) -> str:
    """Reads a raw Aozora file (Shift_JIS/cp932 as distributed, or UTF-8) and cleans it."""
    data = open(path, "rb").read()
    for enc in [encoding] if encoding else ["utf-8", "cp932"]:
        try:
            return clean_aozora(data.decode(enc))
        except UnicodeDecodeError as e:
            last = e
    raise ValueError(f"{path}: not valid {encoding or 'UTF-8 or Shift_JIS'} at byte offset {last.start}")
