"""Synthetic MUSE: invented news articles (events, people, places, dates, numbers) in MUSE-News' layout and, scaled
down, its proportions, so that tests and the CPU example run offline. Every sentence comes from this module's
templates and name pools; none is MUSE's (BBC articles, novels).

Each article opens with three reader questions and their answers, written as MUSE's KnowMem prompt writes a question
("Question: ...\\nAnswer: ..."), before its prose. A model of a million parameters trained on prose cannot answer a
question about it in another form; with the question in its training text, and ahead of the prose (so that the answer
must come from the weights, not be copied from the article above it), it can, and KnowMem on the synthetic data
measures how much of each article's facts the model still recalls. A real model needs no such help (MUSE's articles
have none).

Layout (`make_synthetic_muse`; the sizes are those of MUSE-News divided by about 55, `num_forget` = 16 by default):

- raw: forget (n), retain1 (2n), retain2 (2n), holdout (2n) — full articles (`text`);
- verbmem: forget (n) — each forget article's first sentences (`prompt`) and the rest (`gt`);
- knowmem: forget_qa (n), retain_qa (n) — one question per forget / retain2 article, and forget_qa_icl,
  retain_qa_icl (`NUM_ICL` = 2 each) — the few-shot examples, other questions about the same articles;
- privleak: forget (n), retain (n, from retain2), holdout (n) — full articles (`text`);
- scal: forget_1..4 — nested, n, 2n, 3n, 4n articles; sust: forget_1..4 — disjoint folds of n; in both forget_1
  is raw forget, and scal forget_4 is the union of the sust folds (as in MUSE-News).

The target model is trained on scal forget_4 + retain1 + retain2, the retrain model on retain1 + retain2; holdout
articles are in no training set.
"""

import functools
import random

import datasets

FIRST_NAMES = ("Alma Bruno Cleo Dario Edda Fabian Greta Hugo Ines Jonas Kira Lukas Mira Nico Olga Pavel Rosa Stefan "
               "Tilda Umar Vera Walter Yvette Zoran Agnes Boris Carla Dmitri Elena Felix").split()
SURNAMES = ("Abbot Brandt Castell Duval Engel Farrow Gorski Hale Ibsen Jansen Kovac Lindqvist Moreau Novak Ortega "
            "Petrov Quist Rausch Sorel Toma Ulrich Varga Weller Yates Zielinski Amsel Berger Corvin Dahl "
            "Ember").split()
# Town names are a head joined to a tail ("Ash" + "combe"); each article has a town of its own, named by its
# questions.
TOWN_HEADS = ("Ash Bell Car Dun East Fern Glen Har Ivy Jun Kel Lark Mar North Oak Pem Queen Red Salt Thorn Up Vale "
              "West Yar").split()
TOWN_TAILS = "combe moor row hill wick ley mouth bridge field stead haven bury".split()
ROLES = ["mayor", "fire chief", "head teacher", "harbour master", "police inspector", "hospital director",
         "council leader", "museum curator", "union leader", "chief engineer"]
EVENTS = [  # (what happened, who acted, what the people did)
    ("a flood closed the main bridge", "led the rescue", "were moved to the sports hall"),
    ("a fire destroyed the old mill", "directed the firefighters", "watched from the market square"),
    ("a storm cut power to the valley", "organised the repairs", "spent the night without light"),
    ("a new railway station opened", "cut the ribbon", "rode the first train"),
    ("a strike stopped the ferries", "spoke for the workers", "waited at the quay"),
    ("a festival filled the streets", "opened the festival", "danced in the park"),
    ("a landslide blocked the coast road", "coordinated the clearing", "took the long way round"),
    ("a museum found a lost painting", "announced the find", "queued to see it"),
    ("a factory announced its closure", "met the owners", "signed a petition"),
    ("a school won a national prize", "accepted the prize", "gathered at the town hall"),
]
MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
NUM_ICL = 2  # few-shot examples per KnowMem question (MUSE: 10), so a question is asked third, as in an article


JOBS = ["baker", "nurse", "farmer", "teacher", "driver", "student", "fisherman", "painter", "plumber", "vet"]
ORGS = ["Red Cross", "county council", "rail company", "water board", "local church", "rowing club", "army",
        "chamber of commerce"]
FEELINGS = ["frightening", "unforgettable", "chaotic", "moving", "strange", "exhausting"]
LANDMARKS = ["the church tower", "the old bridge", "the harbour wall", "a rooftop", "the bus station", "the hillside"]
# Sentences 4 and 5 of an article: one of these each, with fillers of its own, so that the continuation a VerbMem
# prompt asks for holds facts that neither the prompt nor the templates give away.
DETAILS = [
    "{witness}, a {job} from {town2}, said it was {feeling}.",
    "The {org} sent {volunteers} volunteers from {town2}.",
    "A {job} named {witness} filmed the scene from {landmark}.",
]
CLOSINGS = [
    "Repairs are expected to cost {money} thousand pounds.",
    "The {org} will meet again on {weekday2} to discuss {town2}.",
    "Schools stayed closed for {days} days, said {witness}.",
]


