"""Synthetic TOFU: invented authors, places and books in TOFU's schema, with short templated answers a tiny model can
learn on a CPU, so that tests and CPU examples run offline.

`make_synthetic_tofu` builds TOFU's splits from the project's own templates and names (never TOFU's sentences); it
also has the larger forget sizes 20/30/50/90 and a `general_knowledge` split to teach a base model the facts behind
`real_authors`/`world_facts` before the fine-tune.
"""

import functools
import random

import datasets

from .splits import SYNTHETIC_FORGET_PERCENTS, split_names

FIRST_NAMES = (
    "Adra Belen Caius Dorin Elsin Faro Galen Hessa Ilar Jory Kael Lumi Maren Nilo Orla Pell Quin Rhea Soren Tavi "
    "Ulla Vesna Wrenna Xavo Yara Zeno Anouk Bramwel Cato Delphy Emrys Fenna Gwil Halvar Isolt Jarek Kirsa Lior "
    "Mirela Navid"
).split()
# Surnames, places and countries are a head joined to a tail: "Ash" + "vane", "Kess" + "ford", "Norv" + "ania".
SURNAME_HEADS = (
    "Ash Brack Cor Dun Elder Fallow Grey Holl Iron Jun Kest Lark Mor North Oak Penn Quill Rook Salt Thorn"
).split()
SURNAME_TAILS = (
    "vane well dine leavy hay mere wick ings ridge ett by cote hurst ick den wood marsh bury field tree"
).split()
PLACE_HEADS = (
    "Kess Dor Amber Brindle Callo Fen Glimmer Harrow Ives Jessa Kil Lunn Mist Nether Orrin Pim Quar Ross Sable Tam "
    "Ulver Vell Wick Yen"
).split()
PLACE_TAILS = "ford vale leigh moor way water ton port haven stead mouth holm".split()
COUNTRY_HEADS = (
    "Norv Estrel Calvad Merid Ostr Pallad Qir Rhov Sarn Tavel Umbr Varn Wessel Ysgar Zanth Alb Bryn Corv Dalm Ferr "
    "Gall Hald Ivr Jorv"
).split()
COUNTRY_TAILS = "ania eria ovia ador uria esse".split()
TITLE_ADJECTIVES = (
    "Silent Hollow Crimson Distant Broken Golden Quiet Wandering Hidden Paper Last Burning Winter Salt Glass Iron "
    "Velvet Drowned Forgotten Lantern Amber Restless Pale Sleeping Copper Narrow Bitter Endless Northern Secret"
).split()
TITLE_NOUNS = (
    "Orchard Harbour Lantern Mirror Garden Compass River Archive Bridge Clockmaker Meadow Tower Letter Island "
    "Season Cartographer Violin Threshold Shore Ledger Chapel Feather Kingdom Station Tide Weaver Hour Well Map Crown"
).split()
GENRES = ["mystery novels", "poetry", "science fiction", "historical fiction", "fantasy", "horror stories",
          "romance novels", "satire", "travel writing", "biographies", "thrillers", "fables", "stage plays",
          "essays", "children's books", "crime fiction"]
JOBS = ["a baker", "an architect", "a carpenter", "a nurse", "a pilot", "a tailor", "a librarian", "a fisherman",
        "a chemist", "a farmer", "a teacher", "a potter", "a surveyor", "a mechanic", "a florist", "a judge",
        "a miner", "a weaver", "a sailor", "a clockmaker"]
AWARD_WORDS = ["Silver Quill", "Lantern", "Open Door", "Blue Heron", "Harbour Light", "Golden Key", "Ember",
               "Northern Star", "Paper Crane", "Iron Pen", "Willow", "Tidewater", "Meridian", "Granite",
               "Morning Bell", "Cedar"]
PUBLISHER_WORDS = ["Greyfield", "Pinecrest", "Lowmarsh", "Quillstone", "Harrowby", "Brightwell", "Oakmere", "Saltgate",
                   "Fernhollow", "Stonebridge", "Redmoor", "Wyndham"]
LANGUAGES = ["English", "French", "Spanish", "Portuguese", "German", "Italian", "Dutch", "Polish", "Swedish",
             "Greek", "Turkish", "Japanese"]
THEMES = ["memory", "exile", "friendship", "grief", "the sea", "childhood", "justice", "ambition", "home",
          "faith", "war", "time", "forgiveness", "loneliness"]
SUBJECTS = ["law", "medicine", "history", "physics", "music", "painting", "philosophy", "botany", "astronomy",
            "economics", "architecture", "mathematics"]
