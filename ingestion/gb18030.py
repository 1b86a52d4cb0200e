"""GB 18030 (and GBK, GB 2312) text columns to UTF-8 with one codec call per column.

A CSV delivered in GB 18030 is parsed as bytes; its non-ASCII columns must then become UTF-8 strings. Python's
codec decodes a whole column in one fast call but says nothing about where each value's text ends, and one call
per value is far too slow. So the concatenated values are decoded in one call, and numpy derives every value's
UTF-8 length from the byte structure, which is fully known in the common case where every non-ASCII character
is a two-byte sequence:

- a byte < 0x80 at a character boundary is one ASCII character; every lead byte is >= 0x80;
- the first byte >= 0x80 of a run of such bytes starts a character, so a run holds pairs from its start, and a
  run of odd length ends in a lead byte whose trail is the byte after the run (0x40-0x7E, a "low trail");
- every two-byte sequence the codec decodes is one character of three UTF-8 bytes, or of two for a few
  (U+0080-U+07FF, like `·`), which are located and counted per value. This is checked once per codec against
  Python's own codec, so the results are the codec's, value by value.

The few values with four-byte GB 18030 sequences are set aside and decoded one by one. Anything else (many
such values, a value that ends inside a character, a codec that breaks these assumptions) returns None, and the
caller takes its exact, slower path.

What this saves (bench/RESULTS.md, issue 16): reading a 1 M-row GB 18030 household-registration batch (80 MB)
takes 1.0-1.1 s on the CSV fast path that uses it (ingestion/readers.py) against 1.7-1.8 s on the exact path,
which decodes the whole file with Python's codec first. glibc's iconv through ctypes used to stand in for
Python's codec here; it saved about 0.1 s on that batch and nothing measurable in the whole run, so it is gone.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

_LOW_TRAIL = (0x40, 0x7E)


@functools.cache
def _two_byte_utf8_pairs(codec: str) -> np.ndarray | None:
    """The two-byte sequences that decode to a character of two UTF-8 bytes, as a table over `lead * 256 +
    trail`; None when the codec breaks an assumption of `transcode` (then it is never used for that codec).

    Every sequence of a lead byte >= 0x80 and a trail byte >= 0x40 is decoded with Python's codec, in one
    call: separated by line breaks, which no sequence can swallow, and with undecodable ones replaced.
    """
    if bytes(range(0x80)).decode(codec) != bytes(range(0x80)).decode("ascii"):
        return None
    for byte in range(0x80, 0x100):  # a byte >= 0x80 is never a character on its own
        with contextlib.suppress(UnicodeDecodeError):
            bytes((byte,)).decode(codec)
            return None
    pairs = [bytes((lead, trail)) for lead in range(0x80, 0x100) for trail in range(_LOW_TRAIL[0], 0x100)]
    chars = b"\n".join(pairs).decode(codec, errors="replace").split("\n")
    if len(chars) != len(pairs):
        return None
    two = np.zeros(0x10000, dtype=bool)
    for pair, char in zip(pairs, chars, strict=True):
        if "\ufffd" in char:  # not a character of this codec
            continue
        width = len(char.encode("utf-8"))
        if len(char) != 1 or width not in (2, 3):
            return None
        two[pair[0] * 256 + pair[1]] = width == 2
    return two


def transcode(values: np.ndarray, offsets: np.ndarray, codec: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The values in `codec` as UTF-8: (the UTF-8 bytes of all values, their offsets), or None when the
    column is not mostly ASCII and two-byte sequences (the caller then decodes value by value).

    `values` are the concatenated bytes (uint8), `offsets` the `count + 1` positions where each value starts
    and the last one ends (int64, starting at 0). Bytes the codec rejects raise UnicodeDecodeError, as
    decoding their value alone would. The few values with four-byte GB 18030 sequences (rare characters,
    often in names) are set aside and decoded one by one.
    """
    return _transcode(values, offsets, codec, set_aside=True)