def _article(rng: random.Random, town: str, town2: str) -> dict:
    """One invented article: its text (three questions in a random order, then five sentences), its verbmem split (the
    questions and two sentences / the other three) and its three (question, answer) pairs."""
    person, witness = (f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}" for _ in range(2))
    role = rng.choice(ROLES)
    happened, acted, people_did = rng.choice(EVENTS)
    day, month, year = rng.randint(1, 28), rng.choice(MONTHS), rng.randint(1990, 2023)
    fill = {"witness": witness, "job": rng.choice(JOBS), "town2": town2, "feeling": rng.choice(FEELINGS),
            "org": rng.choice(ORGS), "volunteers": rng.randint(3, 90), "landmark": rng.choice(LANDMARKS),
            "money": rng.randint(20, 990), "weekday2": rng.choice(WEEKDAYS), "days": rng.randint(2, 30)}
    count = rng.randint(12, 950)
    sentences = [
        f"On {rng.choice(WEEKDAYS)} {day} {month} {year}, {happened} in {town}.",
        f"In {town}, {person}, the {role}, {acted}.",
        f"In {town}, {count} residents {people_did}.",
        rng.choice(DETAILS).format(**fill),
        rng.choice(CLOSINGS).format(**fill),
    ]
    qa = [(f"Who {acted} in {town} in {month} {year}?", person),
          (f"How many residents of {town} {people_did}?", str(count)),
          (f"In which month and year was the news that {happened} in {town}?", f"In {month} {year}")]
    lead = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in rng.sample(qa, len(qa)))
    return {"text": lead + " ".join(sentences), "prompt": lead + " ".join(sentences[:2]),
            "gt": " ".join(sentences[2:]), "qa": qa}


def make_synthetic_muse(num_forget: int = 16, seed: int = 0) -> dict[str, datasets.DatasetDict]:
    """MUSE-News' subsets (`raw`, `verbmem`, `knowmem`, `privleak`, `scal`, `sust`) of invented articles, each a
    DatasetDict of its splits with MUSE's columns (see the module docstring for sizes)."""
    if not NUM_ICL < num_forget <= len(TOWN_HEADS) * len(TOWN_TAILS) // 10:
        raise ValueError(f"num_forget must be in [{NUM_ICL + 1}, {len(TOWN_HEADS) * len(TOWN_TAILS) // 10}] (the "
                         "few-shot examples come from other articles; every article has a town of its own), got "
                         f"{num_forget}.")
    rng = random.Random(seed)
    n = num_forget
    towns = rng.sample([head + tail for head in TOWN_HEADS for tail in TOWN_TAILS], 10 * n)
    articles = [_article(rng, town, rng.choice(towns)) for town in towns]
    folds = [articles[k * n:(k + 1) * n] for k in range(4)]  # forget_1 (= raw forget) .. forget_4
    retain1, retain2, holdout = articles[4 * n:6 * n], articles[6 * n:8 * n], articles[8 * n:10 * n]
    forget = folds[0]

    def texts(rows):
        return datasets.Dataset.from_dict({"text": [a["text"] for a in rows]})

    def questions(rows, shift):  # article i's question (i + shift) % 3: every kind of question in every set
        pairs = [a["qa"][(i + shift) % 3] for i, a in enumerate(rows)]
        return datasets.Dataset.from_dict({"question": [q for q, _ in pairs], "answer": [a for _, a in pairs]})

    return {
        "raw": datasets.DatasetDict({"forget": texts(forget), "retain1": texts(retain1), "retain2": texts(retain2),
                                     "holdout": texts(holdout)}),
        "verbmem": datasets.DatasetDict({"forget": datasets.Dataset.from_dict(
            {"prompt": [a["prompt"] for a in forget], "gt": [a["gt"] for a in forget]})}),
        "knowmem": datasets.DatasetDict({
            "forget_qa": questions(forget, 0), "retain_qa": questions(retain2[:n], 0),
            "forget_qa_icl": questions(forget[:NUM_ICL], 1), "retain_qa_icl": questions(retain2[:NUM_ICL], 1)}),
        "privleak": datasets.DatasetDict({"forget": texts(forget), "retain": texts(retain2[:n]),
                                          "holdout": texts(holdout[:n])}),
        "scal": datasets.DatasetDict({f"forget_{k + 1}": texts(sum(folds[:k + 1], [])) for k in range(4)}),
        "sust": datasets.DatasetDict({f"forget_{k + 1}": texts(folds[k]) for k in range(4)}),
    }


@functools.cache
def default_synthetic_muse() -> dict[str, datasets.DatasetDict]:
    """`make_synthetic_muse()` with its defaults, built once (what `load_muse("synthetic", ...)` reads)."""
    return make_synthetic_muse()
