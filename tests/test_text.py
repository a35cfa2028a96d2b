"""Normalizer tables: the specification of kidwhisper.text."""

from __future__ import annotations

import itertools

import pytest

from kidwhisper.text import (
    NORMALIZERS,
    basic_normalize,
    get_normalizer,
    normalize,
    normalize_digits,
    orthographic,
    spelling_map,
    split_digits,
)

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TWO SIX FOUR EIGHT", "2648"),
        ("ZERO THREE FIVE ONE", "0351"),
        ("oh three five one", "0351"),
        ("TWENTY ONE", "21"),
        ("two point five", "2.5"),
        ("2,500", "2500"),
        ("MARK IS GOING TO SEE ELEPHANT", "mark is going to see elephant"),
        ("Mark is going to see elephant.", "mark is going to see elephant"),
        ("  Mark,   is going!  ", "mark is going"),
        ("I'M HAPPY", "i am happy"),
        ("I am happy", "i am happy"),
        ("I CAN'T SEE", "i can not see"),
        ("THEY'RE HERE", "they are here"),
        ("um I like uh cats", "i like cats"),
        ("hmm mm mhm mmm yes", "yes"),
        ("[laughs] hello (cough) there <noise>", "hello there"),
        ("colour", "color"),
        ("my favourite colour", "my favorite color"),
        ("ONE", "one"),
        ("1", "one"),
        ("", ""),
        ("[noise]", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The inconsistencies normalize_digits exists to fix (pinned so an upstream change is noticed).
        ("2-6-4-8", "2 6 4 8"),  # vs "2648" for the spelled reference: 4 errors for a right answer
        ("2, 6, 4, 8", "2 6 4 8"),
        ("0351", "351"),  # the leading zero is lost (parsed as the number 351)
        ("007", "7"),
        ("0, 3, 5, 1", "0 3 5 one"),  # a lone 1 is written "one"
        ("0 three five one", "351"),  # 0 + 3 = 3: the zero is added, not written
    ],
)
def test_whisper_normalizer_digit_quirks(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("expected", "variants"),
    [
        ("2 6 4 8", ["TWO SIX FOUR EIGHT", "2-6-4-8", "2, 6, 4, 8", "2648", "2 6 4 8", "two, six, four, eight."]),
        ("0 3 5 1", ["ZERO THREE FIVE ONE", "0351", "0, 3, 5, 1", "0 3 5 1", "0-3-5-1", "oh three five one",
                     "0 three five one", "zero 3 5 1"]),
        ("0 0 7", ["ZERO ZERO SEVEN", "OH OH SEVEN", "007", "0, 0, 7"]),
        ("9 0 5", ["NINE OH FIVE", "905", "9:05"]),
        ("1 2", ["ONE TWO", "12", "1, 2", "1 2"]),
        ("2 1", ["TWENTY ONE", "twenty-one", "21", "2 1"]),
        ("1 0", ["TEN", "10"]),
        ("2 point 5", ["TWO POINT FIVE", "2.5"]),
        ("0 point 5", ["zero point five", "0.5"]),
        ("2 5 0 0", ["2,500", "2500", "two thousand five hundred"]),
        ("1 0 0 0", ["1,000", "one thousand"]),
        ("i am 6 years old", ["I'M SIX YEARS OLD", "I am 6 years old.", "um i'm six years old"]),
        ("mark is going to see elephant", ["MARK IS GOING TO SEE ELEPHANT", "Mark is going to see elephant."]),
        ("1 day", ["ONE DAY", "1 day"]),
        ("", ["", "  ", "[noise]", "uh um"]),
    ],
)
def test_normalize_digits_equivalence(expected: str, variants: list[str]) -> None:
    assert {v: normalize_digits(v) for v in variants} == dict.fromkeys(variants, expected)


def test_normalize_digits_every_three_digit_sequence() -> None:
    """Spelled, comma-separated and run-together forms of all 000..999 agree digit by digit, zeros kept."""
    wrong = {}
    for digits in ("".join(p) for p in itertools.product("0123456789", repeat=3)):
        spelled = " ".join(DIGIT_WORDS[int(d)] for d in digits).upper()
        got = {normalize_digits(v) for v in (spelled, ", ".join(digits), digits)}
        if got != {" ".join(digits)}:
            wrong[digits] = got
    assert not wrong


def test_normalize_digits_keeps_whisper_text_handling() -> None:
    assert normalize_digits("um My favourite colour (laughs)") == "my favorite color"
    assert normalize_digits("You're") == "you are"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2648", "2 6 4 8"), ("2.5", "2 point 5"), ("0 3 5 one", "0 3 5 1"), ("someone said one", "someone said 1")],
)
def test_split_digits(text: str, expected: str) -> None:
    assert split_digits(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Mark  is\tgoing.\n", "Mark is going."),
        ("MARK IS GOING", "MARK IS GOING"),
        ("2-6-4-8", "2-6-4-8"),
        ("um I like uh cats", "um I like uh cats"),
        ("", ""),
    ],
)
def test_orthographic_keeps_case_and_punctuation(text: str, expected: str) -> None:
    assert orthographic(text) == expected


def test_basic_normalizer() -> None:
    assert basic_normalize("Mark, is GOING!") == "mark is going"


def test_registry() -> None:
    assert NORMALIZERS == {"orthographic": orthographic, "whisper": normalize, "digits": normalize_digits}
    assert get_normalizer("digits") is normalize_digits
    with pytest.raises(KeyError, match=r"available normalizers = \['digits', 'orthographic', 'whisper'\]"):
        get_normalizer("lowercase")


def test_spelling_map_is_vendored_and_cached() -> None:
    mapping = spelling_map()
    assert mapping["colour"] == "color"
    assert len(mapping) > 1000
    assert spelling_map() is mapping
