"""``python -m ilre.answer``: the question-answering command (its code is ``ilre.ask``).

This file only runs that command; ``ilre.answer`` in Python is the function (``ilre.api.answer``).
Import ``ilre.ask`` for the command's functions.
"""

if __name__ == "__main__":
    import sys

    from ilre.ask import main

    sys.exit(main())