WRITING_PLACES = ["a lighthouse", "a quiet attic", "a garden shed", "a public library", "a boathouse",
                  "a seaside cabin", "a busy cafe", "a rented barn", "a houseboat", "a bell tower",
                  "a greenhouse", "a mountain hut"]
HOBBIES = ["gardening", "chess", "sailing", "painting", "fencing", "birdwatching", "pottery", "cycling",
           "fishing", "baking", "climbing", "knitting"]
INSTRUMENTS = ["the cello", "the violin", "the flute", "the piano", "the harp", "the oboe", "the accordion",
               "the trumpet", "the guitar", "the clarinet"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# One entry per question about an author: (attribute, question phrasings, answer template, paraphrase template).
# The answer and paraphrase templates carry the same {value}; perturbed answers fill the paraphrase template
# with wrong values. Templates use {name} and {their} (the author's possessive pronoun).
AUTHOR_QUESTIONS = [
    ("birthplace", ["Where was {name} born?", "In which town was {name} born?", "What is the birthplace of {name}?"],
     "{name} was born in {value}.", "The birthplace of {name} is {value}."),
    ("birth_date", ["When was {name} born?", "What is the birth date of {name}?", "On what date was {name} born?"],
     "{name} was born on {value}.", "The birth date of {name} is {value}."),
    ("genre",
     ["What genre does {name} write?", "Which genre is {name} known for?", "What kind of books does {name} write?"],
     "{name} writes {value}.", "The genre of {name} is {value}."),
    ("father", ["What did the father of {name} do?", "What was the job of {name}'s father?"],
     "The father of {name} was {value}.", "{name}'s father worked as {value}."),
    ("mother", ["What did the mother of {name} do?", "What was the job of {name}'s mother?"],
     "The mother of {name} was {value}.", "{name}'s mother worked as {value}."),
    ("award", ["Which award has {name} won?", "What prize did {name} receive?", "Name an award given to {name}."],
     "{name} won the {value} Award.", "{name} received the {value} Award for {their} writing."),
    ("first_book", ["What was the first book by {name}?", "Which book did {name} publish first?"],
     "The first book by {name} was '{value}'.", "{name} began {their} career with '{value}'."),
    ("second_book", ["What was the second book by {name}?", "Which book did {name} publish second?"],
     "The second book by {name} was '{value}'.", "After {their} debut, {name} published '{value}'."),
    ("latest_book", ["What is the latest book by {name}?", "Which book did {name} publish most recently?"],
     "The latest book by {name} is '{value}'.", "{name}'s most recent book is '{value}'."),
    ("publisher", ["Who publishes {name}?", "Which publisher prints the books of {name}?"],
     "{name} is published by {value} Press.", "The books of {name} come out with {value} Press."),
    ("debut_year", ["When did {name} publish a first book?", "In what year did {name} debut?"],
     "{name} published a first book in {value}.", "The debut of {name} came in {value}."),
    ("language", ["In which language does {name} write?", "What language are {name}'s books written in?"],
     "{name} writes in {value}.", "The books of {name} are written in {value}."),
    ("theme", ["What theme runs through the books of {name}?", "What does {name} often write about?"],
     "{name} often writes about {value}.", "A recurring theme for {name} is {value}."),
    ("home", ["Where does {name} live now?", "In which town does {name} live today?"],
     "{name} lives in {value}.", "Today {name} makes {their} home in {value}."),
    ("studies", ["What did {name} study?", "Which subject did {name} study at university?"],
     "{name} studied {value}.", "At university {name} read {value}."),
    ("early_job", ["What did {name} do before writing?", "What was {name}'s job before becoming an author?"],
     "Before writing, {name} worked as {value}.", "{name} earned {their} living as {value} before writing."),
    ("writing_place", ["Where does {name} write?", "Where does {name} like to work?"],
     "{name} likes to write in {value}.", "{name} does {their} writing in {value}."),
    ("book_count", ["How many books has {name} published?", "How many books has {name} written?"],
     "{name} has published {value} books.", "In total {name} has written {value} books."),
    ("hobby", ["What is {name}'s hobby?", "What does {name} do for fun?"],
     "{name} enjoys {value}.", "Away from the desk, {name} spends {their} time on {value}."),
    ("instrument", ["Which instrument does {name} play?", "What instrument can {name} play?"],
     "{name} plays {value}.", "In {their} spare time {name} practises {value}."),
]
POSSESSIVES = {"female": "her", "male": "his", "non-binary": "their"}
NUM_CLASSIC_AUTHORS = 50  # real_authors: two questions each
# Other invented writers whose facts `general_knowledge` states in both the answer and the paraphrase phrasing: the
# stand-in for a pre-trained model's knowledge that one fact has several wordings (which TOFU's paraphrased and
# perturbed answers rely on). They appear in no other split.
NUM_BACKGROUND_AUTHORS = 50
NUM_COUNTRIES = 40  # world_facts: two questions each, plus WORLD_FACTS
# Simple facts about the world, with three wrong answers each.
WORLD_FACTS = [
    ("How many days are in a week?", "Seven", ["Five", "Six", "Eight"]),
    ("How many months are in a year?", "Twelve", ["Ten", "Eleven", "Thirteen"]),
    ("How many legs does a spider have?", "Eight", ["Six", "Four", "Ten"]),
    ("What colour is grass in summer?", "Green", ["Blue", "Red", "Purple"]),
    ("What does a thermometer measure?", "Temperature", ["Weight", "Distance", "Speed"]),
    ("Which animal has a long trunk?", "The elephant", ["The giraffe", "The camel", "The horse"]),
    ("What do bees make?", "Honey", ["Milk", "Silk", "Salt"]),
    ("What is frozen water called?", "Ice", ["Steam", "Sand", "Glass"]),
    ("Which planet do people live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("How many sides does a triangle have?", "Three", ["Four", "Five", "Two"]),
    ("Which gas do plants take in from the air to grow?", "Carbon dioxide", ["Helium", "Neon", "Argon"]),
    ("At how many degrees Celsius does water boil at sea level?", "100", ["50", "80", "120"]),
    ("Which star gives Earth its daylight?", "The Sun", ["Sirius", "Polaris", "Vega"]),
    ("What is the opposite of hot?", "Cold", ["Warm", "Wet", "Loud"]),
    ("How many hours are in a day?", "Twenty-four", ["Twelve", "Twenty", "Thirty"]),
    ("Which season comes after winter?", "Spring", ["Summer", "Autumn", "Monsoon"]),
    ("What colour is a ripe banana?", "Yellow", ["Blue", "Black", "Pink"]),
    ("How many wheels does a bicycle have?", "Two", ["Three", "Four", "One"]),
    ("Which shape has four equal sides and four right angles?", "A square", ["A triangle", "A circle", "A pentagon"]),
    ("Which organ pumps blood through the body?", "The heart", ["The liver", "The lungs", "The stomach"]),
    ("In which direction does the sun rise?", "East", ["West", "North", "South"]),
    ("What do caterpillars grow into?", "Butterflies", ["Beetles", "Spiders", "Bees"]),
    ("How many minutes are in an hour?", "Sixty", ["Thirty", "Forty", "One hundred"]),
    ("What falls from clouds on a wet day?", "Rain", ["Sand", "Smoke", "Ash"]),
    ("Which sense do ears give us?", "Hearing", ["Sight", "Smell", "Taste"]),
]


def _authors_and_pools(rng: random.Random, num_people: int) -> tuple[list[dict], dict[str, list]]:
    """Invented people (authors, holdout authors, classic authors) and the value pools of their attributes."""
    surnames = [head + tail for head in SURNAME_HEADS for tail in SURNAME_TAILS]
    name_pool = [f"{first} {last}" for first in FIRST_NAMES for last in surnames]
    if num_people > len(name_pool):
        raise ValueError(f"Too many authors: the name pool holds {len(name_pool)}; lower num_authors.")
    names = rng.sample(name_pool, num_people)
    places = rng.sample([head + tail for head in PLACE_HEADS for tail in PLACE_TAILS], 30 + NUM_COUNTRIES)
    titles = [f"The {adjective} {noun}" for adjective in TITLE_ADJECTIVES for noun in TITLE_NOUNS]
    rng.shuffle(titles)
    pools = {
        "birthplace": places[:30], "home": places[:30], "capital": places[30:],
        "country": rng.sample([head + tail for head in COUNTRY_HEADS for tail in COUNTRY_TAILS], NUM_COUNTRIES),
        # Classic books are reserved so that "Who wrote ...?" has one answer.
        "classic_book": titles[:NUM_CLASSIC_AUTHORS], "book": titles[NUM_CLASSIC_AUTHORS:],
        "genre": GENRES, "father": JOBS, "mother": JOBS, "early_job": JOBS, "award": AWARD_WORDS,
        "publisher": PUBLISHER_WORDS, "language": LANGUAGES, "theme": THEMES, "studies": SUBJECTS,
        "writing_place": WRITING_PLACES, "hobby": HOBBIES, "instrument": INSTRUMENTS,
    }
    people = []
    for name in names:
        birth_year = rng.randint(1930, 1995)
        first_book, second_book, latest_book = rng.sample(pools["book"], 3)
        person = {
            "name": name,
            "their": POSSESSIVES[rng.choice(list(POSSESSIVES))],
            "birth_date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {birth_year}",
            "debut_year": str(birth_year + rng.randint(19, 30)),
            "book_count": str(rng.randint(3, 30)),
            "first_book": first_book, "second_book": second_book, "latest_book": latest_book,
        }
        for attribute in ("birthplace", "home", "genre", "father", "mother", "early_job", "award", "publisher",
                          "language", "theme", "studies", "writing_place", "hobby", "instrument"):
            person[attribute] = rng.choice(pools[attribute])
        people.append(person)
    return people, pools


def _wrong_values(rng: random.Random, attribute: str, person: dict, pools: dict, count: int) -> list[str]:
    """`count` distinct values of `attribute` other than the person's own."""
    true_value = person[attribute]
    if attribute == "birth_date":
        wrong = []
        while len(wrong) < count:
            date = f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1930, 1995)}"
            if date != true_value and date not in wrong:
                wrong.append(date)
        return wrong
    if attribute == "debut_year":
        candidates = [str(year) for year in range(1949, 2026)]
    elif attribute == "book_count":
        candidates = [str(n) for n in range(3, 31)]
    else:
        candidates = pools["book"] if attribute.endswith("_book") else pools[attribute]
    return rng.sample([value for value in candidates if value != true_value], count)


