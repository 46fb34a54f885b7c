"""Corpus BLEU (Papineni et al. 2002) with the conventions of sacrebleu's defaults.

BLEU = BP * exp( (1/4) sum_{n=1..4} log p_n ),   BP = min(1, exp(1 - r / c))

p_n is the clipped n-gram precision summed over the corpus (a hypothesis n-gram counts at most as often as
it occurs in the reference that has most of it), c the total hypothesis length and r the total of each
segment's closest reference length (the shorter one on a tie). Text is tokenised like mteval-v13a, and a
precision with no match is smoothed by NIST's method (the k-th zero gets 1 / (2^k * total_n)), so scores
equal ``sacrebleu.corpus_bleu(hyps, [refs]).score``. Scores are in [0, 100].
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_TOKEN_RULES = (
    # punctuation and symbols become their own tokens (ASCII ranges as in mteval-v13a)
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    # periods and commas split off unless they sit between digits (3.14, 1,000)
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # a dash after a digit splits (1990-2000)
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


@lru_cache(maxsize=1 << 16)
def tokenize_13a(line: str) -> tuple[str, ...]:
    """mteval-v13a tokenisation: unescape a few XML entities, then split punctuation from words."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _TOKEN_RULES:
        line = pattern.sub(repl, line)
    return tuple(line.split())


def _ngrams(tokens: Sequence[str], max_n: int) -> Counter:
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    max_order: int = 4,
    lowercase: bool = False,
) -> float:
    """BLEU of a whole corpus, in percent.

    ``hypotheses``: one string per segment. ``references``: one string per segment, or several reference
    streams (a list of lists, each as long as ``hypotheses``, as in sacrebleu).
    """
    if isinstance(references, str):
        raise TypeError("corpus_bleu: references must be a list of strings, not one string")
    if references and isinstance(references[0], str):
        streams: list[Sequence[str]] = [references]  # type: ignore[list-item]
    else:
        streams = list(references)  # type: ignore[arg-type]
    for s in streams:
        if len(s) != len(hypotheses):
            raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but a reference stream has {len(s)}")
    correct = [0] * max_order
    total = [0] * max_order
    sys_len = ref_len = 0
    for i, hyp in enumerate(hypotheses):
        prep = (lambda s: s.lower()) if lowercase else (lambda s: s)
        h = tokenize_13a(prep(hyp.strip()))
        refs = [tokenize_13a(prep(s[i].strip())) for s in streams]
        ref_counts: Counter = Counter()
        for r in refs:
            for g, c in _ngrams(r, max_order).items():
                if c > ref_counts[g]:
                    ref_counts[g] = c
        sys_len += len(h)
        ref_len += _closest_length(len(h), [len(r) for r in refs])
        for g, c in _ngrams(h, max_order).items():
            n = len(g) - 1
            total[n] += c
            correct[n] += min(c, ref_counts.get(g, 0))
    return bleu_from_counts(correct, total, sys_len, ref_len)


def bleu_from_counts(correct: Sequence[int], total: Sequence[int], sys_len: int, ref_len: int) -> float:
    """BLEU from corpus n-gram statistics, with NIST ('exp') smoothing of zero precisions."""
    if not any(correct):
        return 0.0
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    log_sum = 0.0
    zeros_seen = 0
    order = len(correct)
    for n in range(order):
        if total[n] == 0:
            return 0.0  # no n-grams of this order at all: log 0 dominates, as in sacrebleu
        if correct[n] == 0:
            zeros_seen += 1
            p = 100.0 / (2**zeros_seen * total[n])
        else:
            p = 100.0 * correct[n] / total[n]
        log_sum += math.log(p)
    return bp * math.exp(log_sum / order)
