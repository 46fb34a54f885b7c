"""Tokenizers and vocabularies for sequence-to-sequence models.

A ``Vocab`` maps tokens to ids with four reserved entries, always first and in this order:
``<pad>`` = 0 (fills batches to one length; never attended to nor scored), ``<bos>`` = 1 (the decoder's
first input), ``<eos>`` = 2 (ends a sequence), ``<unk>`` = 3 (any token not in the vocabulary).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

_WORD_RE = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)


def tokenize_chars(text: str) -> list[str]:
    """Character-level tokens: every character (spaces included) is one token."""
    return list(text)


def tokenize_words(text: str, lowercase: bool = True) -> list[str]:
    """Word-level tokens: runs of letters/digits (with inner apostrophes) and single punctuation marks."""
    return _WORD_RE.findall(text.lower() if lowercase else text)


def detokenize_words(tokens: Sequence[str]) -> str:
    """Join word tokens with spaces, attaching punctuation to the preceding word."""
    out = ""
    for t in tokens:
        if out and not re.fullmatch(r"[.,;:!?)\]}»]", t) and not out.endswith(("(", "[", "¿", "¡", "«")):
            out += " "
        out += t
    return out


class Vocab:
    """Token <-> id tables with ``<pad> <bos> <eos> <unk>`` at ids 0-3, and a tokenizer level."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str], level: str = "word", lowercase: bool = True) -> None:
        if level not in ("char", "word"):
            raise ValueError(f"Vocab: level must be 'char' or 'word', got {level!r}")
        self.level, self.lowercase = level, lowercase
        self.itos: list[str] = list(SPECIALS)
        seen = set(self.itos)
        for t in tokens:
            if t not in seen:
                seen.add(t)
                self.itos.append(t)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls, texts: Iterable[str], level: str = "word", min_freq: int = 1, max_size: int | None = None,
        lowercase: bool = True,
    ) -> Vocab:
        """Count tokens over ``texts``; keep those seen ``min_freq`` times, most frequent first."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(cls._split(text, level, lowercase))
        kept = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(kept, level=level, lowercase=lowercase)

    @staticmethod
    def _split(text: str, level: str, lowercase: bool) -> list[str]:
        if level == "char":
            return tokenize_chars(text.lower() if lowercase else text)
        return tokenize_words(text, lowercase)

    def __len__(self) -> int:
        return len(self.itos)

    def tokenize(self, text: str) -> list[str]:
        return self._split(text, self.level, self.lowercase)

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = True) -> list[int]:
        """Token ids of ``text``; unknown tokens map to ``<unk>``."""
        ids = [self.stoi.get(t, self.unk_id) for t in self.tokenize(text)]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def unknown_tokens(self, text: str) -> list[str]:
        return [t for t in self.tokenize(text) if t not in self.stoi]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        """Text of ``ids``, stopping at the first ``<eos>``."""
        toks: list[str] = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and strip_special:
                break
            if strip_special and i in (self.pad_id, self.bos_id):
                continue
            toks.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return "".join(toks) if self.level == "char" else detokenize_words(toks)

    def pad_batch(self, sequences: Sequence[Sequence[int]], max_len: int | None = None) -> numpy.ndarray:
        """Stack id lists into a (B, L) int64 array filled with ``<pad>``; ``max_len`` truncates."""
        L = max((len(s) for s in sequences), default=0) if max_len is None else max_len
        out = numpy.full((len(sequences), L), self.pad_id, numpy.int64)
        for b, s in enumerate(sequences):
            s = list(s)[:L]
            out[b, : len(s)] = s
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "lowercase": self.lowercase, "itos": self.itos}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        itos = d["itos"]
        if list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("Vocab.from_dict: the first four tokens must be <pad> <bos> <eos> <unk>")
        return cls(itos[len(SPECIALS) :], level=d["level"], lowercase=d["lowercase"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> Vocab:
        return cls.from_dict(json.loads(s))
