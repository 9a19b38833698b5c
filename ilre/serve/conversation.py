"""Where the document ends and the conversation begins, in a chat request's messages.

Chat clients resend the whole conversation with every turn, often with a system prompt, so the
document must be found in the same place each time for its encoding to be found again. The rule:

1. System and developer messages are instructions, never the document.
2. With ``context_id`` the document is that context, and every user and assistant message is
   conversation.
3. Otherwise the document is in the first user message:
   - when that message is a document and a question together, the document is what comes before
     the question: a last content part after others, or the last line that starts with
     "Question:", "Query:" or "Q:" (a plain "<document>\\n\\nQuestion: ..." and LlamaIndex's
     question-answering template, whose framing lines are dropped) unless an answer follows it
     (a FAQ); the question is then the first turn;
   - else, when more user messages follow it, the whole first user message is the document;
   - else (one user message, no question marked in it) there is no document: a plain chat turn.
4. The last user message is the question; the user and assistant turns between the document and
   the question are the history, which the answer reads as the chat turns they were (the latest
   turns, within ``HISTORY_TOKENS``, after the instructions as a system message), and recall does
   not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

HISTORY_TOKENS = 384
"""The most tokens of instructions and earlier turns the answer reads; older turns are left out
first. Short, because the answer's reader is the model the budget is sized for."""

_MARKER = re.compile(r"^[ \t]*(?:question|query|q)[ \t]*:[ \t]*", re.IGNORECASE | re.MULTILINE)
_FRAME = re.compile(r"^\s*context information is below\.?\s*\n-{5,}\s*\n(?P<doc>.*?)\n-{5,}\s*\n.*\Z",
                    re.IGNORECASE | re.DOTALL)
_ANSWER_CUE = re.compile(r"\n\s*answer\s*:\s*\Z", re.IGNORECASE)
_ANSWERED = re.compile(r"^[ \t]*(?:a|answer)[ \t]*:[ \t]*\S", re.IGNORECASE | re.MULTILINE)
MAX_QUESTION_CHARS = 2000
"""A marked "question" longer than this, or one answered in the text after it (a FAQ's "Q: ... A: ..."),
is part of the document."""
NO_QUESTION = "no question: the last user message must hold it"
MIN_DOCUMENT_CHARS = 20
"""A document part shorter than this is no document: "Q: ..." alone is a question."""


@dataclass
class Turn:
    role: str
    """'system', 'developer', 'user', 'assistant' or 'tool'."""
    parts: list[str]
    """The text of each content part (one for plain string content)."""

    @property
    def text(self) -> str:
        return "\n\n".join(p for p in self.parts if p)


@dataclass
class Conversation:
    question: str
    document: str = ""
    """The document's text ("" with ``context_id`` or without a document)."""
    instructions: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    """(role, text) of the user and assistant turns before the question, oldest first."""

    def messages(self, count_tokens: Callable[[str], int], limit: int = HISTORY_TOKENS) -> list[dict[str, str]]:
        """What the answer reads before the question, as chat messages: the instructions (one
        system message) and the latest turns that fit in ``limit`` tokens, starting with a user turn.

        Chat turns, not a transcript in the question's text: a small model given "User: ..." lines
        went on writing the transcript ("User: What is the pass key ...") instead of answering."""
        turns: list[dict[str, str]] = []
        used = 0
        for role, text in reversed(self.history):
            tokens = count_tokens(text)
            if used + tokens > limit:
                break
            used += tokens
            turns.insert(0, {"role": role, "content": text.strip()})
        while turns and turns[0]["role"] != "user":
            turns.pop(0)
        system = " ".join(i.strip() for i in self.instructions)
        if system and used + count_tokens(system) <= limit:
            turns.insert(0, {"role": "system", "content": system})
        return turns


def split_question(turn: Turn) -> tuple[str, str] | None:
    """(document, question) of a message that holds both, else None. Empty content parts are not
    parts: the question is the last part that says something."""
    parts = [p for p in turn.parts if p.strip()]
    if len(parts) > 1 and len("\n\n".join(parts[:-1]).strip()) >= MIN_DOCUMENT_CHARS:
        return "\n\n".join(parts[:-1]), parts[-1].strip()
    text = turn.text
    markers = list(_MARKER.finditer(text))
    if not markers or len(text[:markers[-1].start()].strip()) < MIN_DOCUMENT_CHARS:
        return None
    document, question = text[:markers[-1].start()], _ANSWER_CUE.sub("", text[markers[-1].end():])
    if not question.strip() or len(question) > MAX_QUESTION_CHARS or _ANSWERED.search(question):
        return None
    framed = _FRAME.match(document)
    return (framed["doc"] if framed else document).strip(), question.strip()


def read_conversation(turns: list[Turn], context_id: bool = False) -> Conversation:
    """The conversation of a request's messages (the rule above); ValueError without a question."""
    instructions = [t.text for t in turns if t.role in ("system", "developer") and t.text.strip()]
    talk = [t for t in turns if t.role in ("user", "assistant")]
    users = [i for i, t in enumerate(talk) if t.role == "user"]
    if not users:
        raise ValueError(NO_QUESTION)
    document, first = "", 0
    history = [(t.role, t.text) for t in talk]
    if not context_id:
        split = split_question(talk[users[0]])
        if split is not None:
            document, question = split
            history[users[0]] = ("user", question)
            first = users[0]
        elif len(users) > 1:
            document, first = talk[users[0]].text, users[0] + 1
    *before, (_, question) = history[first:users[-1] + 1]
    if not question.strip():
        raise ValueError(NO_QUESTION)
    return Conversation(question.strip(), document, instructions, [(r, t) for r, t in before if t.strip()])
