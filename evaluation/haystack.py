"""Filler text for synthetic long-context tasks, generated offline and deterministically.

Two kinds of haystack:
- "noise": the classic five repeated sentences ("The grass is green. ..."), as in
  passkey retrieval and RULER's simplest needle tasks;
- "prose": varied, plausible English paragraphs built from sentence templates and word
  lists. Nothing is downloaded, so the project can build any length of haystack anywhere.

The prose never contains digits longer than four characters, hyphenated words, or the
phrasings used by needles ("special magic", "pass key", "VAR "), so a needle can only be
found where it was planted.
"""

from __future__ import annotations

import bisect
import random

NOISE_SENTENCES = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)

# ---------------------------------------------------------------------------------------
# word lists (small on purpose: variety comes from combining them)

FIRST_NAMES = tuple("""
    Anna Bernard Clara Daniel Edith Felix Greta Henry Ida Jonas Karin Leopold Martha Nils Olga Peter
    Rosa Samuel Teresa Victor Walter Yvonne Agnes Bruno Cecilia Dorothy Emil Frieda Gustav Helena
    Isaac Julia Konrad Lydia Marcus Nora Oscar Paula Rudolf Sophie Thomas Ursula Vera William
""".split())
SURNAMES = tuple("""
    Abbott Baker Carver Dalton Ellison Fletcher Garner Hale Ingram Jennings Keller Lambert Mercer
    Norris Osborne Porter Quinn Randall Sawyer Thatcher Underwood Vaughan Whitaker Young Ashford
    Brennan Crowley Dunmore Fairbanks Holloway Kingsley Lockwood Marlow Pemberton Redfield Stanton
    Talbot Winslow
""".split())
PLACES = (
    "Ashbury", "Bramford", "Caldwell", "Dunmere", "Elmstead", "Fenwick", "Glenhollow",
    "Harrowgate", "Ivybridge", "Kestrel Bay", "Larkspur", "Millbrook", "Northwold",
    "Oakhaven", "Pinecrest", "Queensferry", "Ravenscar", "Stonebridge", "Thornbury",
    "Upton Vale", "Westmarch", "Wychwood", "Alderney", "Brightwater", "Coldharbour",
    "Deepdale", "Eastwick", "Foxley", "Greystone", "Highmoor", "Lindenfield", "Marshgate",
)
RIVERS = (
    "Amber", "Brook", "Cressing", "Dove", "Ember", "Falling", "Grey", "Heron", "Isle",
    "Linden", "Mill", "Otter", "Silver", "Swan", "Willow",
)
PROFESSIONS = (
    "baker", "blacksmith", "carpenter", "clockmaker", "cooper", "doctor", "farmer",
    "fisherman", "gardener", "glassblower", "innkeeper", "librarian", "mapmaker", "mason",
    "merchant", "miller", "musician", "painter", "potter", "printer", "sailor", "schoolteacher",
    "shepherd", "shoemaker", "surveyor", "tailor", "weaver", "watchmaker",
)
OBJECTS = (
    "lantern", "compass", "violin", "teapot", "chessboard", "telescope", "wooden chest",
    "pocket watch", "music box", "rocking chair", "silver spoon", "map", "kettle",
    "walking stick", "hourglass", "bell", "mirror", "quilt", "candlestick", "typewriter",
    "bicycle", "sundial", "weather vane", "fiddle", "ledger", "basket", "sewing machine",
    "rowing boat", "globe", "portrait", "clock", "spinning wheel", "wheelbarrow",
)
MATERIALS = (
    "oak", "pine", "granite", "limestone", "red brick", "slate", "sandstone", "timber",
    "flint", "marble", "clay", "iron", "cedar",
)
BUILDINGS = (
    "mill", "chapel", "library", "bridge", "lighthouse", "market hall", "school", "inn",
    "bakery", "windmill", "granary", "town hall", "boathouse", "observatory", "theatre",
    "post office", "railway station", "bookshop", "forge", "greenhouse",
)
LANDMARKS = (
    "harbour", "old bridge", "village green", "hilltop", "churchyard", "orchard",
    "riverbank", "crossroads", "market square", "lakeside", "quarry", "meadow",
    "stone circle", "town gate",
)
ANIMALS = (
    "fox", "heron", "badger", "owl", "hare", "deer", "otter", "swan", "raven", "goat",
    "pony", "hedgehog", "kingfisher", "stag", "sheepdog", "cat", "donkey", "falcon",
    "beaver", "pheasant",
)
FOODS = (
    "apple pie", "barley soup", "fresh bread", "honey cake", "plum jam", "roast chestnuts",
    "smoked fish", "cheese", "oatcakes", "pear cider", "lentil stew", "gingerbread",
    "blackberries", "potato pancakes", "mushroom pie", "salted butter", "walnut bread",
)
TOPICS = (
    "astronomy", "botany", "local history", "navigation", "poetry", "geometry", "music",
    "the old calendar", "weaving patterns", "bird migration", "the river tides",
    "medicine", "folk songs", "bookbinding", "cartography", "beekeeping", "clock repair",
    "the weather", "ancient coins", "mountain paths",
)
GROUPS = (
    "council", "guild of weavers", "choir", "fishing fleet", "reading society",
    "town band", "harvest committee", "chess club", "lifeboat crew", "orchard society",
)
ADJECTIVES = (
    "quiet", "old", "narrow", "bright", "heavy", "crooked", "gentle", "ancient", "small",
    "tall", "worn", "polished", "dusty", "curious", "peaceful", "busy", "cold", "warm",
    "famous", "forgotten", "elegant", "simple", "sturdy", "fragile", "lonely", "cheerful",
    "mysterious", "graceful", "humble", "proud",
)
COLORS = (
    "green", "blue", "red", "white", "yellow", "grey", "brown", "dark green", "pale blue",
    "ochre", "crimson", "cream",
)
SEASONS = ("spring", "summer", "autumn", "winter")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEATHER = (
    "mild and dry", "wet and windy", "unusually cold", "warm and still", "foggy",
    "stormy", "clear and bright", "damp and grey", "hot and dusty", "snowy",
)
WEATHER_EVENTS = ("storm", "long rains", "early frost", "great flood", "heavy snow", "drought")
STATES = (
    "repainted", "rebuilt", "closed", "sold to a stranger", "turned into a museum",
    "repaired", "expanded", "abandoned", "moved closer to the river",
)
PAST_ACTIONS = (
    "repaired", "painted", "sold", "found", "borrowed", "carried", "described",
    "measured", "photographed", "restored", "lost", "inherited", "traded", "sketched",
)
NUMBER_WORDS = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve",
)

