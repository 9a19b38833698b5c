"""Write the bundled example: a ~16K-token town chronicle with one fact planted in it.

    python scripts/make_example.py

16K tokens is twice the embedded model's trained window, so the example shows what ILRe is
for: the fact sits where the model cannot find it by reading everything.
"""

from pathlib import Path

from evaluation.haystack import Haystack, render

OUT = Path(__file__).resolve().parent.parent / "ilre" / "examples" / "town_chronicle.txt"
FACT = "The combination of the old lighthouse safe is 7342, and only the harbour master knows it."


def main() -> None:
    sentences, starts = Haystack("prose", seed=7).take(920)
    text = render(sentences, starts, needles=[(0.62, FACT)])
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} characters)")


if __name__ == "__main__":
    main()
