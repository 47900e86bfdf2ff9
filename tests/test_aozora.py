"""Aozora Bunko hygiene (pipeline.aozora)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.aozora import clean_aozora, jis_x0213_char, read_aozora

RAW = (
    "作品名\r\n著者\r\n\r\n"
    "-------------------------------------------------------\r\n"
    "【テキスト中に現れる記号について】\r\n《》：ルビ\r\n"
    "-------------------------------------------------------\r\n\r\n"
    "　所々｜丹塗《にぬり》の剥《は》げた門。※［＃「てへん＋丑」、第4水準2-12-93］と※［＃「口＋世」、U+546D、12-3］。\r\n"
    "［＃５字下げ］見出し［＃「見出し」は中見出し］\r\n"
    "　くり返し／＼と／″＼。※［＃「不明な字」］\r\n\r\n\r\n"
    "底本：「全集」\r\n入力：誰か\r\n"
)


def test_cleans_markup_header_and_footer():
    assert clean_aozora(RAW) == (
        "作品名\n著者\n"
        "　所々丹塗の剥げた門。扭と呭。\n"
        "見出し\n"
        "　くり返し〳〵と〴〵。〓\n"
    )


def test_jis_x0213_lookup():
    # The raw 羅生門 describes these two gaiji as 「目＋匡」 (level 3) and 「てへん＋丑」 (level 4).
    assert jis_x0213_char(1, 88, 81) == "眶"
    assert jis_x0213_char(2, 12, 93) == "扭"
    assert jis_x0213_char(1, 95, 1) is None


@pytest.mark.data
def test_reproduces_the_shared_cleaned_corpus(data_dir: Path):
    """The shared aozora_ja.txt was cleaned by the rules this module implements: 羅生門 must match."""
    ours = read_aozora(str(data_dir / "aozora" / "rashomon_aozora_raw.txt"))
    works = (data_dir / "aozora" / "aozora_ja.txt").read_text(encoding="utf-8").split("\n\n")
    reference = [w for w in works if w.startswith("羅生門\n芥川龍之介\n")]
    assert len(reference) == 1
    assert ours == reference[0] + "\n"


def test_read_aozora_reports_undecodable_bytes(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("題\n".encode("utf-8") + b"\xff\xff\xff")
    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset"):
        read_aozora(str(bad), encoding="utf-8")
    sjis = tmp_path / "sjis.txt"
    sjis.write_bytes("羅生門《らしょうもん》\r\n".encode("cp932"))
    assert read_aozora(str(sjis)) == "羅生門\n"