EXTRA_NOUNS = tuple("""
    anchor harvest meadow candle ribbon saddle thimble pepper marble feather pebble blanket ladder
    bucket whistle mitten barrel cradle hammer needle kitten rabbit parrot walrus pillow castle
    garden forest valley island desert canyon glacier volcano prairie lagoon jungle tundra meteor
    comet planet rocket engine wagon sleigh canoe paddle oar rudder sail mast kite puzzle riddle
    fable legend ballad sonnet chorus melody rhythm trumpet flute drum harp cello banjo tulip daisy
    lily orchid violet poppy clover thistle fern maple birch willow spruce acorn pinecone cherry
    plum peach lemon melon grape walnut almond cocoa biscuit muffin noodle pickle waffle pancake
    custard yogurt butter cheese radish carrot turnip cabbage onion garlic celery spinach tomato
    potato pumpkin squash zucchini saffron ginger nutmeg crystal copper bronze velvet linen cotton
    wool silk leather paper ink chalk crayon pencil eraser folder stapler window curtain carpet sofa
    cushion drawer shelf cupboard staircase chimney balcony cellar attic porch fence gate tunnel
    tower fountain statue arch pillar dome spire vault
""".split())
EXTRA_ADJECTIVES = (
    "brave", "calm", "eager", "fancy", "jolly", "kind", "lively", "witty", "zealous",
    "clever", "swift", "silent", "hollow", "frozen", "golden", "rusty", "shiny", "fuzzy",
    "bumpy", "soggy", "crispy", "sleepy", "noisy", "tiny", "vast",
)
EXTRA_VERBS = (
    "run", "jump", "swim", "climb", "whisper", "wander", "gather", "scatter", "borrow",
    "polish", "sketch", "knit", "bake", "brew", "carve", "weave", "plant",
)


def _single(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({w for g in groups for w in g if " " not in w}))


