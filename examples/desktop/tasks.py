"""The desktop-list taskset."""

from env import shopping_list

tasks = [shopping_list(), shopping_list(items="apples, pears")]
