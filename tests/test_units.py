"""Where prose is cut into recall units: after sentences and at line breaks that do not wrap one."""

from __future__ import annotations

import torch

from ilre.units import find_unit_starts

MAN_PAGE = """\
       --max-alloc=SIZE
              By default rsync limits an individual malloc/realloc to about
              1GB in size.  For most people this limit works just fine and
              prevents a protocol error.

       --config=FILE
              This specifies an alternate config file than the default.  This
              is only relevant when --daemon is specified.
One of the special magic numbers for a key is: 1.
Options that a longer line introduces with a colon at its end:
   * a list item that is long enough to be over forty characters
   * another list item
a short line without a full stop
followed by another one
"""


def units_of(text: str, join_wrapped: bool = True) -> list[str]:
    """The units of ``text``, tokenised one character a token (so token starts are characters)."""
    offsets = torch.tensor([[i, i + 1] for i in range(len(text))])
    starts = find_unit_starts(text, offsets, join_wrapped=join_wrapped).tolist()
    return [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)])]


def test_a_sentence_wrapped_over_lines_is_one_unit_with_its_end():
    units = units_of(MAN_PAGE)
    assert ("By default rsync limits an individual malloc/realloc to about\n"
            "              1GB in size.") in units
    assert ("This\n              is only relevant when --daemon is specified.") in units


def test_items_headings_blank_lines_and_lead_ins_still_end_units():
    units = units_of(MAN_PAGE)
    assert "--max-alloc=SIZE" in units and "--config=FILE" in units  # indentation changes
    assert "prevents a protocol error." in units[2]  # a blank line ends the paragraph's last sentence
    assert "One of the special magic numbers for a key is: 1." in units
    assert "Options that a longer line introduces with a colon at its end:" in units
    assert "* a list item that is long enough to be over forty characters" in units
    assert "* another list item" in units
    assert "a short line without a full stop" in units and "followed by another one" in units


def test_one_line_per_unit_where_no_line_wraps():
    text = "\n".join(f"One of the special magic numbers for key {i} is: {i}." for i in range(5))
    assert len(units_of(text)) == 5


def test_the_older_split_ends_a_unit_at_every_line_break():
    """What BM25's chunks are grouped from: a plain retriever's lines, not ILRe's rule."""
    units = units_of(MAN_PAGE, join_wrapped=False)
    assert "By default rsync limits an individual malloc/realloc to about" in units
    assert "1GB in size." in units
