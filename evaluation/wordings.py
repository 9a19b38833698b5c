"""The wordings of the offline RULER-style tasks: a few paraphrases of each instruction and
question (variant 0 follows RULER's wording), so a method can be checked against wordings it was
not tuned on."""

from __future__ import annotations

import random


def pick(variants: tuple, variant: int | None, phrasing_seed: int | None) -> int:
    """Variant index: explicit, else drawn from phrasing_seed, else 0 (RULER's wording)."""
    if variant is not None:
        return variant % len(variants)
    if phrasing_seed is not None:
        return random.Random(phrasing_seed).randrange(len(variants))
    return 0


# (instruction, question, answer prefix)
PASSKEY_WORDING = (
    ("There is an important info hidden inside a lot of irrelevant text. Find it and "
     "memorize it. I will quiz you about the important information there.",
     "What is the pass key?", "The pass key is"),
    ("Somewhere in the long, mostly meaningless text below there is one piece of important "
     "information. Find it and remember it, because you will be asked about it afterwards.",
     "Which pass key was given in the text above?", "The pass key given in the text is"),
    ("Read the following text. Almost all of it is filler, but it hides a pass key that you "
     "will need later.",
     "Tell me the pass key that was hidden in the text.", "The hidden pass key is"),
)

# (instruction, question one key, prefix one key, question several, prefix several)
NIAH_WORDING = (
    ("Some special magic numbers are hidden within the following text. Make sure to memorize "
     "it. I will quiz you about the numbers afterwards.",
     "What is the special magic number for {key} mentioned in the provided text?",
     "The special magic number for {key} mentioned in the provided text is",
     "What are all the special magic numbers for {key} mentioned in the provided text?",
     "The special magic numbers for {key} mentioned in the provided text are"),
    ("The text below hides a few special magic numbers. Remember them: you will be asked "
     "about them once you have read it.",
     "Which special magic number does the text give for {key}?",
     "The special magic number the text gives for {key} is",
     "Which special magic numbers does the text give for {key}? List every one.",
     "The special magic numbers the text gives for {key} are"),
    ("Read the following document carefully and keep track of any special magic numbers "
     "it mentions.",
     "Looking back at the document, what number was named as the special magic number "
     "for {key}?",
     "For {key}, the special magic number is",
     "Looking back at the document, which numbers were named as special magic numbers "
     "for {key}?",
     "For {key}, the special magic numbers are"),
)

VT_WORDING = (
    ("Memorize and track the chain(s) of variable assignment hidden in the following text.",
     "Question: Find all variables that are assigned the value {value} in the text above.",
     "Answer: According to the chain(s) of variable assignment in the text above, {n} "
     "variables are assigned the value {value}, they are:"),
    ("The text below contains variable assignments scattered among unrelated sentences. "
     "Follow every assignment carefully.",
     "Which variables end up holding the value {value}, directly or through other variables?",
     "The variables that hold the value {value} are:"),
    ("Keep track of each statement of the form VAR NAME = ... that appears in the text below.",
     "List every variable whose value is {value}, following the assignments in the text.",
     "Following the assignments, the variables whose value is {value} are:"),
)

CWE_WORDING = (
    ("Below is a numbered list of words. In these words, some appear more often than others. "
     "Memorize the ones that appear most often.",
     "Question: What are the {k} most common words in the above list?",
     "Answer: The top {k} words that appear most often in the list are:"),
    ("Here is a long numbered list of words, some of them repeated many times. Keep count of "
     "how often each word occurs.",
     "Which {k} words occur most often in the list above?",
     "The {k} words that occur most often in the list are:"),
    ("Read the numbered word list that follows and notice which words keep coming back.",
     "Name the {k} words that are repeated most often in that list.",
     "The {k} most repeated words are:"),
)

FWE_WORDING = (
    ("Read the following coded text and track the frequency of each coded word. Find the "
     "{k} most frequently appeared coded words.",
     "Question: Do not provide any explanation. Please ignore the dots '....'. What are the "
     "{k} most frequently appeared words in the above coded text?",
     "Answer: According to the coded text above, the {k} most frequently appeared words "
     "are:"),
    ("The following is a text in a made-up code. Count how many times each coded word "
     "appears; the dots '....' are only separators.",
     "Which {k} coded words appear most often in the text above?",
     "The {k} coded words that appear most often are:"),
    ("Below is a long string of coded words separated now and then by dots '....'. Watch "
     "which words come up most.",
     "What are the {k} most frequent coded words? Give just the words.",
     "The {k} most frequent coded words are:"),
)
