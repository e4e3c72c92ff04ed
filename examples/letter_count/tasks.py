"""The letter-count dataset: one template, many rows."""

from env import count_letter

tasks = [
    count_letter(word=word, letter=letter)
    for word, letter in [
        ("strawberry", "r"),
        ("raspberry", "r"),
        ("blueberry", "b"),
        ("mississippi", "s"),
        ("banana", "a"),
    ]
]
