"""The one-call GB 18030 transcoder must give, value by value, exactly what Python's codec gives, or step
aside (None) for the per-value path; bytes the codec rejects must never come out as text."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingestion.gb18030 import _two_byte_utf8_pairs, transcode
from ingestion.readers import _string_view_column, _utf8_column

CODECS = ["gb18030", "gbk", "gb2312"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# Characters that exercise each branch: ASCII, two-byte sequences with a high trail (张) and with a low
# trail 0x40-0x7E (玥 AB68, 赟 DA53, 昇 954E), two-byte sequences that are two UTF-8 bytes (· × é Я),
# the euro sign and private-use characters, four-byte GB 18030 sequences (✓ 𠮷 and emoji).
INTERESTING = list("aZ09 ,-#张伟欧阳李·娜×÷°é§Я玥赟昇珺璟祎旻丂亐Ａ１€\ue000\ue5e5✓𠮷😀")
CHARS = st.one_of(st.sampled_from(INTERESTING), st.characters(exclude_categories=("Cs",)))


def _values_and_offsets(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(v) for v in values], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.frombuffer(b"".join(values), dtype=np.uint8), offsets


def _split(result: tuple[np.ndarray, np.ndarray]) -> list[str]:
    utf8, offsets = result
    return [utf8[a:b].tobytes().decode("utf-8") for a, b in itertools.pairwise(offsets)]


def _check(values: list[bytes], codec: str) -> list[str] | None:
    """The transcoder's answer, checked against decoding each value alone; None when it stepped aside."""
    expected: list[str] | None
    try:
        expected = [v.decode(codec) for v in values]
    except UnicodeDecodeError:
        expected = None
    data, offsets = _values_and_offsets(values)
    try:
        result = transcode(data, offsets, codec)
    except UnicodeDecodeError:
        assert expected is None, "the transcoder rejected bytes that decode value by value"
        return None
    if result is None:
        return None
    assert expected is not None, "the transcoder turned undecodable bytes into text"
    assert _split(result) == expected
    return expected


@pytest.mark.parametrize("codec", CODECS)
def test_the_codec_meets_the_transcoders_assumptions(codec: str) -> None:
    """If a Python release changed its GB codecs, the fast path would switch itself off, not go wrong. The
    table built in one call equals decoding every sequence on its own."""
    table = _two_byte_utf8_pairs(codec)
    assert table is not None
    for lead in range(0x80, 0x100):
        for trail in range(0x40, 0x100):
            try:
                char = bytes((lead, trail)).decode(codec)
            except UnicodeDecodeError:
                assert not table[lead * 256 + trail]
                continue
            assert len(char) == 1
            assert table[lead * 256 + trail] == (len(char.encode("utf-8")) == 2)
            assert len(char.encode("utf-8")) in (2, 3)


@SETTINGS
@given(texts=st.lists(st.text(CHARS, max_size=12), max_size=40))
@example(texts=["张伟", "", "a", "玥", "李·娜", "昇a", "b赟"])
def test_text_round_trips_like_the_codec(texts: list[str]) -> None:
    encoded = [t.encode("gb18030") for t in texts]
    assert _check(encoded, "gb18030") == texts, "valid text must take the fast path"


@SETTINGS
@given(
    codec=st.sampled_from(CODECS),
    texts=st.lists(st.text(st.sampled_from("张伟欧阳李娜玥赟昇·×é丂aZ0 "), max_size=8), max_size=30),
)
def test_every_gb_codec_round_trips(codec: str, texts: list[str]) -> None:
    encoded = [t.encode(codec, errors="ignore") for t in texts]
    _check(encoded, codec)


_PIECES = st.one_of(
    st.binary(max_size=3),
    st.sampled_from([b"\x81", b"\xfe", b"\x80", b"\xff", b"\x81\x30", b"\x81\x30\x81\x30", b"\x7f", b"@", b"\x00"]),
    st.text(st.sampled_from(INTERESTING), max_size=3).map(lambda t: t.encode("gb18030")),
)


@SETTINGS
@given(codec=st.sampled_from(CODECS), values=st.lists(st.lists(_PIECES, max_size=5).map(b"".join), max_size=30))
@example(codec="gb18030", values=[b"\xab", b"\x68"])  # a lead byte at the end of one value, its trail in the next
@example(codec="gb18030", values=[b"\xab", b"\xab"])
@example(codec="gb18030", values=[b"\xab\xab\xab", b"\xab"])
@example(codec="gb18030", values=[b"\xab\xab", b"\xab\x68"])
@example(codec="gb18030", values=[b"\xab\xab\xab", b"\x68"])
@example(codec="gb18030", values=[b"\x81\x30\x81\x30"])
def test_random_bytes_are_never_decoded_wrongly(codec: str, values: list[bytes]) -> None:
    _check(values, codec)


