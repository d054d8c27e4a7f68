"""64-bit simhash (Charikar 2002) of normalised text, vectorised with numpy.

One pass over a batch: the texts are lower-cased and joined into one UTF-8 buffer, words are
found by classifying bytes (ASCII letters and digits, and non-ASCII letters, are word bytes;
markup, punctuation and the common Unicode punctuation blocks are not), each word is hashed
from its bytes (an FNV-style fold of 8-byte blocks through splitmix64's finaliser: the same
value in every process, unlike ``hash()``), words are optionally combined into n-gram
shingles, and bit j of a fingerprint is set when most of the text's shingles have bit j set.
Fingerprints are signed 64-bit integers, the range of PostgreSQL ``bigint``.
The choices (single words, English stop words dropped) and their figures are in docs/clusters.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Words per shingle: 1 = bag of words, which survives truncation and added boilerplate
#: best on the labelled set of docs/clusters.md.
SHINGLE = 1
#: Texts are fingerprinted this many at a time: bounds the memory of one pass (≈ 3 MB of
#: temporaries), and 256 ran 30 % faster than 1,024 (the arrays stay in cache).
CHUNK = 256
#: Very common English words, dropped: kept, they make every English text resemble every
#: other (unrelated articles came within distance 4 of each other on the labelled set;
#: without them the closest unrelated pair is at 6).
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
    "he", "her", "his", "i", "in", "is", "it", "its", "of", "on", "or", "our", "she", "that",
    "the", "their", "they", "this", "to", "was", "were", "which", "who", "will", "with", "you",
))

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_MARKUP = re.compile(r"<[^>]{0,2000}>|&(?:[a-z]{2,8}|#x?[0-9a-f]{1,6});", re.IGNORECASE)
# Keep the bytes of a word's first n bytes (n = 0..8) of an unaligned 8-byte read.
_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [2**64 - 1], dtype=np.uint64)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_LANES = np.uint64(0x0001000100010001)
_MAX_WORDS = 0xFFFF  # per text: the 16-bit counters of _majority_bits must not overflow


def words(text: str) -> list[str]:
    """The words of ``text`` after normalisation, stop words included (the batch path never
    builds these strings)."""
    return normalise(text).split()


def normalise(text: str) -> str:
    """Lower-case words of ``text`` without markup or punctuation, single-spaced."""
    data = _buffer([text])
    starts, ends = _word_bounds(data)
    raw = data.tobytes()
    return " ".join(raw[s:e].decode("utf-8", "replace") for s, e in zip(starts, ends, strict=True))


def _clean(text: str) -> str:
    if "<" in text or "&" in text:
        text = _MARKUP.sub(" ", text)
    return text.replace("\x00", " ") if "\x00" in text else text


def _buffer(texts: Sequence[str]) -> npt.NDArray[np.uint8]:
    """The texts as one lower-cased UTF-8 buffer, each followed by a NUL (never a word
    byte). Only ASCII is lower-cased, byte by byte: ``str.lower`` cost more than all the
    rest on real (non-ASCII) text, and a capitalised accented word is rare enough to matter
    little.
    """
    joined = "\x00".join([_clean(t or "") for t in texts]) + "\x00"
    data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    # Byte arithmetic, not a 256-entry table: numpy's comparisons run in SIMD, its table
    # lookups a byte at a time (3x slower). A-Z lack bit 5; setting it lowers them.
    upper = _between(data, ord("A"), ord("Z"))
    return data | (upper.view(np.uint8) << np.uint8(5))


def _between(data: npt.NDArray[np.uint8], low: int, high: int) -> npt.NDArray[np.bool_]:
    """``low <= data <= high``, in one subtraction that wraps below ``low``."""
    return (data - np.uint8(low)) <= np.uint8(high - low)


def _word_bounds(data: npt.NDArray[np.uint8]) -> tuple[I64, I64]:
    # Word bytes: ASCII letters (lower-cased already) and digits, and every byte of a
    # non-ASCII character (UTF-8 of non-ASCII letters) but those of the punctuation blocks:
    # U+0080-U+00BF (C2 xx: no-break space, «», ·, ©, ...),
    # U+2000-U+207F (E2 80/81 xx: dashes, curly quotes, ellipsis, thin spaces),
    # U+3000-U+303F (E3 80 xx: CJK punctuation).
    word = _between(data, ord("a"), ord("z")) | _between(data, ord("0"), ord("9"))
    word |= data >= 0x80
    lead = np.flatnonzero(data >= 0xC2)  # lead bytes; C2, E2 and E3 among them
    first = data[lead]
    lead = lead[(first == 0xC2) | (first == 0xE2) | (first == 0xE3)]
    if len(lead):
        first, second = data[lead], data[np.minimum(lead + 1, len(data) - 1)]
        two = lead[first == 0xC2]
        three = lead[((first == 0xE2) & ((second == 0x80) | (second == 0x81)))
                     | ((first == 0xE3) & (second == 0x80))]
        for k in range(2):
            word[np.minimum(two + k, len(data) - 1)] = False
        for k in range(3):
            word[np.minimum(three + k, len(data) - 1)] = False
    edges = np.zeros(len(data) + 2, dtype=bool)
    edges[1:-1] = word
    flips = np.flatnonzero(edges[1:] != edges[:-1])
    return flips[0::2], flips[1::2]


def mix(x: U64) -> U64:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_hashes(data: npt.NDArray[np.uint8], starts: I64, ends: I64) -> U64:
    """64-bit hash of each word's bytes: 8-byte blocks read unaligned, masked to the word,
    folded through ``mix`` with the length."""
    lengths = ends - starts
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[:len(data)] = data
    # Element i of this view is the 8 bytes starting at byte i (a read-only strided view).
    blocks = np.ndarray(shape=(len(data),), dtype="<u8", buffer=padded, strides=(1,))
    with np.errstate(over="ignore"):
        h = mix(lengths.astype(np.uint64) * _SEED)
        h = mix((h ^ (blocks[starts] & _MASKS[np.minimum(lengths, 8)])) * _SEED)
        take = np.flatnonzero(lengths > 8)  # long words: one more round per 8 bytes
        offset = 8
        while len(take):
            left = np.minimum(lengths[take] - offset, 8)
            h[take] = mix((h[take] ^ (blocks[starts[take] + offset] & _MASKS[left])) * _SEED)
            offset += 8
            take = take[lengths[take] > offset]
    return h


def _shingles(hashes: U64, counts: I64, size: int) -> tuple[U64, I64]:
    """Hashes of word n-grams within each text (a text shorter than ``size`` words gives
    one shorter shingle) and the number of shingles of each text."""
    if size == 1:
        return hashes, counts
    ends = np.cumsum(counts)
    per_text = np.where(counts > 0, np.maximum(counts - size + 1, 1), 0)
    first = np.repeat(ends - counts, per_text)
    pos = first + np.arange(int(per_text.sum())) - np.repeat(np.cumsum(per_text) - per_text,
                                                             per_text)
    end_of = np.repeat(ends, per_text)
    with np.errstate(over="ignore"):
        acc = hashes[pos]
        for k in range(1, size):
            nxt = np.where(pos + k < end_of, hashes[np.minimum(pos + k, len(hashes) - 1)],
                           np.uint64(0))
            acc = mix(acc * _SEED + nxt)
    return acc, per_text


def _majority_bits(shingles: U64, counts: I64) -> I64:
    """Bit j of text t = 1 when more than half of t's shingles have bit j set.

    SWAR: ``(h >> k) & 0x0001000100010001`` puts bits k, k+16, k+32, k+48 into four 16-bit
    lanes, so one ``reduceat`` per k counts four bit positions of every text at once.
    """
    out = np.zeros(len(counts), dtype=np.int64)
    filled = np.flatnonzero(counts > 0)
    if not len(filled):
        return out
    offsets = (np.cumsum(counts) - counts)[filled]
    ones = np.empty((len(filled), 64), dtype=np.int64)
    for k in range(16):
        sums = np.add.reduceat((shingles >> np.uint64(k)) & _LANES, offsets)
        for lane in range(4):
            ones[:, 16 * lane + k] = (sums >> np.uint64(16 * lane)) & np.uint64(0xFFFF)
    majority = ones * 2 > counts[filled, None]
    packed = np.packbits(majority, axis=1, bitorder="little")
    out[filled] = packed.view("<u8").ravel().view(np.int64)
    return out


def _stop_hashes() -> U64:
    data = _buffer(sorted(STOPWORDS))
    starts, ends = _word_bounds(data)
    return np.unique(_word_hashes(data, starts, ends))


_STOP_HASHES = _stop_hashes()


def _stop_table() -> tuple[U64, np.uint64]:
    """A direct-mapped set of the stop-word hashes: slot ``h & mask`` holds ``h`` for a stop
    word, and elsewhere a value whose low bits are not the slot's (so no hash equals it).
    One lookup and one comparison per word: ``np.isin`` compared every word with each of
    the 40 stop words (2x slower)."""
    for bits in range(6, 17):
        mask = (1 << bits) - 1
        slots = _STOP_HASHES & np.uint64(mask)
        if len(np.unique(slots)) == len(slots):
            table = ~np.arange(mask + 1, dtype=np.uint64)
            table[slots] = _STOP_HASHES
            return table, np.uint64(mask)
    raise AssertionError("the stop-word hashes collide in every table size up to 2**16")


_STOP_TABLE, _STOP_MASK = _stop_table()


def _drop_stopwords(hashes: U64, counts: I64) -> tuple[U64, I64]:
    keep = _STOP_TABLE[hashes & _STOP_MASK] != hashes
    kept_before = np.concatenate(([0], np.cumsum(keep)))  # kept words before position i
    kept_by_end = kept_before[np.cumsum(counts)]
    return hashes[keep], np.diff(kept_by_end, prepend=0)


def _chunk(texts: Sequence[str], shingle: int) -> I64:
    data = _buffer(texts)
    starts, ends = _word_bounds(data)
    text_ends = np.flatnonzero(data == 0)
    counts = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    if counts.max(initial=0) > _MAX_WORDS:
        keep = np.arange(len(starts)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts, ends = starts[keep < _MAX_WORDS], ends[keep < _MAX_WORDS]
        counts = np.minimum(counts, _MAX_WORDS)
    hashes, counts = _drop_stopwords(_word_hashes(data, starts, ends), counts)
    shingles, per_text = _shingles(hashes, counts, shingle)
    return _majority_bits(shingles, per_text)


def simhash_many(texts: Sequence[str], *, shingle: int = SHINGLE) -> I64:
    """Fingerprints of ``texts`` (signed int64); a text without words gives 0 — ask
    ``simhash`` or check ``words`` when that matters."""
    parts = [_chunk(texts[i:i + CHUNK], shingle) for i in range(0, len(texts), CHUNK)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def fingerprints(texts: Sequence[str]) -> list[int | None]:
    """``simhash_many`` as Python ints, None for a text without words (its 0 would match
    every other empty text): what the store writes to ``signals.simhash``."""
    return [int(h) or None for h in simhash_many(texts).tolist()]


def simhash(text: str, *, shingle: int = SHINGLE) -> int | None:
    """The fingerprint of one text, or None when it has no words (stop words aside)."""
    if not any(w not in STOPWORDS for w in words(text or "")):
        return None
    return int(_chunk([text], shingle)[0])


def signed(value: int) -> int:
    """A fingerprint as PostgreSQL ``bigint`` holds it (two's complement, 64 bits)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def distance(a: int, b: int) -> int:
    """Hamming distance between two fingerprints (signed or unsigned)."""
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()