def _transcode(
    values: np.ndarray, offsets: np.ndarray, codec: str, set_aside: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    two_byte_pairs = _two_byte_utf8_pairs(codec)
    size = len(values)
    if two_byte_pairs is None or offsets[0] != 0 or offsets[-1] != size:
        return None
    if size == 0:
        return np.empty(0, dtype=np.uint8), offsets.copy()
    pairs, strange = _pair_bytes(values)  # bit i: byte i belongs to a two-byte character; trails out of range
    if len(strange):
        return _set_aside(values, offsets, codec, strange) if set_aside else None
    paired_before = _counter(pairs)
    paired = paired_before(offsets)
    if (paired & 1).any():  # a value ends inside a character
        return None
    pair_count = int(paired[-1]) // 2
    text = str(memoryview(values), codec)
    if len(text) != size - pair_count:  # each pair decoded to one character: the structure was read right
        return None
    utf8 = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # Three UTF-8 bytes per pair and one per ASCII byte, less one per pair of only two UTF-8 bytes.
    short_count = size + pair_count - len(utf8)
    new_offsets = offsets + paired // 2
    if short_count:
        short = _short_pairs(values, pairs, paired_before, two_byte_pairs)
        if len(short) != short_count:
            return None
        count = len(offsets) - 1
        holding = np.searchsorted(offsets, short, side="right") - 1  # the value that holds each of them
        new_offsets[1:] -= np.cumsum(np.bincount(holding, minlength=count))
    return utf8, new_offsets


def _set_aside(
    values: np.ndarray, offsets: np.ndarray, codec: str, strange: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Transcode the column without the values that hold `strange` positions, decode those one by one, and
    put the results together in order. None when they are too many for a loop in Python."""
    count, size = len(offsets) - 1, len(values)
    aside = np.unique(np.minimum(np.searchsorted(offsets, strange, side="right") - 1, count - 1))
    if len(aside) > 1000 + count // 100:
        return None
    keep = np.ones(count, dtype=bool)
    keep[aside] = False
    lengths = np.diff(offsets)
    bounds = np.concatenate([[0], np.ravel(np.column_stack([offsets[aside], offsets[aside + 1]])), [size]])
    kept_values = np.concatenate([values[a:b] for a, b in zip(bounds[0::2], bounds[1::2], strict=True)])
    kept_offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
    kept = _transcode(kept_values, kept_offsets, codec, set_aside=False)
    if kept is None:
        return None
    kept_utf8, kept_new_offsets = kept
    texts = [values[offsets[k] : offsets[k + 1]].tobytes().decode(codec).encode("utf-8") for k in aside]
    new_lengths = np.empty(count, dtype=np.int64)
    new_lengths[keep] = np.diff(kept_new_offsets)
    new_lengths[aside] = [len(t) for t in texts]
    new_offsets = np.concatenate([[0], np.cumsum(new_lengths)])
    utf8 = np.empty(int(new_offsets[-1]), dtype=np.uint8)
    taken, first_kept = 0, 0  # bytes of kept_utf8 placed; the first value of the current kept block
    for k, text in zip(aside.tolist(), texts, strict=True):
        start, end = new_offsets[first_kept], new_offsets[k]
        utf8[start:end] = kept_utf8[taken : taken + end - start]
        taken += end - start
        utf8[end : new_offsets[k + 1]] = np.frombuffer(text, dtype=np.uint8)
        first_kept = k + 1
    utf8[new_offsets[first_kept] :] = kept_utf8[taken:]
    return utf8, new_offsets


# The masks below are bit sets packed into little-endian 64-bit words (byte i is bit i % 64 of word i // 64),
# with at least one zero word past the end: a pass over them touches 1/64 of the bytes a boolean array does.
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE = np.uint64(1)
_SHIFTS = tuple(np.uint64(1 << k) for k in range(6))
_LOW_BITS = np.array([(1 << k) - 1 for k in range(64)], dtype="<u8")  # the bits below bit k


def _pack(mask: np.ndarray) -> np.ndarray:
    packed = np.packbits(mask, bitorder="little")
    words = np.zeros((len(packed) + 15) // 8, dtype="<u8")
    words.view(np.uint8)[: len(packed)] = packed
    return words


def _next(words: np.ndarray) -> np.ndarray:
    """Bit i set when bit i + 1 is."""
    shifted = words >> _ONE
    shifted[:-1] |= words[1:] << np.uint64(63)
    return shifted


def _previous(words: np.ndarray) -> np.ndarray:
    """Bit i set when bit i - 1 is."""
    shifted = words << _ONE
    shifted[1:] |= words[:-1] >> np.uint64(63)
    return shifted


def _parity(words: np.ndarray, resets: np.ndarray | None = None) -> np.ndarray:
    """Bit i: the parity of the set bits from the last reset at or before i (or from the start) up to i.

    A scan in log steps inside each word, then the carry from word to word."""
    value = words.copy()
    reset = np.zeros_like(words) if resets is None else resets.copy()
    for shift in _SHIFTS:
        value ^= (value << shift) & ~reset
        reset |= reset << shift
    top = np.uint64(63)
    last, has_reset = (value >> top).astype(np.uint8), (reset >> top).astype(bool)
    before = np.zeros(len(words) + 1, dtype=np.uint8)  # parity of the words' last bits before each word
    np.bitwise_xor.accumulate(last, out=before[1:])
    latest = np.maximum.accumulate(np.where(has_reset, np.arange(len(words)), -1))  # last word with a reset
    carry = before[:-1].copy()
    carry[1:] ^= np.where(latest[:-1] >= 0, before[latest[:-1]], 0)
    value ^= carry.astype(np.uint64) * _ONES & ~reset
    return value


def _pair_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bytes that belong to two-byte characters, packed: every byte >= 0x80, and the low trail after a
    run of odd length; and the positions where such a trail is out of range (GB 18030's four-byte sequences
    have 0x30-0x39 there; other bytes do not decode).

    Runs are taken across value boundaries: a value that ends inside a character leaves an odd count of
    paired bytes before the next value, which the caller rejects, and a value that ends after whole
    characters leaves the parity of the run as it was.
    """
    high = _pack(values >= 0x80)
    run_end = high & ~_next(high)
    if not (run_end & _parity(high)).any():  # the common case: every run has even length
        return high, np.empty(0, dtype=np.int64)
    run_start = high & ~_previous(high)
    trails = _previous(run_end & _parity(high, run_start))
    strange = trails & ~_pack((values >= _LOW_TRAIL[0]) & (values <= _LOW_TRAIL[1]))
    if strange.any():
        return high | trails, np.flatnonzero(np.unpackbits(strange.view(np.uint8), bitorder="little"))
    return high | trails, np.empty(0, dtype=np.int64)


def _counter(words: np.ndarray):
    """A function that counts the set bits before each given position, from prefix sums of popcounts."""
    totals = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.bitwise_count(words), out=totals[1:])

    def before(positions: np.ndarray) -> np.ndarray:
        word = positions >> 6
        partial = words[word]
        partial &= _LOW_BITS[positions & 63]
        counts = totals[word]
        counts += np.bitwise_count(partial)
        return counts

    return before


def _short_pairs(values: np.ndarray, pairs: np.ndarray, paired_before, two_byte_pairs: np.ndarray) -> np.ndarray:
    """Sorted positions of the lead bytes of pairs that decode to two UTF-8 bytes."""
    paired = np.unpackbits(pairs.view(np.uint8), count=len(values), bitorder="little").view(bool)
    leads = np.flatnonzero(two_byte_pairs.reshape(256, 256).any(axis=1))  # 0xA1, 0xA6-0xA8 in GB 18030
    if len(leads) <= 8:  # a few comparisons beat a table lookup per byte
        lead = np.zeros(len(values), dtype=bool)
        for byte in leads.tolist():
            lead |= values == byte
    else:
        lead = np.isin(values, leads)
    candidates = np.flatnonzero(lead & paired)
    candidates = candidates[candidates + 1 < len(values)]
    # Every run of paired bytes holds whole pairs, from its start: a paired byte is a lead when an even
    # number of paired bytes come before it.
    candidates = candidates[paired_before(candidates) % 2 == 0]
    words = values[candidates].astype(np.int64) * 256 + values[candidates + 1]
    return candidates[two_byte_pairs[words]]