# Single words for the common-words task and for word-like needle keys.
KEY_NOUNS = _single(PROFESSIONS, ANIMALS, MATERIALS, BUILDINGS, OBJECTS, EXTRA_NOUNS)
KEY_ADJECTIVES = _single(ADJECTIVES, EXTRA_ADJECTIVES)
WORDS = _single(KEY_NOUNS, KEY_ADJECTIVES, COLORS, TOPICS, SEASONS, EXTRA_VERBS)

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gl", "h", "j", "k", "l", "m", "n", "p",
           "pr", "r", "s", "st", "t", "tr", "v", "w", "z", "sh", "th", "ch", "pl", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "t", "x", "nd", "rk", "st")


def word_keys(rng: random.Random, n: int) -> list[str]:
    """n distinct word-like keys such as 'quiet-lantern' (needle keys, never in the prose)."""
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < n:
        key = f"{rng.choice(KEY_ADJECTIVES)}-{rng.choice(KEY_NOUNS)}"
        if key not in seen:
            seen.add(key)
            keys.append(key)
    return keys


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word of two or three syllables, e.g. 'bralentor'."""
    syllables = rng.choice((2, 2, 3))
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables))


class WordStream:
    """Distinct words: a shuffled mix of real words and pseudo-words, extended on demand.

    Real and made-up words are shuffled together so that being a real word says nothing
    about how often a word occurs in a task built from the stream.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words: list[str] = []
        self.seen: set[str] = set()
        self._real = list(WORDS)
        rng.shuffle(self._real)

    def take(self, n: int) -> list[str]:
        if n > len(self.words):
            fresh: list[str] = []
            while len(fresh) < n - len(self.words):
                use_real = self._real and self.rng.random() < 0.5
                w = self._real.pop() if use_real else pseudo_word(self.rng)
                if w not in self.seen:
                    self.seen.add(w)
                    fresh.append(w)
            self.words.extend(fresh)
        return self.words[:n]


# ---------------------------------------------------------------------------------------
# prose

_TEMPLATES = (
    "{person} walked from {place} to {place2} in the {season} of {year}.",
    "The {adj} {object} in the corner had belonged to {first}'s grandmother.",
    "In {month}, the weather in {place} was {weather}.",
    "Most of the {profession}s in {place} kept a {object} near the door.",
    "The {group} of {place} met every {day} to talk about {topic}.",
    "By {year}, about {count} people lived in {place}.",
    "A {adj} {animal} was seen near the {landmark} of {place} early one morning.",
    "{person}, a {profession} from {place}, spent {num} years studying {topic}.",
    "The road between {place} and {place2} was closed for weeks after the {event}.",
    "Nobody in {place} could remember a {season} as {weather} as the one in {year}.",
    "On {day}s, {first} sold {food} at the market in {place}.",
    "The old {building} in {place} was built of {material} and painted {color}.",
    "Travellers often stopped at {place} to buy {food} and fresh water.",
    "When {first} returned to {place}, the {building} had been {state}.",
    "The {river} River flooded twice during the {decade}s.",
    "Letters written by {person} describe {adj} evenings spent reading about {topic}.",
    "It took {num} days to carry the {object} over the hills to {place}.",
    "{first} and {first2} argued for hours about the best way to make {food}.",
    "According to the parish records, the {group} of {place} lost its {object} in {year}.",
    "A {color} {object} hung above the fireplace in the house of {person}.",
    "On clear nights, the people of {place} watched the stars from the {landmark}.",
    "The children of {place} learned {topic} from a {profession} called {person}.",
    "A {weather} {season} forced the farmers around {place} to bring in the harvest early.",
    "Some historians believe the {building} in {place} is older than the town itself.",
    "{person} kept a diary in which every {day} was described in {num} careful lines.",
    "The {profession} {first} {action} the {object} for a neighbour in {month} {year}.",
    "There is a {adj} path from the {landmark} down to the {river} River.",
    "Every {season}, the {group} of {place} held a fair with music and {food}.",
    "{first} once said that a good {object} is worth more than a full purse.",
    "The {building} at {place} stood empty from {year} until a {profession} bought it.",
    "A {adj} {animal} lived under the {building} for {num} summers.",
    "Visitors to {place} remark on the {adj} streets and the smell of {food}.",
    "In the {decade}s, {place} was known for its {material} and its skilled {profession}s.",
    "The {river} River freezes in {month} only in the coldest years.",
    "{person} drew a {adj} map of {place} that still hangs in the {building}.",
    "Nobody knows who first {action} the {adj} {object} that stands by the {landmark}.",
    "The distance from {place} to {place2} is about {num} hours on foot.",
    "Each {month}, a {profession} from {place2} came to {place} with a cart of {food}.",
)


