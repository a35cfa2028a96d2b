"""Text normalizers: the same callable is applied to the reference and to the hypothesis.

Three normalizers, registered in :data:`NORMALIZERS` and reported side by side:

``"orthographic"`` -- :func:`orthographic`
    The raw text with whitespace collapsed. Case and punctuation count, so ``"Mark is going."`` is 3 errors
    against ``"MARK IS GOING"``. This is what a naive setup compares; we report it only to show the gap.

``"whisper"`` -- :func:`normalize` (the headline number)
    Whisper's ``EnglishTextNormalizer`` (the copy shipped in ``transformers``) with the British -> American
    spelling map vendored in ``assets/english.json``; identical to what published Whisper numbers use.
    It lower-cases; removes text in ``[brackets]``, ``<angles>`` and ``(parentheses)``; **removes the
    fillers ``hmm mm mhm mmm uh um``** (not ``ah``/``er``, and ``oh``/``o`` become the digit ``0``);
    expands contractions (``I'M`` -> ``i am``, ``CAN'T`` -> ``can not``, and also ``MARK'S`` -> ``mark is``);
    strips punctuation and diacritics; turns spelled numbers into digits (``TWO SIX FOUR EIGHT`` ->
    ``2648``, ``TWENTY ONE`` -> ``21``, ``TWO POINT FIVE`` -> ``2.5``) and a lone ``1`` back into ``one``;
    maps British spellings to American (``colour`` -> ``color``).

``"digits"`` -- :func:`normalize_digits`
    The Whisper normalizer, made fair to digit sequences. 57 of our 620 test prompts are digit strings
    (``TWO SIX FOUR EIGHT``); the Whisper normalizer writes the reference as one word ``2648`` but a correct
    hypothesis ``2-6-4-8`` as four words ``2 6 4 8`` (4 errors for a right answer). Whisper also *loses
    leading zeros of arabic numbers*: its number normalizer parses ``0351`` as the fraction 351 (``0351``
    -> ``351``, ``007`` -> ``7``, and ``0 three`` -> ``3`` because 0 + 3 = 3), while the spelled reference
    ``ZERO THREE FIVE ONE`` keeps its zero (``0351``). The digit-aware variant therefore

    1. before the Whisper normalizer, rewrites the leading zeros of every arabic integer as the word
       ``zero`` (``0351`` -> ``zero 351``, ``007`` -> ``zero zero 7``), which the number normalizer treats
       as a nominal digit exactly as it does for the spelled reference; decimals (``0.5``) are untouched;
    2. runs the Whisper normalizer;
    3. writes a decimal point between digits as the word ``point`` (``2.5`` -> ``2 point 5``; a spoken
       "two point five" and a written "2.5" agree, and "two five" against "2.5" costs one insertion,
       because the hypothesis really claims an extra spoken word);
    4. splits every digit into its own word and maps the word ``one`` (Whisper's spelling of a lone ``1``)
       back to ``1``, on both sides.

    Thousands separators were already removed by the Whisper normalizer (``2,500`` -> ``2500``) so they
    do not become words; ``$`` and ``%`` stay as their own tokens. Each number is thus compared digit by
    digit: ``TWENTY ONE`` and ``21`` and ``2 1`` all become ``2 1``.

    ==========================  ================  ================
    input                       ``normalize``      ``normalize_digits``
    ==========================  ================  ================
    ``TWO SIX FOUR EIGHT``      ``2648``          ``2 6 4 8``
    ``2-6-4-8``                 ``2 6 4 8``       ``2 6 4 8``
    ``2, 6, 4, 8``              ``2 6 4 8``       ``2 6 4 8``
    ``ZERO THREE FIVE ONE``     ``0351``          ``0 3 5 1``
    ``0351``                    ``351``           ``0 3 5 1``
    ``0, 3, 5, 1``              ``0 3 5 one``     ``0 3 5 1``
    ``oh three five one``       ``0351``          ``0 3 5 1``
    ``TWO POINT FIVE`` / 2.5    ``2.5``           ``2 point 5``
    ``2,500``                   ``2500``          ``2 5 0 0``
    ``I'M SIX``                 ``i am 6``        ``i am 6``
    ==========================  ================  ================

The tables in ``tests/test_text.py`` are the specification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from importlib.resources import files

from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

__all__ = [
    "NORMALIZERS",
    "basic_normalize",
    "get_normalizer",
    "normalize",
    "normalize_digits",
    "orthographic",
    "spelling_map",
    "split_digits",
]

# Leading zeros of an arabic integer (not after a digit, '.' or ',', not the "0" of a decimal like "0.5").
_LEADING_ZEROS = re.compile(r"(?<![\d.,])(0+)(?=[1-9]|\b)(?![.,]\d)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_DIGIT = re.compile(r"(\d)")
_ONE = re.compile(r"\bone\b")


@cache
def spelling_map() -> dict[str, str]:
    """The British -> American spelling map Whisper uses (vendored ``assets/english.json``)."""
    resource = files("kidwhisper") / "assets" / "english.json"
    return json.loads(resource.read_text(encoding="utf-8"))


@cache
def _english() -> EnglishTextNormalizer:
    return EnglishTextNormalizer(spelling_map())


@cache
def _basic() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def orthographic(text: str) -> str:
    """The raw text with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split())


def normalize(text: str) -> str:
    """Whisper's standard English normalization (comparable with published Whisper WERs)."""
    return _english()(text).strip()


def basic_normalize(text: str) -> str:
    """Whisper's language-agnostic ``BasicTextNormalizer`` (lower-case, no brackets, no punctuation)."""
    return _basic()(text).strip()


def _zeros_as_words(match: re.Match[str]) -> str:
    return " " + " ".join(["zero"] * len(match.group(1))) + " "


def split_digits(normalized: str) -> str:
    """Steps 3-4 of :func:`normalize_digits` on already Whisper-normalized text.

    ``"2648"`` -> ``"2 6 4 8"``, ``"2.5"`` -> ``"2 point 5"``, ``"0 3 5 one"`` -> ``"0 3 5 1"``.
    """
    s = _DECIMAL_POINT.sub(" point ", normalized)
    s = _DIGIT.sub(r" \1 ", s)
    s = _ONE.sub("1", s)
    return " ".join(s.split())


def normalize_digits(text: str) -> str:
    """Whisper normalization, then every digit its own word, leading zeros kept (see module docstring)."""
    return split_digits(_english()(_LEADING_ZEROS.sub(_zeros_as_words, text)))


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "orthographic": orthographic,
    "whisper": normalize,
    "digits": normalize_digits,
}
"""Normalizer name -> callable; every name is reported as its own WER."""


def get_normalizer(name: str) -> Callable[[str], str]:
    """Look up a normalizer by name, naming the available ones if it does not exist."""
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise KeyError(f"Normalizer {name!r} not found; available normalizers = {sorted(NORMALIZERS)}") from None
