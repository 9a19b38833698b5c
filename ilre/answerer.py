"""The full-depth pass: the short recalled prompt through the whole model, greedy by default.

A small model that cannot find its answer often loops ("The answer is: The answer is: ...")
until the length cap. Decoding stops as soon as the answer repeats a run of ``REPEAT_NGRAM``
tokens it has already written (tokens compared by their words, so " The" repeats "The"), and the
repeated run is cut off: the reader gets the answer once, and no time is spent on the loop.
``Sampling`` asks for sampled decoding and stop strings instead (what OpenAI's API calls
temperature, top_p, seed and stop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from . import arch

REPEAT_NGRAM = 8
"""Length of a token run whose second occurrence in an answer ends it. Eight tokens: a list of
numbers or names never repeats that much by chance, a loop repeats it within two turns."""


Key = Callable[[int], object]
"""What a token counts as when runs are compared (see ``token_words``); None: the id itself."""


def token_words(tokenizer) -> Key:
    """A key per token id: its text without surrounding whitespace, so that a loop that starts again
    with " The" where the answer began with "The" is seen from that word, and cut with it."""
    texts: dict[int, str] = {}

    def key(i: int) -> str:
        if i not in texts:
            texts[i] = tokenizer.decode([i]).strip()
        return texts[i]
    return key


def repeats(ids: list[int], n: int = REPEAT_NGRAM, key: Key | None = None) -> bool:
    """True when the last ``n`` ids already occur earlier in ``ids`` (overlaps included), compared
    by ``key``."""
    if len(ids) <= n:
        return False
    if key is not None:
        ids = [key(i) for i in ids]
    tail = ids[-n:]
    return any(ids[i:i + n] == tail for i in range(len(ids) - n))


def cut_repeat(ids: list[int], n: int = REPEAT_NGRAM, key: Key | None = None) -> list[int]:
    """``ids`` without the run of ``n`` that repeated, when decoding stopped on a repeat."""
    return ids[:-n] if repeats(ids, n, key) else ids


def stop_at_repeat(ids: list[int], n: int = REPEAT_NGRAM, key: Key | None = None) -> list[int]:
    """What decoding with the repeat stop keeps of ``ids``, a greedy answer decoded without it."""
    for k in range(n + 1, len(ids) + 1):
        if repeats(ids[:k], n, key):
            return ids[:k - n]
    return ids


@dataclass(frozen=True)
class Sampling:
    """How the answer is decoded: greedy (temperature 0, the default), or sampled; ``stop``: strings
    that end the answer where they first appear (not included)."""

    temperature: float = 0.0
    """0 (or below ``GREEDY_BELOW``): greedy."""
    top_p: float = 1.0
    seed: int | None = None
    """Makes a sampled answer repeatable (the same seed, prompt and model give the same answer)."""
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be at least 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("a stop string is empty")

    def cut(self, text: str) -> str:
        """``text`` up to the first stop string."""
        ends = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return text[:min(ends)] if ends else text

    @property
    def sampled(self) -> bool:
        """Whether the answer is sampled: greedy below ``GREEDY_BELOW``."""
        return self.temperature >= GREEDY_BELOW


GREEDY_BELOW = 1e-5
"""Temperatures below this decode greedily, as vLLM does: logits divided by 1e-260 overflow to inf
and sampling fails, and a temperature that small is greedy in all but name."""

GREEDY = Sampling()


class _StopOnText(StoppingCriteria):
    """Stops when the answer's text holds a stop string."""

    def __init__(self, tokenizer, prompt_length: int, sampling: Sampling):
        self.tokenizer, self.prompt_length, self.sampling = tokenizer, prompt_length, sampling

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [self.sampling.cut(text) != text for text in
                self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopOnRepeat(StoppingCriteria):
    def __init__(self, prompt_length: int, key: Key, n: int = REPEAT_NGRAM):
        self.prompt_length, self.key, self.n = prompt_length, key, n

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [repeats(row[self.prompt_length:].tolist(), self.n, self.key) for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(model, tokenizer, prompt_ids: torch.Tensor, max_new_tokens: int, streamer=None,
             sampling: Sampling = GREEDY, in_place_cache: bool = True) -> tuple[str, torch.Tensor]:
    """(decoded answer, new token ids) for a 1-D prompt, decoded greedily unless ``sampling`` says
    otherwise, loops cut off, and cut at a stop string. ``in_place_cache=False`` decodes with
    transformers' own concatenating cache instead of ``arch.answer_cache`` (the same tokens; for
    scripts/bench_decoding.py)."""
    device = next(model.parameters()).device
    ids = prompt_ids.view(1, -1).to(device)
    sampled = sampling.sampled
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampled,
        temperature=sampling.temperature if sampled else None,
        top_p=sampling.top_p if sampled else None,
        top_k=None,
        eos_token_id=eos_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    key = token_words(tokenizer)
    stops = [_StopOnRepeat(ids.shape[1], key)]
    if sampling.stop:
        stops.append(_StopOnText(tokenizer, ids.shape[1], sampling))
    if sampled and sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer,
                         stopping_criteria=StoppingCriteriaList(stops),
                         **(arch.answer_cache(model, ids.shape[1] + max_new_tokens) if in_place_cache else {}))
    new = torch.tensor(cut_repeat(out[0, ids.shape[1]:].tolist(), key=key), dtype=torch.long)
    return sampling.cut(tokenizer.decode(new, skip_special_tokens=True)).strip(), new


def eos_ids(model, tokenizer) -> int | list[int] | None:
    """The token(s) that end an answer: the model's generation config's, else the tokenizer's."""
    return model.generation_config.eos_token_id or tokenizer.eos_token_id


def finish_reason(new_ids: list[int], max_new_tokens: int, eos: int | list[int] | None) -> str:
    """OpenAI's finish_reason of an answer: 'length' when the cap cut it, else 'stop'."""
    eos = set([eos] if isinstance(eos, int) else eos or [])
    return "length" if len(new_ids) >= max_new_tokens and new_ids[-1] not in eos else "stop"


class Cancelled(Exception):
    """Raised inside decoding when the one waiting for the answer has gone."""


class AnswerStream:
    """A ``generate`` streamer that hands out the answer's text exactly as the final answer reads.

    The last ``REPEAT_NGRAM`` tokens are held back until decoding stops (they may be the repeat
    that is cut off), and text is released only up to its last complete character, without the
    trailing space the final answer strips, and short of what may begin a stop string of
    ``sampling``. ``cancelled`` (a threading.Event) stops decoding.
    """

    def __init__(self, tokenizer, on_text, cancelled=None, sampling: Sampling = GREEDY):
        self.tokenizer, self.on_text, self.cancelled, self.sampling = tokenizer, on_text, cancelled, sampling
        self.key = token_words(tokenizer)
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
        self._release(cut_repeat(self.ids, key=self.key), final=True)

    def _release(self, ids: list[int], final: bool = False) -> None:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = self.sampling.cut(text)
        if not final and cut == text and self.sampling.stop:  # hold back what may begin a stop string
            cut = text[:len(text) - max(map(len, self.sampling.stop)) + 1]
        text = cut.strip()
        if not final:
            text = text.rstrip("\ufffd").rstrip()
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text
