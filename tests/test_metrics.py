"""WER/CER counts, corpus aggregation, bootstrap CIs, flags and the summary of kidwhisper.metrics."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pytest

from kidwhisper.metrics import (
    FLAGS,
    ErrorCounts,
    UtteranceScore,
    bootstrap_ci,
    breakdown,
    char_errors,
    corpus_wer,
    flag_utterance,
    is_empty,
    is_hallucination,
    score_utterance,
    sum_counts,
    summarize,
    word_errors,
)
from kidwhisper.text import normalize

# --------------------------------------------------------------------------------------- counts


def test_error_counts_rates_and_sum() -> None:
    a = ErrorCounts(substitutions=1, deletions=1, insertions=2, hits=2, ref_words=4)
    assert a.errors == 4
    assert a.wer == 1.0
    b = ErrorCounts(substitutions=0, deletions=0, insertions=0, hits=6, ref_words=6)
    assert (a + b) == ErrorCounts(1, 1, 2, 8, 10)
    assert (a + b).wer == pytest.approx(0.4)
    assert ErrorCounts(insertions=3).wer is None  # no reference words: undefined, not 0 or inf
    assert sum_counts([]) == ErrorCounts()


def test_error_counts_invariant() -> None:
    with pytest.raises(ValueError, match="must equal ref_words"):
        ErrorCounts(substitutions=1, hits=1, ref_words=5)
    with pytest.raises(ValueError, match="negative"):
        ErrorCounts(insertions=-1)


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),  # expected = (S, D, I, hits, ref_words)
    [
        ("a b c", "a b c", (0, 0, 0, 3, 3)),
        ("a b c", "a x c", (1, 0, 0, 2, 3)),
        ("a b c", "a c", (0, 1, 0, 2, 3)),
        ("a b c", "a b c d", (0, 0, 1, 3, 3)),
        ("a b c", "", (0, 3, 0, 0, 3)),
        ("", "a b", (0, 0, 2, 0, 0)),
        ("", "", (0, 0, 0, 0, 0)),
        ("  a   b ", "a  b", (0, 0, 0, 2, 2)),
        ("mark is going to see elephant", "mark going to the see elephants", (1, 1, 1, 4, 6)),
        ("2648", "2 6 4 8", (1, 0, 3, 0, 1)),
    ],
)
def test_word_errors(ref: str, hyp: str, expected: tuple[int, int, int, int, int]) -> None:
    assert word_errors(ref, hyp) == ErrorCounts(*expected)


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("abc", "abc", (0, 0, 0, 3, 3)),
        ("abc", "abd", (1, 0, 0, 2, 3)),
        ("ab c", "abc", (0, 1, 0, 3, 4)),  # the space is a character
        ("ab  c", "ab c", (0, 0, 0, 4, 4)),  # whitespace runs collapse first
        ("cat", "", (0, 3, 0, 0, 3)),
        ("", "cat", (0, 0, 3, 0, 0)),
    ],
)
def test_char_errors(ref: str, hyp: str, expected: tuple[int, int, int, int, int]) -> None:
    assert char_errors(ref, hyp) == ErrorCounts(*expected)


def test_is_empty() -> None:
    assert is_empty("") and is_empty("  \t") and not is_empty(" a ")


def test_corpus_wer_is_not_a_mean_of_utterance_wers() -> None:
    pairs = [("a b c d e f g h i j", "a b c d e f g h i j"), ("yes", "no no no")]  # 0/10 and 3/1
    assert corpus_wer(pairs) == pytest.approx(3 / 11)
    assert np.mean([word_errors(r, h).wer for r, h in pairs]) == pytest.approx(1.5)


def test_corpus_wer_skips_empty_references() -> None:
    assert corpus_wer([("a b", "a b"), ("", "lots of inserted words")]) == 0.0
    assert corpus_wer([("", "x")]) is None


# ------------------------------------------------------------------------------ per-utterance WERs


@pytest.mark.parametrize(
    ("ref", "hyp", "orthographic", "whisper", "digits"),
    [
        # case and punctuation: every word differs orthographically, nothing after normalization
        ("MARK IS GOING TO SEE ELEPHANT", "Mark is going to see elephant.", 6 / 6, 0.0, 0.0),
        # Whisper writes the spelled reference as 1 word and the right hypothesis as 4 (1 S + 3 I = 400 %)
        ("TWO SIX FOUR EIGHT", "2-6-4-8", 4 / 4, 4 / 1, 0.0),
        ("TWO SIX FOUR EIGHT", "2648", 1 / 4, 0.0, 0.0),
        ("ZERO THREE FIVE ONE", "0351", 1 / 4, 1 / 1, 0.0),
        ("ZERO THREE FIVE ONE", "0, 3, 5, 1", 4 / 4, 4 / 1, 0.0),
        ("ZERO THREE FIVE ONE", "3 5 1", 4 / 4, 1 / 1, 1 / 4),  # a missed zero is one digit error
        ("I'M HAPPY", "I am happy.", 3 / 2, 0.0, 0.0),
        ("I LIKE CATS", "um I like uh cats", 4 / 3, 0.0, 0.0),
        ("MY FAVOURITE COLOUR", "my favorite color", 3 / 3, 0.0, 0.0),
    ],
)
def test_score_utterance_wer_per_normalizer(
    ref: str, hyp: str, orthographic: float, whisper: float, digits: float
) -> None:
    score = score_utterance(ref, hyp, duration=2.0)
    assert {name: c.wer for name, c in score.words.items()} == pytest.approx(
        {"orthographic": orthographic, "whisper": whisper, "digits": digits}
    )
    assert not score.skipped


def test_score_utterance_skips_empty_reference_per_normalizer() -> None:
    score = score_utterance("[noise]", "hello")
    assert score.skipped
    assert score.words["whisper"] is None and score.words["digits"] is None and score.chars is None
    assert score.words["orthographic"] == ErrorCounts(substitutions=1, hits=0, ref_words=1)


def test_utterance_score_round_trips_through_json() -> None:
    score = score_utterance("TWO SIX FOUR EIGHT", "3, 8, 4, 7, 8, 8, 8, 8, 8, 8, 8, 8", duration=3.0)
    line = json.dumps(asdict(score), ensure_ascii=False, allow_nan=False)
    assert UtteranceScore.from_json(json.loads(line)) == score
    assert score.hallucination and score.flags == ["repetition"]
    assert score.ref_norm["whisper"] == "2648" and score.hyp_norm["digits"] == "3 8 4 7 8 8 8 8 8 8 8 8"
    assert score.chars == char_errors("2648", "3 8 4 7 8 8 8 8 8 8 8 8")


# --------------------------------------------------------------------------------------- bootstrap


def _counts(errors: int, ref_words: int) -> ErrorCounts:
    """Counts with ``errors`` substitutions out of ``ref_words`` (errors <= ref_words)."""
    return ErrorCounts(substitutions=errors, hits=ref_words - errors, ref_words=ref_words)


def test_bootstrap_collapses_when_every_speaker_has_the_same_wer() -> None:
    counts = [_counts(1, 4), _counts(2, 8), _counts(3, 12), _counts(5, 20)]  # all 25 %
    low, high = bootstrap_ci(counts, ["a", "a", "b", "c"])
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_bootstrap_one_speaker_is_the_point_estimate() -> None:
    counts = [_counts(0, 5), _counts(5, 5), _counts(1, 10)]
    low, high = bootstrap_ci(counts, ["kid"] * 3)
    assert low == pytest.approx(6 / 20) and high == pytest.approx(6 / 20)


def test_bootstrap_contains_estimate_and_widens_with_speaker_variance() -> None:
    rng = np.random.default_rng(1)
    speakers = [s for s in range(31) for _ in range(20)]
    ref_words = rng.integers(3, 9, size=len(speakers))

    def ci_for(spread: float) -> tuple[float, float, float]:
        wer = np.clip(0.3 + spread * rng.standard normal(31), 0.0, 1.0) if False else None  # noqa: F841
        return 0.0, 0.0, 0.0

    widths = []
    for spread in (0.0, 0.05, 0.2):
        speaker_wer = np.clip(0.3 + spread * np.linspace(-1, 1, 31), 0.0, 1.0)
        counts = [_counts(int(round(speaker_wer[s] * n)), int(n)) for s, n in zip(speakers, ref_words, strict=True)]
        point = sum_counts(counts).wer
        low, high = bootstrap_ci(counts, speakers, n_boot=1000, seed=0)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[0] < widths[1] < widths[2]
    assert widths[2] > 0.1


def test_speaker_bootstrap_is_wider_than_utterance_bootstrap_for_clustered_errors() -> None:
    speakers = [s for s in range(10) for _ in range(30)]
    counts = [_counts(4 if s % 2 else 0, 4) for s in speakers]  # half the children get every word wrong
    speaker_low, speaker_high = bootstrap_ci(counts, speakers)
    utt_low, utt_high = bootstrap_ci(counts)
    assert speaker_high - speaker_low > 2 * (utt_high - utt_low)
    assert bootstrap_ci(counts, range(len(counts))) == (utt_low, utt_high)  # one group per utterance


def test_bootstrap_is_seeded_and_fast() -> None:
    rng = np.random.default_rng(0)
    speakers = [s for s in range(31) for _ in range(20)]
    counts = [_counts(int(e), 6) for e in rng.integers(0, 7, size=len(speakers))]
    start = time.perf_counter()
    ci = bootstrap_ci(counts, speakers, n_boot=1000, seed=3)
    elapsed = time.perf_counter() - start
    assert ci == bootstrap_ci(counts, speakers, n_boot=1000, seed=3)
    assert ci != bootstrap_ci(counts, speakers, n_boot=1000, seed=4)
    assert elapsed < 0.5


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one utterance"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="groups has 1 entries for 2 utterances"):
        bootstrap_ci([_counts(0, 1), _counts(0, 1)], ["a"])
    with pytest.raises(ValueError, match="no reference words"):
        bootstrap_ci([ErrorCounts(insertions=2)])
