"""Sequence to sequence: encoder-decoder with attention, decoding (greedy, sampling, beam search)."""