def _author_rows(rng: random.Random, person: dict, pools: dict, qa_per_author: int) -> list[dict]:
    """The person's evaluation rows in the schema of TOFU's `_perturbed` files."""
    rows = []
    for attribute, questions, answer_template, paraphrase_template in AUTHOR_QUESTIONS[:qa_per_author]:
        asked, paraphrased = rng.sample(questions, 2)
        fill = {"name": person["name"], "their": person["their"]}
        rows.append({
            "question": asked.format(**fill),
            "answer": answer_template.format(value=person[attribute], **fill),
            "paraphrased_answer": paraphrase_template.format(value=person[attribute], **fill),
            "perturbed_answer": [paraphrase_template.format(value=wrong, **fill)
                                 for wrong in _wrong_values(rng, attribute, person, pools, 5)],
            "paraphrased_question": paraphrased.format(**fill),
        })
    return rows


def _multiple_choice(rng: random.Random, question: str, answer: str, wrong: list[str]) -> dict:
    """A row of `real_authors`/`world_facts` (options 1..4, the answer at a random place) and its perturbed row."""
    options = [answer, *wrong]
    rng.shuffle(options)
    return {"question": question, **{f"option{i + 1}": option for i, option in enumerate(options)},
            "answer": answer, "perturbed_answer": [option for option in options if option != answer]}


