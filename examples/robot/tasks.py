"""Three CartPole episodes: different seeds and starting spreads."""

from env import balance

tasks = [
    balance(seed=0, steps=200),
    balance(seed=1, steps=300, start_spread=0.1),
    balance(seed=2, steps=500),
]
