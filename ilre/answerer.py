"""The full-depth pass: the short recalled prompt through the whole model, greedy by default.

A small model that cannot find its answer often loops ("The answer is: The answer is: ...")
until the length cap. Decoding stops as soon as the answer repeats a run of ``REPEAT_NGRAM``
tokens it has already written, and the repeated run is cut off: the reader gets the answer
once, and no time is spent on the loop.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

REPEAT_NGRAM = 8
"""Length of a token run whose second occurrence in an answer ends it. Eight tokens: a list of
numbers or names never repeats that much by chance, a loop repeats it within two turns."""


def repeats(ids: list[int], n: int = REPEAT_NGRAM) -> bool:
    """True when the last ``n`` ids already occur earlier in ``ids`` (overlaps included)."""
    if len(ids) <= n:
        return False
    tail = ids[-n:]
    return any(ids[i:i + n] == tail for i in range(len(ids) - n))


def cut_repeat(ids: list[int], n: int = REPEAT_NGRAM) -> list[int]:
    """``ids`` without the run of ``n`` that repeated, when decoding stopped on a repeat."""
    return ids[:-n] if repeats(ids, n) else ids


def stop_at_repeat(ids: list[int], n: int = REPEAT_NGRAM) -> list[int]:
    """What decoding with the repeat stop keeps of ``ids``, a greedy answer decoded without it."""
    for k in range(n + 1, len(ids) + 1):
        if repeats(ids[:k], n):
            return ids[:k - n]
    return ids


class _StopOnRepeat(StoppingCriteria):
    def __init__(self, prompt_length: int, n: int = REPEAT_NGRAM):
        self.prompt_length = prompt_length
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [repeats(row[self.prompt_length:].tolist(), self.n) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(model, tokenizer, prompt_ids: torch.Tensor, max_new_tokens: int, streamer=None) -> tuple[str, torch.Tensor]:
    """(decoded answer, new token ids) for a 1-D prompt, decoded greedily, loops cut off."""
    device = next(model.parameters()).device
    ids = prompt_ids.view(1, -1).to(device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer,
                         stopping_criteria=StoppingCriteriaList([_StopOnRepeat(ids.shape[1])]))
    new = torch.tensor(cut_repeat(out[0, ids.shape[1]:].tolist()), dtype=torch.long)
    return tokenizer.decode(new, skip_special_tokens=True).strip(), new


class Cancelled(Exception):
    """Raised inside decoding when the one waiting for the answer has gone."""


class AnswerStream:
    """A ``generate`` streamer that hands out the answer's text exactly as the final answer reads.

    The last ``REPEAT_NGRAM`` tokens are held back until decoding stops (they may be the repeat
    that is cut off), and text is released only up to its last complete character, without the
    trailing space the final answer strips. ``cancelled`` (a threading.Event) stops decoding.
    """

    def __init__(self, tokenizer, on_text, cancelled=None):
        self.tokenizer, self.on_text, self.cancelled = tokenizer, on_text, cancelled
        self.ids: list[int] = []
        self.sent = ""
        self._prompt = True

    def put(self, value: torch.Tensor) -> None:
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled
        if self._prompt:  # generate hands the prompt over first
            self._prompt = False
            return
        self.ids += value.reshape(-1).tolist()
        self._release(self.ids[:-REPEAT_NGRAM] if len(self.ids) > REPEAT_NGRAM else [])

    def end(self) -> None:
        self._release(cut_repeat(self.ids), final=True)

    def _release(self, ids: list[int], final: bool = False) -> None:
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not final:
            text = text.rstrip("\ufffd").rstrip()
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text