class Prose:
    """Deterministic generator of plausible English sentences and paragraphs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def sentence(self) -> str:
        r = self.rng
        template = r.choice(_TEMPLATES)
        place, place2 = r.sample(PLACES, 2)
        first, first2 = r.sample(FIRST_NAMES, 2)
        text = template.format(
            person=f"{first} {r.choice(SURNAMES)}", first=first, first2=first2,
            place=place, place2=place2, season=r.choice(SEASONS), month=r.choice(MONTHS),
            day=r.choice(DAYS), year=r.randint(1150, 1985), decade=r.randrange(1500, 1980, 10),
            count=r.randrange(150, 9900, 50), num=r.choice(NUMBER_WORDS),
            adj=r.choice(ADJECTIVES), object=r.choice(OBJECTS), weather=r.choice(WEATHER),
            profession=r.choice(PROFESSIONS), group=r.choice(GROUPS), topic=r.choice(TOPICS),
            animal=r.choice(ANIMALS), landmark=r.choice(LANDMARKS), event=r.choice(WEATHER_EVENTS),
            food=r.choice(FOODS), building=r.choice(BUILDINGS), material=r.choice(MATERIALS),
            color=r.choice(COLORS), state=r.choice(STATES), river=r.choice(RIVERS),
            action=r.choice(PAST_ACTIONS),
        )
        return text[0].upper() + text[1:]

    def paragraph(self, min_sentences: int = 3, max_sentences: int = 7) -> list[str]:
        return [self.sentence() for _ in range(self.rng.randint(min_sentences, max_sentences))]


class Haystack:
    """An endless, deterministic stream of filler sentences, materialised on demand.

    take(n) always returns the same first n sentences, so a caller can search over n
    (to hit a token budget) without the text changing under it.
    """

    def __init__(self, kind: str, seed: int) -> None:
        if kind not in ("noise", "prose"):
            raise ValueError(f"unknown haystack {kind!r}; use 'noise' or 'prose'")
        self.kind = kind
        self._prose = Prose(random.Random(seed))
        self.sentences: list[str] = []
        self.paragraph_starts: list[bool] = []  # True where a sentence opens a paragraph

    def _grow(self, n: int) -> None:
        while len(self.sentences) < n:
            if self.kind == "noise":
                i = len(self.sentences)
                self.sentences.append(NOISE_SENTENCES[i % len(NOISE_SENTENCES)])
                self.paragraph_starts.append(False)
            else:
                para = self._prose.paragraph()
                self.sentences.extend(para)
                self.paragraph_starts.extend([True] + [False] * (len(para) - 1))

    def take(self, n: int) -> tuple[list[str], list[bool]]:
        self._grow(n)
        return self.sentences[:n], self.paragraph_starts[:n]


def render(sentences: list[str], paragraph_starts: list[bool],
           needles: list[tuple[float, str]] = ()) -> str:
    """Join sentences into text, planting each (depth, needle) at the sentence boundary
    nearest to that fraction of the text's characters. Needles sharing a boundary keep
    their given order, so an ordered chain stays ordered."""
    starts: list[int] = []
    pos = 0
    for i, s in enumerate(sentences):
        if i:
            pos += 2 if paragraph_starts[i] else 1
        starts.append(pos)
        pos += len(s)
    total = pos
    bounds = starts + [total]  # boundary k sits before sentence k; the last one ends the text
    slots: dict[int, list[str]] = {}
    for depth, needle in needles:
        k = _nearest(bounds, min(max(depth, 0.0), 1.0) * total)
        slots.setdefault(k, []).append(needle)
    parts: list[str] = []
    for k in range(len(sentences) + 1):
        for needle in slots.get(k, ()):
            parts.append(" " + needle if parts else needle)
        if k < len(sentences):
            sep = ("\n\n" if paragraph_starts[k] else " ") if parts else ""
            parts.append(sep + sentences[k])
    return "".join(parts)


def _nearest(sorted_values: list[int], x: float) -> int:
    i = bisect.bisect_left(sorted_values, x)
    if i == 0:
        return 0
    if i == len(sorted_values):
        return i - 1
    return i if sorted_values[i] - x < x - sorted_values[i - 1] else i - 1
