"""Real chat clients hold a conversation about one document through the service: the openai SDK,
LangChain's ChatOpenAI and LlamaIndex's OpenAILike, each with a system prompt, three turns, whole
and streamed, against a real server on a localhost port. The document is encoded once."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from evaluation.chat_clients import CLIENTS, openai_sdk  # noqa: E402
from test_serve import QUESTION, TEXT, start  # noqa: E402

SYSTEM = "You answer questions about the document briefly."
FOLLOW_UPS = ["Is that the code of the vault?", "Say it once more."]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    running, service = start(tiny_model_dir)
    yield running, service
    running.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("name", CLIENTS)
def test_a_three_turn_conversation_through_a_real_client(server, name, stream):
    running, service = server
    text = TEXT.replace("4417", str(2000 + 37 * len(name) + stream))  # a document of its own per test
    turn = CLIENTS[name](running.url + "/v1", stream)
    history = [("system", SYSTEM), ("user", text), ("user", QUESTION)]
    before = service.cache.encodings
    answers = []
    for follow_up in [None, *FOLLOW_UPS]:
        if follow_up is not None:
            history += [("assistant", answers[-1]), ("user", follow_up)]
        answers.append(turn(history))
    assert service.cache.encodings == before + 1  # turns 2 and 3 found the document's encoding
    # The answers are the service's own: the same conversation asked directly gives the same text.
    direct = openai_sdk(running.url + "/v1", stream=False)(history)
    assert answers[-1] == direct and all(isinstance(a, str) and a for a in answers)
