"""Facts that both packages need but neither may import from the other: the two copies must agree."""

from analysis import columns, records
from scaling import conventions
from scaling.run import identity


def test_both_sides_ignore_the_same_bookkeeping_settings():
    # a run's identity (its folder) and the duplicate check of the analysis leave out the same settings
    assert records.BOOKKEEPING == identity.BOOKKEEPING
    assert records.HASHED_GROUPS == identity.HASHED_GROUPS


def test_both_sides_know_the_same_counting_conventions():
    assert set(columns.PARAMS) == set(conventions.PARAM_CONVENTIONS)
    assert set(columns.FLOPS) == set(conventions.CONVENTIONS)
