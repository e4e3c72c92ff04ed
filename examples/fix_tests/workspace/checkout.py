"""Prices for a shopping cart of ``(unit_price, quantity)`` lines."""


def subtotal(lines: list[tuple[float, int]]) -> float:
    """The sum of unit price times quantity over all lines."""
    return sum(price for price, _quantity in lines)


def total(lines: list[tuple[float, int]], discount: float = 0.0) -> float:
    """The subtotal less a fractional ``discount`` (0.25 is 25 % off), rounded to cents."""
    return round(subtotal(lines) * (1 - discount), 2)
