"""A trained translator in one file: the model, its configuration, both vocabularies and the experiment.

    tr = Translator(model, src_vocab, tgt_vocab, experiment="translate-dates", max_src_len=60, max_tgt_len=11)
    tr.save("runs/translate-dates/translator.safetensors")
    tr = Translator.load("runs/translate-dates/translator.safetensors", experiment="translate-dates")
    tr.translate("14. März 1987")                  # '1987-03-14'
    tr.translate("the lord said", beam_size=5)

The file is written with ``handgrad.save`` (safetensors): the weights are tensors named by the model's
state_dict keys, and ``{"format": "handgrad.translator/1", "experiment", "config", "src_vocab",
"tgt_vocab", "max_src_len", "max_tgt_len", "meta"}`` is JSON in the metadata. ``load`` refuses a file that
is not a translator (a Trainer checkpoint, another program's safetensors, a text file) and, when
``experiment`` is given, a translator saved by another experiment, with a :class:`TranslatorError` naming
the file and what it is instead.

Limits: ``max_src_len`` is the longest source the model accepts, in tokens with the final ``<eos>`` (the
longest it saw in training: attention and the encoder were never trained beyond it); ``max_tgt_len`` the
most output tokens decoding may emit (with ``<eos>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy

from handgrad.seq2seq.model import Seq2Seq
from handgrad.seq2seq.training import attention_weights, decode_ids, encode_source
from handgrad.seq2seq.vocab import Vocab

TRANSLATOR_FORMAT = "handgrad.translator/1"


class TranslatorError(ValueError):
    """A file that is not a usable translator, or a sentence the translator cannot take."""


@dataclass
class Translation:
    """One translated sentence: the text, the output ids, the source tokens, the source tokens the
    vocabulary lacks (mapped to ``<unk>``), and the attention (T + 1, S) if the model has attention."""

    text: str
    ids: list[int]
    source_tokens: list[str]
    unknown: list[str] = field(default_factory=list)
    attention: numpy.ndarray | None = None


class Translator:
    """A ``Seq2Seq`` model with its vocabularies; ``translate`` maps text to text."""

    def __init__(self, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, experiment: str, max_src_len: int,
                 max_tgt_len: int, meta: dict[str, Any] | None = None) -> None:
        cfg = model.config
        if cfg["src_vocab_size"] != len(src_vocab) or cfg["tgt_vocab_size"] != len(tgt_vocab):
            raise TranslatorError(
                f"Translator: the model expects vocabularies of {cfg['src_vocab_size']} and {cfg['tgt_vocab_size']} "
                f"tokens but got {len(src_vocab)} and {len(tgt_vocab)}"
            )
        if max_src_len < 1 or max_tgt_len < 1:
            raise TranslatorError(f"Translator: max lengths must be >= 1, got {max_src_len} and {max_tgt_len}")
        self.model, self.src_vocab, self.tgt_vocab = model, src_vocab, tgt_vocab
        self.experiment, self.max_src_len, self.max_tgt_len = experiment, int(max_src_len), int(max_tgt_len)
        self.meta = dict(meta or {})

    # -- translating --------------------------------------------------------------------------------------
    def encode(self, text: str) -> tuple[list[int], list[str], list[str]]:
        """``(source ids with <eos>, source tokens, unknown tokens)``; raises on an empty or too long text."""
        tokens = self.src_vocab.tokenize(text)
        if not text.strip() or not tokens:
            raise TranslatorError("Translator: the sentence is empty")
        if len(tokens) + 1 > self.max_src_len:
            unit = "characters" if self.src_vocab.level == "char" else "tokens"
            raise TranslatorError(
                f"Translator: the sentence has {len(tokens)} {unit} but this model takes at most "
                f"{self.max_src_len - 1} (the longest source it was trained on)"
            )
        return encode_source(text, self.src_vocab), tokens, self.src_vocab.unknown_tokens(text)

    def translate_ids(self, texts: list[str], beam_size: int = 1, length_penalty: float = 0.0) -> list[list[int]]:
        sources = [self.encode(t)[0] for t in texts]
        return decode_ids(self.model, sources, self.max_tgt_len, beam_size=beam_size, length_penalty=length_penalty)

    def translate_batch(self, texts: list[str], beam_size: int = 1, length_penalty: float = 0.0) -> list[str]:
        return [self.tgt_vocab.decode(ids) for ids in self.translate_ids(texts, beam_size, length_penalty)]

    def translate(self, text: str, beam_size: int = 1, length_penalty: float = 0.0) -> str:
        """The translation of ``text`` (greedy with ``beam_size=1``, else beam search)."""
        return self.translate_batch([text], beam_size, length_penalty)[0]

    def translate_with_details(self, text: str, beam_size: int = 1, length_penalty: float = 0.0) -> Translation:
        src, tokens, unknown = self.encode(text)
        ids = decode_ids(self.model, [src], self.max_tgt_len, beam_size=beam_size, length_penalty=length_penalty)[0]
        att = attention_weights(self.model, src, ids) if self.model.attention_kind is not None else None
        return Translation(self.tgt_vocab.decode(ids), ids, tokens, unknown, att)

    # -- files --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": TRANSLATOR_FORMAT,
            "experiment": self.experiment,
            "config": dict(self.model.config),
            "model": self.model.state_dict(),
            "src_vocab": self.src_vocab.to_dict(),
            "tgt_vocab": self.tgt_vocab.to_dict(),
            "max_src_len": self.max_src_len,
            "max_tgt_len": self.max_tgt_len,
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the translator to ``path`` (one safetensors file, written atomically); returns the path."""
        from handgrad.serialization import save

        path = os.fspath(path)
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        save(self.state_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], experiment: str | None = None) -> Translator:
        """Read a translator saved by :meth:`save`; with ``experiment``, refuse one from another experiment."""
        from handgrad.serialization import CheckpointError, load

        where = os.fspath(path)
        if not os.path.exists(where):
            raise FileNotFoundError(f"Translator.load: no such file: {where}")
        if os.path.isdir(where):
            raise TranslatorError(f"Translator.load: {where} is a directory, not a translator file")
        try:
            state = load(where)
        except (CheckpointError, OSError, ValueError, UnicodeDecodeError) as e:
            raise TranslatorError(f"Translator.load: {where} is not a translator file ({_first_line(e)})") from e
        fmt = state.get("format") if isinstance(state, dict) else None
        if fmt != TRANSLATOR_FORMAT:
            what = "a Trainer checkpoint" if isinstance(fmt, str) and fmt.startswith("handgrad.trainer") else (
                f"format {fmt!r}" if fmt else "a file without a translator format tag")
            raise TranslatorError(
                f"Translator.load: {where} is not a translator file (it is {what}; save one with Translator.save)"
            )
        if experiment is not None and state.get("experiment") != experiment:
            raise TranslatorError(
                f"Translator.load: {where} was saved by experiment {state.get('experiment')!r}, not {experiment!r}"
            )
        try:
            model = Seq2Seq(**state["config"])
            model.load_state_dict(state["model"])
            src_vocab, tgt_vocab = Vocab.from_dict(state["src_vocab"]), Vocab.from_dict(state["tgt_vocab"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: load_state_dict refusals
            raise TranslatorError(f"Translator.load: {where} is a damaged translator file ({_first_line(e)})") from e
        model.eval()
        return cls(model, src_vocab, tgt_vocab, state["experiment"], state["max_src_len"], state["max_tgt_len"],
                   state.get("meta"))


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