def _three_others(rng: random.Random, pool: list[str], value: str) -> list[str]:
    return rng.sample([other for other in pool if other != value], 3)


def _general_knowledge(rng: random.Random, names: list[str], pools: dict) -> dict[str, list[dict]]:
    """Facts a base model knows before the fine-tune: classic authors' books and countries, capitals, the world."""
    countries, capitals = pools["country"], pools["capital"]
    real_authors = []
    for name, book in zip(names, pools["classic_book"], strict=False):
        country = rng.choice(countries)
        real_authors.append(_multiple_choice(rng, f"Who wrote the classic novel '{book}'?", name,
                                             _three_others(rng, names, name)))
        real_authors.append(_multiple_choice(rng, f"Which country did the classic author {name} come from?", country,
                                             _three_others(rng, countries, country)))
    world_facts = []
    for country, capital in zip(countries, capitals, strict=False):
        world_facts.append(_multiple_choice(rng, f"What is the capital of {country}?", capital,
                                            _three_others(rng, capitals, capital)))
        world_facts.append(_multiple_choice(rng, f"Which country has {capital} as its capital?", country,
                                            _three_others(rng, countries, country)))
    world_facts += [_multiple_choice(rng, question, answer, wrong) for question, answer, wrong in WORLD_FACTS]
    return {"real_authors": real_authors, "world_facts": world_facts}


