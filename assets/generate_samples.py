"""Write the bundled sample data in assets/<task>/{train,test}.jsonl.

Run: python assets/generate_samples.py

Sentences and dialogues are composed from hand-written phrase banks with a fixed seed, so the files are
reproducible and contain no third-party text. Slots (names, days, places, numbers) vary per example, which
makes the summaries learnable from the inputs rather than memorisable. No test input is also a training input.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Frank",
    "Grace",
    "Hiro",
    "Irene",
    "Jamal",
    "Kofi",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Umar",
    "Vera",
    "Will",
    "Yara",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9 am", "10 am", "11 am", "noon", "2 pm", "3 pm", "4 pm", "6 pm", "7 pm", "8 pm"]
CITIES = ["Lisbon", "Oslo", "Denver", "Nairobi", "Osaka", "Leeds", "Perth", "Quebec", "Porto", "Austin"]

# --- sentiment -------------------------------------------------------------------------------------------
ASPECTS = [
    "the acting",
    "the plot",
    "the soundtrack",
    "the dialogue",
    "the ending",
    "the cinematography",
    "the lead performance",
    "the script",
    "the pacing",
    "the visual effects",
    "the direction",
    "the cast",
    "the story",
    "the humour",
    "the editing",
    "the characters",
]
POS_ADJ = [
    "wonderful",
    "brilliant",
    "moving",
    "superb",
    "delightful",
    "gripping",
    "beautiful",
    "clever",
    "charming",
    "outstanding",
    "heartfelt",
    "hilarious",
    "stunning",
    "excellent",
    "fantastic",
    "touching",
]
NEG_ADJ = [
    "awful",
    "boring",
    "dull",
    "clumsy",
    "terrible",
    "lifeless",
    "confusing",
    "tedious",
    "weak",
    "painful",
    "forgettable",
    "bland",
    "annoying",
    "dreadful",
    "mediocre",
    "sloppy",
]
POS_OPEN = [
    "I loved this film.",
    "What a great movie.",
    "This was a joy to watch.",
    "A real gem.",
    "I was pleasantly surprised.",
    "One of the best films this year.",
    "Highly recommended.",
    "",
]
NEG_OPEN = [
    "I hated this film.",
    "What a waste of time.",
    "This was a chore to sit through.",
    "A real mess.",
    "I was deeply disappointed.",
    "One of the worst films this year.",
    "Avoid it.",
    "",
]
POS_CLOSE = [
    "I would happily watch it again.",
    "Go and see it.",
    "It left me smiling.",
    "Ten out of ten.",
    "My whole family enjoyed it.",
    "It deserves every award.",
    "",
]
NEG_CLOSE = [
    "I want my money back.",
    "Skip this one.",
    "I almost walked out.",
    "Two out of ten at best.",
    "Nobody in the room enjoyed it.",
    "It deserves to be forgotten.",
    "",
]


POS_VERDICT = ["overall I enjoyed it", "in the end it won me over", "it is still worth seeing"]
NEG_VERDICT = ["overall I did not enjoy it", "in the end it lost me", "it is not worth seeing"]


def review(rng, positive):
    adj, opener, closer = (POS_ADJ, POS_OPEN, POS_CLOSE) if positive else (NEG_ADJ, NEG_OPEN, NEG_CLOSE)
    other = NEG_ADJ if positive else POS_ADJ
    a1, a2 = rng.sample(ASPECTS, 2)
    style = rng.random()
    if style < 0.25:
        # Mixed review: the verdict, not the first adjective, carries the label.
        verdict = rng.choice(POS_VERDICT if positive else NEG_VERDICT)
        return f"Although {a1} was {rng.choice(other)}, {a2} was {rng.choice(adj)} and {verdict}."
    if style < 0.4:
        # Negated opposite: "not awful" leans positive.
        return f"{a1.capitalize()} was not {rng.choice(other)} at all, and {a2} was {rng.choice(adj)}."
    parts = [
        rng.choice(opener),
        f"{a1.capitalize()} was {rng.choice(adj)} and {a2} felt {rng.choice(adj)}.",
        rng.choice(closer),
    ]
    return " ".join(p for p in parts if p)


def sentiment(rng, n):
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        rows.append({"id": f"s{i}", "text": review(rng, positive), "label": "positive" if positive else "negative"})
    rng.shuffle(rows)
    return rows


# --- dialogue --------------------------------------------------------------------------------------------
def d_restaurant(r, p1, p2):
    n, day, t, place = (
        r.choice(["two", "three", "four", "six"]),
        r.choice(DAYS),
        r.choice(TIMES),
        r.choice(["Luigi's", "the Blue Door", "Sakura", "the Harbour Grill", "Casa Verde"]),
    )
    lines = [
        f"#Person1#: Hello, is this {place}? I'd like to book a table.",
        "#Person2#: Of course. For how many people and when?",
        f"#Person1#: For {n} people on {day} at {t}, please.",
        "#Person2#: That's fine. May I have your name?",
        f"#Person1#: It's {p1}.",
        f"#Person2#: Thank you, {p1}. Your table for {n} is booked for {day} at {t}.",
    ]
    return lines, f"{p1} books a table for {n} at {place} on {day} at {t}."


def d_doctor(r, p1, p2):
    day, t, issue = (
        r.choice(DAYS),
        r.choice(TIMES),
        r.choice(["a bad cough", "back pain", "a sore throat", "a headache", "a sprained ankle"]),
    )
    lines = [
        f"#Person1#: Good morning, I need to see Dr. {p2} as soon as possible.",
        "#Person2#: What seems to be the problem?",
        f"#Person1#: I've had {issue} for a week now.",
        f"#Person2#: The doctor can see you on {day} at {t}. Does that work?",
        f"#Person1#: Yes, {day} at {t} is perfect. Thank you.",
    ]
    return lines, f"#Person1# makes an appointment with Dr. {p2} on {day} at {t} because of {issue}."


def d_return(r, p1, p2):
    item, reason = (
        r.choice(["jacket", "lamp", "pair of shoes", "kettle", "backpack", "phone case"]),
        r.choice(["it is broken", "it is the wrong size", "the colour is wrong", "it arrived scratched"]),
    )
    refund = r.choice([True, False])
    lines = [
        f"#Person1#: Hi, I bought this {item} here last week and I'd like to return it.",
        "#Person2#: What's wrong with it?",
        f"#Person1#: Well, {reason}.",
        (
            "#Person2#: I'm sorry about that. I can give you a full refund."
            if refund
            else f"#Person2#: I'm sorry, we can only exchange it for another {item}."
        ),
        "#Person1#: " + ("Great, thanks." if refund else "All right, I'll take another one."),
    ]
    outcome = "gets a refund" if refund else "exchanges it for another one"
    return lines, f"#Person1# returns a {item} because {reason} and {outcome}."


def d_travel(r, p1, p2):
    city, day, mode = r.choice(CITIES), r.choice(DAYS), r.choice(["train", "bus", "flight"])
    price = r.choice([25, 40, 55, 80, 120, 160])
    lines = [
        f"#Person1#: I'd like a ticket to {city}, please.",
        "#Person2#: When would you like to travel?",
        f"#Person1#: On {day}. Is there a {mode} in the morning?",
        f"#Person2#: Yes, there is one at 8. The ticket costs {price} dollars.",
        "#Person1#: I'll take it.",
    ]
    return lines, f"#Person1# buys a {mode} ticket to {city} for {day} for {price} dollars."


def d_party(r, p1, p2):
    day, food = r.choice(DAYS), r.choice(["pizza", "a chocolate cake", "sandwiches", "tacos", "sushi"])
    friend = r.choice(NAMES)
    lines = [
        f"#Person1#: {p2}, {friend}'s birthday is on {day}. Shall we throw a surprise party?",
        "#Person2#: Great idea! What should we serve?",
        f"#Person1#: How about {food}? {friend} loves it.",
        f"#Person2#: Perfect. I'll invite everyone and you get the {food}.",
    ]
    return lines, f"{p2} and #Person1# plan a surprise party for {friend}'s birthday on {day} with {food}."


def d_apartment(r, p1, p2):
    rooms, rent, area = (
        r.choice(["one", "two", "three"]),
        r.choice([700, 900, 1100, 1400]),
        r.choice(["near the park", "downtown", "by the river", "close to the station"]),
    )
    lines = [
        f"#Person1#: I'm calling about the apartment {area}. Is it still available?",
        f"#Person2#: Yes. It has {rooms} bedrooms and the rent is {rent} a month.",
        "#Person1#: Can I come and see it tomorrow?",
        "#Person2#: Sure, come by after work.",
    ]
    return lines, (
        f"#Person1# asks about a {rooms}-bedroom apartment {area} for {rent} a month and will see it tomorrow."
    )


DIALOGUES = [d_restaurant, d_doctor, d_return, d_travel, d_party, d_apartment]


def dialogue(rng, n):
    rows = []
    for i in range(n):
        p1, p2 = rng.sample(NAMES, 2)
        lines, summary = DIALOGUES[i % len(DIALOGUES)](rng, p1, p2)
        rows.append({"id": f"d{i}", "dialogue": "\n".join(lines), "summary": summary})
    rng.shuffle(rows)
    return rows


# --- document --------------------------------------------------------------------------------------------
TEAMS = ["Rovers", "United", "Athletic", "City", "Wanderers", "Rangers", "Albion", "Harriers"]
COMPANIES = ["Nordwave", "Brightlane", "Corvex", "Helio Foods", "Tandem Bank", "Quillsoft", "Aster Motors"]


def n_match(r):
    home, away = r.sample(TEAMS, 2)
    hg, ag = r.randint(2, 5), r.randint(0, 1)
    scorer, city = r.choice(NAMES), r.choice(CITIES)
    doc = (
        f"{home} beat {away} {hg}-{ag} in {city} on Saturday. {scorer} opened the scoring after ten minutes "
        f"and the home side never looked back. {away} had chances late on but could not find a way through. "
        f"The result lifts {home} to the top of the table. Their manager praised the crowd and said the "
        f"team had worked hard all week."
    )
    return doc, f"{home} beat {away} {hg}-{ag} in {city}, with {scorer} scoring first."


def n_earnings(r):
    co, pct = r.choice(COMPANIES), r.choice([5, 8, 12, 15, 20, 30])
    up = r.choice([True, False])
    driver = r.choice(["strong online sales", "higher energy costs", "a new product line", "weak demand in Europe"])
    word = "rose" if up else "fell"
    doc = (
        f"Shares in {co} moved sharply on Tuesday after the firm reported its results. Profits {word} by "
        f"{pct}% compared with last year, which the company put down to {driver}. Analysts had expected a "
        f"smaller change. The chief executive told investors that the coming year would bring further "
        f"changes to the business."
    )
    return doc, f"Profits at {co} {word} by {pct}% because of {driver}."


def n_weather(r):
    city, event = r.choice(CITIES), r.choice(["heavy flooding", "a severe storm", "record heat", "heavy snow"])
    homes = r.choice([50, 120, 300, 800])
    doc = (
        f"Residents of {city} are cleaning up after {event} hit the area overnight. Emergency services said "
        f"{homes} homes were affected and several roads remain closed. No injuries have been reported. "
        f"The mayor thanked volunteers and said help would be available for families who had to leave "
        f"their homes."
    )
    return doc, f"{event.capitalize()} in {city} has affected {homes} homes."


def n_council(r):
    city, plan = (
        r.choice(CITIES),
        r.choice(
            [
                "a new cycle lane",
                "a bigger library",
                "free bus travel for pupils",
                "a ban on cars in the old town",
                "a new swimming pool",
            ]
        ),
    )
    votes = r.choice(["narrowly", "unanimously", "by a large majority"])
    doc = (
        f"Councillors in {city} have approved plans for {plan}. The vote passed {votes} after a long debate "
        f"on Wednesday evening. Supporters said the change was overdue, while some residents worried about "
        f"the cost. Work is expected to begin next spring."
    )
    return doc, f"Councillors in {city} have {votes} approved {plan}."


def n_science(r):
    team, find = (
        r.choice(CITIES),
        r.choice(
            [
                "a new species of frog",
                "a way to recycle plastic with enzymes",
                "water ice on an asteroid",
                "a gene linked to sleep",
            ]
        ),
    )
    lead = r.choice(NAMES)
    doc = (
        f"Scientists at the University of {team} say they have found {find}. The team, led by Dr {lead}, "
        f"spent three years on the project. Other researchers called the work exciting but said more tests "
        f"were needed. The findings were published in a journal this week."
    )
    return doc, f"Researchers in {team} led by Dr {lead} have found {find}."


NEWS = [n_match, n_earnings, n_weather, n_council, n_science]


def document(rng, n):
    rows = []
    for i in range(n):
        doc, summary = NEWS[i % len(NEWS)](rng)
        rows.append({"id": f"n{i}", "document": doc, "summary": summary})
    rng.shuffle(rows)
    return rows


def write(task, split, rows):
    path = HERE / task / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            row["id"] = f"{split}-{row['id']}"
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    for task, make, n_train, n_test in [
        ("sentiment", sentiment, 400, 200),
        ("dialogue", dialogue, 180, 60),
        ("document", document, 180, 60),
    ]:
        train = make(random.Random(f"{task}-train"), n_train)
        test = make(random.Random(f"{task}-test"), n_test)
        column = {"sentiment": "text"}.get(task, task)
        seen = {row[column] for row in train}
        if any(row[column] in seen for row in test) or len({row[column] for row in test}) < n_test:
            # Held out means held out: no test input is a training input (or another test input).
            test = []
            for row in make(random.Random(f"{task}-test"), 4 * n_test):
                if row[column] not in seen and len(test) < n_test:
                    test.append(row)
                    seen.add(row[column])
        write(task, "train", train)
        write(task, "test", test)
