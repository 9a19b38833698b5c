"""What the answer reads of a conversation: its chat turns, within the history budget."""

import pytest
from jinja2.exceptions import TemplateError

from ilre.prompt import PromptTemplate
from ilre.serve.conversation import Conversation

from conftest import tiny_tokenizer


def words(text: str) -> int:
    return len(text.split())


def test_the_history_keeps_the_latest_turns_that_fit_and_starts_with_a_user_turn():
    talk = Conversation("q4?", "doc", ["Be brief."],
                        [("user", "one two three"), ("assistant", "four five"), ("user", "six seven"),
                         ("assistant", "eight")])
    assert talk.messages(words, limit=100) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two three"},
        {"role": "assistant", "content": "four five"}, {"role": "user", "content": "six seven"},
        {"role": "assistant", "content": "eight"}]
    # Five words hold "eight", "six seven" and "four five"; the oldest kept turn would be an
    # assistant's, so it goes too, and the instructions no longer fit.
    assert talk.messages(words, limit=5) == [{"role": "user", "content": "six seven"},
                                             {"role": "assistant", "content": "eight"}]
    assert talk.messages(words, limit=0) == []


def test_the_prompt_of_a_later_turn_holds_the_earlier_turns_as_chat_turns():
    template = PromptTemplate(tiny_tokenizer())
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the key?"},
               {"role": "assistant", "content": "It is 7342."}]
    prefix, suffix = template.around_context("Say it again.", history=history)
    text = template.tokenizer.decode(prefix) + "CONTEXT" + template.tokenizer.decode(suffix)
    chat = template.tokenizer.apply_chat_template(
        history + [{"role": "user", "content": template.user_text("CONTEXT", "Say it again.")}],
        tokenize=False, add_generation_prompt=True)
    assert text == chat
    plain = template.around_context("Say it again.")
    assert [t.tolist() for t in plain] == [template.prefix_ids().tolist(), template.suffix_ids("Say it again.").tolist()]


def test_a_template_without_a_system_role_gets_the_instructions_in_the_first_user_turn():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('no system role') }}{% endif %}"
                               "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
               {"role": "assistant", "content": "Hello."}]
    with pytest.raises(TemplateError):
        tokenizer.apply_chat_template(history, tokenize=False)
    text = tiny_tokenizer(chat=False).decode(PromptTemplate(tokenizer).chat_ids("Again?", history))
    assert text == "[user] Be brief.\n\nHi?\n[assistant] Hello.\n[user] Again?\n[assistant] "


DOC = "The harbour master keeps the tide tables in the blue cabinet."


def test_empty_content_parts_are_not_the_question():
    """The question is the last part that says something; an empty last part made it empty (a 500)."""
    from ilre.serve.conversation import Turn, read_conversation

    talk = read_conversation([Turn("user", [DOC, "Where are the tide tables?", "", "  "])])
    assert talk.question == "Where are the tide tables?" and talk.document == DOC


@pytest.mark.parametrize("parts", [[""], ["", "  "], [DOC + "\nQuestion:   "]])
def test_a_message_without_a_question_is_refused_or_read_whole(parts):
    from ilre.serve.conversation import NO_QUESTION, Turn, read_conversation

    if not "".join(parts).strip():
        with pytest.raises(ValueError, match=NO_QUESTION):
            read_conversation([Turn("user", parts)])
    else:  # a marker with nothing after it: no split, the message is one plain turn
        talk = read_conversation([Turn("user", parts)])
        assert talk.question.strip() and talk.document == ""