@pytest.mark.parametrize("codec", CODECS)
def test_every_two_byte_sequence(codec: str) -> None:
    """Each sequence of a high lead byte and a trail >= 0x40 as its own value, and all of them run together."""
    pairs = [bytes((lead, trail)) for lead in range(0x80, 0x100) for trail in range(0x40, 0x100)]
    decodable = []
    for pair in pairs:
        try:
            pair.decode(codec)
        except UnicodeDecodeError:
            continue
        decodable.append(pair)
    assert _check(decodable, codec) is not None
    assert _check([b"x" + p for p in decodable], codec) is not None  # pairs at odd positions
    assert _check([b"".join(decodable[i : i + 7]) for i in range(0, len(decodable), 7)], codec) is not None


@SETTINGS
@given(
    texts=st.lists(st.one_of(st.none(), st.text(CHARS.filter(lambda c: c != "\x00"), max_size=10)), max_size=40),
    chunk=st.integers(1, 7),
)
def test_column_transcoding_equals_python(texts: list[str | None], chunk: int) -> None:
    """The column as Arrow hands it over (chunks, nulls), through whichever path applies. (A file with a NUL
    byte never gets here: the per-value path uses NUL as its separator.)"""
    encoded = [None if t is None else t.encode("gb18030") for t in texts]
    chunks = [pa.array(encoded[i : i + chunk], pa.binary()) for i in range(0, len(encoded), chunk)]
    column = pa.chunked_array(chunks, pa.binary())
    result = _utf8_column(column, "gb18030")
    assert result.type == pa.string()
    assert result.to_pylist() == texts


@SETTINGS
@given(
    picks=st.lists(st.integers(0, 5), max_size=60),
    words=st.lists(st.text(CHARS.filter(lambda c: c != "\x00"), max_size=6), min_size=6, max_size=6),
    chunk=st.integers(1, 9),
    codec=st.sampled_from(["gb18030", "utf-8"]),
    distinct_first=st.sampled_from([None, True, False]),
)
def test_parsed_columns_become_views_as_python_decodes_them(
    picks: list[int], words: list[str], chunk: int, codec: str, distinct_first: bool | None
) -> None:
    """A parsed column (empty fields as empty values) through `_string_view_column`: repeated values (few
    distinct, transcoded once each where asked), empty values as nulls, chunks, whichever path applies."""
    texts = [words[p] for p in picks]
    encoded = [t.encode(codec) for t in texts]
    kind = pa.string() if codec == "utf-8" else pa.binary()
    chunks = [pa.array(encoded[i : i + chunk], kind) for i in range(0, len(encoded), chunk)]
    result = _string_view_column(pa.chunked_array(chunks, kind), codec, distinct_first)
    assert result.type == pa.string_view()
    assert result.to_pylist() == [t or None for t in texts]


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ([b"\x80A", "张".encode("gb18030")], "0x80 is the euro sign to some decoders, an error to Python's GB 18030"),
        ([b"\xb0\x80\x80A"], "0x80 as a trail, then as a lead"),
        (["张\ue000".encode("gb18030"), b"a"], "a user-defined character, which GBK decoders reject"),
        (["李\ue78d".encode("gb18030")], "A6D9, which GB 18030-2022 decoders read as U+FE10"),
        ([b"\xa1\xa4", b"\xa8\xbc", b"\xfe\x51"], "sequences whose characters differ between 2005 and 2022"),
        ([b"\xb0\xff"], "a trail byte no codec accepts"),
    ],
)
def test_sequences_that_decoders_read_differently_follow_python(values: list[bytes], why: str) -> None:
    _check(values, "gb18030")
    try:
        expected = [v.decode("gb18030") for v in values]
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            transcode(*_values_and_offsets(values), "gb18030")
        return
    result = transcode(*_values_and_offsets(values), "gb18030")
    assert result is not None and _split(result) == expected, why


@SETTINGS
@given(
    texts=st.lists(
        st.text(st.sampled_from("张伟欧阳李娜玥赟昇·×é丂aZ0 \ue000\ue78d€"), max_size=8).map(
            lambda t: t.encode("gb18030")
        ),
        max_size=30,
    ),
    noise=st.lists(st.sampled_from([b"\x80", b"\xa6\xd9", b"\xfe\x51", b"\xa8\xbc", b"\xaa\xa1"]), max_size=3),
)
def test_sequences_that_decoders_read_differently_anywhere(texts: list[bytes], noise: list[bytes]) -> None:
    """Text with the sequences where GB 18030 decoders part ways (2005 and 2022, GBK), in any position."""
    _check(texts + noise, "gb18030")
    _check(noise + texts, "gb18030")
