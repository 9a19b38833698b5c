"""Prompt layout: where the context sits inside the chat template, as token ids.

The prompt is tokenised in three parts so that the context's tokens are the same in the
streaming prefill, in the recalled prompt and in a plain full-context prompt:

    prefix  = chat template start + instruction          (streamed with the context)
    context = the document, with character offsets
    suffix  = question + chat template end + answer prefix (the query that is scored)

A recalled prompt is prefix + recalled context tokens (a gap marker between non-adjacent
spans) + suffix; with every context token recalled it is the full prompt exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jinja2.exceptions import TemplateError

from .config import AnswerConfig
from .sources import FileSpan
from .units import find_unit_starts

_MARK = "\u2063ILRE_CONTEXT\u2063"


@dataclass
class ContextTokens:
    """The tokenised context with character offsets of each token in the original text."""

    text: str
    ids: torch.Tensor       # [L] long
    offsets: torch.Tensor   # [L, 2] long, character [start, end) of each token
    starts: torch.Tensor | None = None
    """The first token of each recall unit, once found (a saved index stores them)."""
    files: list[FileSpan] | None = None
    """Where each file of a folder lies in ``text`` (``ilre.sources``); None: one prose text."""
    read_with: dict | None = None
    """The filters the folder was read with (``Sources.read_with``)."""

    def __len__(self) -> int:
        return self.ids.numel()

    def unit_starts(self) -> torch.Tensor:
        """Token index of the first token of each sentence, line or code block (found once, then kept)."""
        if self.starts is None:
            self.starts = find_unit_starts(self.text, self.offsets, self.files)
        return self.starts


def tokenize_context(tokenizer, text: str) -> ContextTokens:
    """Token ids and character offsets of ``text``, without special tokens.

    A fast tokenizer whose backend has no truncation or padding set is called directly: the
    same backend call that ``tokenizer(text, ...)`` makes, without building the Python lists
    of the attention mask and the rest, and with the ids and offsets turned into tensors
    through numpy (a 1M-token text spends more time in those lists than in the tokenizer).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (backend is not None and backend.truncation is None and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))):
        enc = backend.encode(text, add_special_tokens=False)
        ids = torch.from_numpy(np.asarray(enc.ids, dtype=np.int64))
        offsets = torch.from_numpy(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2))
        return ContextTokens(text, ids, offsets)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.long)
    offsets = torch.tensor(enc["offset_mapping"], dtype=torch.long).view(-1, 2)
    return ContextTokens(text, ids, offsets)


@dataclass
class PromptTemplate:
    """Renders prefix and suffix ids around the context for one tokenizer."""

    tokenizer: object
    instruction: str = AnswerConfig.instruction

    def _chat_text(self, user: str, history: Sequence[dict[str, str]] = ()) -> str:
        """A user turn ready for the answer, after the chat messages of ``history`` (OpenAI's
        role/content): the chat template's, else BOS + each message's text + newline."""
        if not getattr(self.tokenizer, "chat_template", None):
            return "".join([self.tokenizer.bos_token or ""] + [f"{m['content']}\n" for m in history] + [f"{user}\n"])
        messages = [*history, {"role": "user", "content": user}]
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError:  # a template without a system role: its text opens the first user turn
            system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
            rest = [dict(m) for m in messages if m["role"] != "system"]
            rest[0]["content"] = f"{system}\n\n{rest[0]['content']}" if system else rest[0]["content"]
            return self.tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)

    def chat_ids(self, text: str, history: Sequence[dict[str, str]] = ()) -> torch.Tensor:
        """The prompt of a plain chat turn ``text`` after ``history``, no instruction, no context."""
        return self.encode_text(self._chat_text(text, history))

    def user_text(self, context: str, question: str) -> str:
        """The user turn: instruction, context, question (what another engine is sent as text)."""
        head = f"{self.instruction}\n\n" if self.instruction else ""
        return f"{head}{context}\n\n{question}"

    def _render(self, question: str, answer_prefix: str, history: Sequence[dict[str, str]] = ()) -> tuple[str, str]:
        prefix, suffix = self._chat_text(self.user_text(_MARK, question), history).split(_MARK)
        return prefix, suffix + answer_prefix

    def encode_text(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def prefix_ids(self) -> torch.Tensor:
        return self.encode_text(self._render("", "")[0])

    def around_context(self, question: str, answer_prefix: str = "",
                       history: Sequence[dict[str, str]] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """(prefix, suffix) ids of a conversation's last turn: ``history``'s chat messages, then the
        user turn of instruction, context and ``question``; with no history, the plain ones."""
        prefix, suffix = self._render(question, answer_prefix, history)
        return self.encode_text(prefix), self.encode_text(suffix)

    def suffix_ids(self, question: str, answer_prefix: str = "") -> torch.Tensor:
        return self.encode_text(self._render(question, answer_prefix)[1])

    def query(self, question: str, answer_prefix: str = "") -> QueryTokens:
        """The suffix ids after the context, and which of them are the question's, tokenised once."""
        suffix = self._render(question, answer_prefix)[1]
        try:
            enc = self.tokenizer(suffix, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, ValueError):  # a tokenizer without offsets
            ids = self.suffix_ids(question, answer_prefix)
            return QueryTokens(ids, torch.ones(ids.numel(), dtype=torch.bool), question)
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        offsets = torch.tensor(enc["offset_mapping"], dtype=torch.long).view(-1, 2)
        start = suffix.find(question.strip()) if question.strip() else -1
        end = start + len(question.strip())
        mask = (offsets[:, 0] < end) & (offsets[:, 1] > start)
        if start < 0 or not mask.any():  # the template hides the question's text
            mask = torch.ones(ids.numel(), dtype=torch.bool)
        return QueryTokens(ids, mask, question)

    def question_mask(self, question: str, answer_prefix: str = "") -> torch.Tensor:
        return self.query(question, answer_prefix).question


@dataclass
class QueryTokens:
    """What follows the context in the prompt: the question, the chat-template end, the answer prefix."""

    ids: torch.Tensor
    """[T] token ids, exactly ``PromptTemplate.suffix_ids``."""
    question: torch.Tensor
    """[T] bool: the question's own tokens; the rest attend alike whatever is asked. All true
    where the tokenizer gives no offsets or the template hides the question's text."""
    text: str = ""
    """The question itself, as asked (what its words are matched on)."""


def assemble(prefix: torch.Tensor, context: torch.Tensor, positions: torch.Tensor,
             suffix: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """prefix + context[positions] with ``gap`` between runs of consecutive positions + suffix."""
    parts = [prefix]
    runs = contiguous_runs(positions)
    for i, (start, end) in enumerate(runs):
        if i and gap.numel():
            parts.append(gap)
        parts.append(context[start:end])
    parts.append(suffix)
    return torch.cat(parts)


def contiguous_runs(positions: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive positions in a 1-D tensor, in its order (each run ascending)."""
    if positions.numel() == 0:
        return []
    pos = positions.tolist()
    runs, start = [], pos[0]
    for a, b in zip(pos, pos[1:]):
        if b != a + 1:
            runs.append((start, a + 1))
            start = b
    runs.append((start, pos[-1] + 1))
    return runs
