from checkout import subtotal, total


def test_subtotal_counts_quantities():
    assert subtotal([(2.5, 2), (1.0, 3)]) == 8.0


def test_total_applies_the_discount():
    assert total([(10.0, 2)], discount=0.25) == 15.0


def test_an_empty_cart_costs_nothing():
    assert total([]) == 0.0