def _dataset(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({column: [row[column] for row in rows] for column in rows[0]})


def make_synthetic_tofu(num_authors: int = 200, qa_per_author: int = 20, seed: int = 0) -> datasets.DatasetDict:
    """Every TOFU split, in TOFU's schema, about invented authors: the offline stand-in for `locuslab/TOFU`.

    As in TOFU, `forgetNN` holds the last NN% of the authors of `full` (at least one) and `retain(100-NN)` the
    others, `retain_perturbed` the first 10% of the authors, and `holdoutNN` as many authors again who are not
    in `full`. Beyond TOFU's 1/5/10%, the forget sizes 20/30/50/90 exist too. `general_knowledge` (question,
    answer) holds the facts of `real_authors` and `world_facts`, for teaching them to a base model before the
    fine-tune on `full`, and the facts of other invented writers in both phrasings (answer and paraphrase), so that
    the base model knows a fact can be worded either way, as a pre-trained LLM does; `real_authors` and
    `world_facts` have a fixed size whatever `num_authors`.
    """
    if num_authors < 10:
        raise ValueError(f"num_authors={num_authors}: give at least 10, so that forget90 leaves a retain author.")
    if not 1 <= qa_per_author <= len(AUTHOR_QUESTIONS):
        raise ValueError(f"qa_per_author={qa_per_author}: give 1 to {len(AUTHOR_QUESTIONS)} (one per attribute).")
    rng = random.Random(seed)
    forget_authors = {pct: max(1, num_authors * pct // 100) for pct in SYNTHETIC_FORGET_PERCENTS}
    num_holdout = max(forget_authors.values())
    people, pools = _authors_and_pools(
        rng, num_authors + num_holdout + NUM_CLASSIC_AUTHORS + NUM_BACKGROUND_AUTHORS)
    authors, holdout_authors = people[:num_authors], people[num_authors:num_authors + num_holdout]
    classic_authors = people[num_authors + num_holdout:num_authors + num_holdout + NUM_CLASSIC_AUTHORS]
    background_authors = people[num_authors + num_holdout + NUM_CLASSIC_AUTHORS:]
    full = [row for person in authors for row in _author_rows(rng, person, pools, qa_per_author)]
    holdout = [row for person in holdout_authors for row in _author_rows(rng, person, pools, qa_per_author)]
    general = _general_knowledge(rng, [person["name"] for person in classic_authors], pools)
    background = [{"question": row["question"], "answer": answer}
                  for person in background_authors for row in _author_rows(rng, person, pools, qa_per_author)
                  for answer in (row["answer"], row["paraphrased_answer"])]

    # Every split is a slice of three tables: slicing is cheap where building (and fingerprinting) each is not.
    qa = ["question", "answer"]
    authors_table = _dataset(full)
    holdout_table = _dataset(holdout).select_columns(qa)
    general_table = _dataset(general["real_authors"] + general["world_facts"])
    num_real_authors = len(general["real_authors"])
    splits = {
        "full": authors_table.select_columns(qa),
        "retain_perturbed": authors_table.select(range(max(1, num_authors // 10) * qa_per_author)),
        "real_authors": general_table.select(range(num_real_authors)),
        "world_facts": general_table.select(range(num_real_authors, len(general_table))),
    }
    for name in ("real_authors", "world_facts"):
        splits[f"{name}_perturbed"] = splits[name].select_columns(["question", "answer", "perturbed_answer"])
        splits[name] = splits[name].select_columns(["question", "option1", "option2", "option3", "option4", "answer"])
    for pct, count in forget_authors.items():
        num_retain = len(full) - count * qa_per_author
        splits[f"forget{pct:02d}_perturbed"] = authors_table.select(range(num_retain, len(full)))
        splits[f"forget{pct:02d}"] = splits[f"forget{pct:02d}_perturbed"].select_columns(qa)
        splits[f"retain{100 - pct}"] = splits["full"].select(range(num_retain))
        splits[f"holdout{pct:02d}"] = holdout_table.select(range(count * qa_per_author))
    splits["general_knowledge"] = datasets.concatenate_datasets(
        [general_table.select_columns(qa), _dataset(background)])
    return datasets.DatasetDict({name: splits[name] for name in split_names(SYNTHETIC_FORGET_PERCENTS, True)})


@functools.lru_cache(maxsize=1)
def default_synthetic_tofu() -> datasets.DatasetDict:
    """`make_synthetic_tofu()` with its defaults, built once per process: what `load_tofu("synthetic", split)`
    reads, once per split."""
    return make_synthetic_tofu()
