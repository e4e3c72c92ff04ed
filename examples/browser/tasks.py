"""The browser-form taskset."""

from env import sign_up

tasks = [
    sign_up(),
    sign_up(name="Grace Hopper", email="grace@example.org", plan="team"),
]
