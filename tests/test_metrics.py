"""WER/CER counts, corpus aggregation, bootstrap CIs, flags and the summary of kidwhisper.metrics."""

from __future__ import annotations

import json
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
    paired_difference,
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
        ("TWO SIX FOUR EIGHT", "2648", 4 / 4, 0.0, 0.0),  # 1 S + 3 D orthographically
        ("ZERO THREE FIVE ONE", "0351", 4 / 4, 1 / 1, 0.0),  # whisper: "0351" vs "351"
        ("ZERO THREE FIVE ONE", "0, 3, 5, 1", 4 / 4, 4 / 1, 0.0),
        ("ZERO THREE FIVE ONE", "3 5 1", 4 / 4, 3 / 1, 1 / 4),  # a missed zero is one digit error
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
    speakers = [s for s in range(31) for _ in range(20)]
    widths = []
    for spread in (0.0, 0.05, 0.2):  # speaker WERs spread evenly over 0.3 +- spread
        speaker_errors = np.round(100 * (0.3 + spread * np.linspace(-1, 1, 31))).astype(int)
        counts = [_counts(int(speaker_errors[s]), 100) for s in speakers]
        point = sum_counts(counts).wer
        low, high = bootstrap_ci(counts, speakers, n_boot=1000, seed=0)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[0] < widths[1] < widths[2]
    assert widths[0] == 0.0 and widths[2] > 0.05


def test_speaker_bootstrap_is_wider_than_utterance_bootstrap_for_clustered_errors() -> None:
    speakers = [s for s in range(10) for _ in range(30)]
    counts = [_counts(4 if s % 2 else 0, 4) for s in speakers]  # half the children get every word wrong
    speaker_low, speaker_high = bootstrap_ci(counts, speakers)
    utt_low, utt_high = bootstrap_ci(counts)
    assert speaker_high - speaker_low > 2 * (utt_high - utt_low)
    assert bootstrap_ci(counts, range(len(counts))) == (utt_low, utt_high)  # one group per utterance


def test_bootstrap_is_seeded() -> None:
    rng = np.random.default_rng(0)
    speakers = [s for s in range(31) for _ in range(20)]
    counts = [_counts(int(e), 6) for e in rng.integers(0, 7, size=len(speakers))]
    ci = bootstrap_ci(counts, speakers, n_boot=1000, seed=3)
    assert ci == bootstrap_ci(counts, speakers, n_boot=1000, seed=3)
    assert ci != bootstrap_ci(counts, speakers, n_boot=1000, seed=4)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one utterance"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="groups has 1 entries for 2 utterances"):
        bootstrap_ci([_counts(0, 1), _counts(0, 1)], ["a"])
    with pytest.raises(ValueError, match="no reference words"):
        bootstrap_ci([ErrorCounts(insertions=2)])


def test_paired_difference_cancels_the_spread_both_systems_share() -> None:
    speakers = [s for s in range(20) for _ in range(10)]
    spread = np.linspace(0, 6, 20).round().astype(int)  # children from 0 to 6 errors in 10 words
    b = [_counts(int(spread[s]), 10) for s in speakers]
    a = [_counts(int(spread[s]) + 1, 10) for s in speakers]  # one more error in every clip
    diff, low, high = paired_difference(a, b, speakers)
    assert diff == pytest.approx(sum_counts(a).wer - sum_counts(b).wer) == pytest.approx(0.1)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    # unpaired, the two CIs overlap: the speaker spread hides the difference
    assert bootstrap_ci(a, speakers)[0] < bootstrap_ci(b, speakers)[1]
    assert paired_difference(b, b, speakers) == (0.0, 0.0, 0.0)


def test_paired_difference_holds_zero_when_the_systems_trade_errors() -> None:
    rng = np.random.default_rng(1)
    speakers = [s for s in range(15) for _ in range(12)]
    errs = rng.integers(0, 4, size=len(speakers))
    a = [_counts(int(e), 8) for e in errs]
    b = [_counts(int(e), 8) for e in errs[::-1]]  # same errors on other clips
    diff, low, high = paired_difference(a, b, speakers, seed=2)
    assert diff == pytest.approx(0.0) and low < 0 < high
    assert (diff, low, high) == paired_difference(a, b, speakers, seed=2)


def test_paired_difference_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError, match="2 utterances against 1"):
        paired_difference([_counts(0, 1), _counts(0, 1)], [_counts(0, 1)])
    with pytest.raises(ValueError, match="utterance 1 has 2 reference words in one system and 3"):
        paired_difference([_counts(0, 1), _counts(0, 2)], [_counts(0, 1), _counts(0, 3)])
    with pytest.raises(ValueError, match="groups has 1 entries for 2 utterances"):
        paired_difference([_counts(0, 1), _counts(0, 1)], [_counts(0, 1), _counts(0, 1)], ["a"])


# ------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("ref", "hyp", "duration", "n_tokens", "expected"),
    [
        ("MARK IS GOING TO SEE ELEPHANT", "Mark is going to see elephant.", 2.5, None, []),
        ("TWO SIX FOUR EIGHT", "2, 6, 4, 8", 3.0, 12, []),
        ("MARK IS GOING TO SEE ELEPHANT", "mark is going to the zoo", 2.5, None, []),  # wrong is not flagged
        ("TWO SIX FOUR EIGHT", "3, 8, 4, 7, 8, 8, 8, 8, 8, 8, 8, 8", 3.0, None, ["repetition"]),
        ("I LIKE CATS", "I like I like I like I like", 3.0, None, ["repetition"]),  # a bigram loop
        ("I LIKE CATS", "the dog the dog the dog", 3.0, None, []),  # 3 times is not a loop
        ("NO NO NO NO", "no, no, no, no", 3.0, None, []),  # repeats the reference has are no loop
        ("EIGHT EIGHT EIGHT EIGHT", "8, 8, 8, 8", 3.0, None, []),  # compared digit by digit ("8888")
        ("EIGHT EIGHT EIGHT EIGHT", "8, 8, 8, 8, 8, 8, 8, 8, 8", 3.0, None, ["repetition"]),
        ("TWO SIX", "2666666666666", 3.0, None, ["repetition", "long"]),  # a loop without spaces
        ("MARK IS HAPPY", "马克很高兴", 2.0, None, ["non_english"]),
        ("MARK IS HAPPY", "Марк счастлив", 2.0, None, ["non_english"]),
        ("MARK IS HAPPY", "哈哈哈哈哈哈哈哈哈哈", 2.0, None, ["repetition", "non_english"]),
        ("MARK IS HAPPY", "Mark is happy 马克", 2.0, None, []),  # mostly Latin letters
        ("MARK IS HAPPY", "", 2.0, None, ["empty"]),
        ("MARK IS HAPPY", "um (laughs)", 2.0, None, ["empty"]),  # nothing left after normalization
        ("[noise]", "", 2.0, None, []),  # nothing to say, nothing said
        ("MARK IS HAPPY", "one day a boy went to the big zoo with his mum", None, None, ["long"]),  # 12 > 2*3+5
        ("ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN", "a b c d e f g h i j", 1.0, None, ["long"]),
        ("ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN", "a b c d e f g h i j", 2.0, None, []),
        ("ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN", "a b c d e f g h i j", 0.2, None, ["long"]),
        ("I LIKE BIG CATS", "I like big cats", 0.5, None, []),  # short clips count as 1 s for the rate
        ("I LIKE CATS", "I like cats", 2.0, 31, ["long"]),  # 15.5 tokens per second
        ("I LIKE CATS", "I like cats", 2.0, 30, []),
    ],
)
def test_flag_utterance(
    ref: str, hyp: str, duration: float | None, n_tokens: int | None, expected: list[str]
) -> None:
    assert flag_utterance(normalize(ref), hyp, normalize(hyp), duration, n_tokens) == expected


def test_is_hallucination() -> None:
    assert is_hallucination(["repetition"]) and is_hallucination(["long", "non_english"])
    assert not is_hallucination([]) and not is_hallucination(["empty"]) and not is_hallucination(["non_english"])


# ------------------------------------------------------------------------------------------ summary


@dataclass
class Meta:
    """What evaluate holds per utterance (attribute access, like a manifest Clip)."""

    id: str
    speaker: str | None
    age: float | None
    gender: str | None
    duration: float | None
    ref: str
    hyp: str


UTTERANCES = [
    Meta("u1", "A", 6.0, "f", 3.0, "MARK IS GOING TO SEE ELEPHANT", "Mark is going to see elephant."),
    Meta("u2", "A", 6.0, "f", 3.0, "TWO SIX FOUR EIGHT", "2-6-4-8"),
    Meta("u3", "B", 7.0, "m", 3.0, "I LIKE CATS", "um I like dogs"),
    Meta("u4", "B", 7.0, "m", 3.0, "[noise]", ""),
    Meta("u5", "C", None, None, 3.0, "ZERO THREE FIVE ONE", "0, 3, 5, 1, 1, 1, 1, 1, 1"),
    Meta("u6", "C", None, None, 3.0, "MARK IS HAPPY", ""),
]


def _scored(metas: list[Meta]) -> list[tuple[Meta, UtteranceScore]]:
    return [(m, score_utterance(m.ref, m.hyp, m.duration)) for m in metas]


def test_summarize_numbers() -> None:
    summary = summarize(_scored(UTTERANCES), n_boot=200)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary  # plain JSON

    assert summary["n_utts"] == 6 and summary["n_speakers"] == 3 and summary["audio_seconds"] == 18.0
    assert summary["headline"] == "whisper"
    by_hand = {  # (S, D, I, ref_words, n scored, n skipped), summed over u1..u6 in order
        "orthographic": (6 + 1 + 2 + 0 + 4 + 0, 3 + 1 + 3, 1 + 5, 6 + 4 + 3 + 1 + 4 + 3, 6, 0),
        "whisper": (0 + 1 + 1 + 1 + 0, 3, 3 + 8, 6 + 1 + 3 + 1 + 3, 5, 1),
        "digits": (1, 3, 5, 6 + 4 + 3 + 4 + 3, 5, 1),
    }
    for name, (s, d, i, ref_words, n_utts, n_skipped) in by_hand.items():
        w = summary["wer"][name]
        assert (w["substitutions"], w["deletions"], w["insertions"]) == (s, d, i), name
        assert (w["ref_words"], w["n_utts"], w["n_skipped_empty_ref"]) == (ref_words, n_utts, n_skipped), name
        assert w["errors"] == s + d + i
        assert w["wer"] == pytest.approx((s + d + i) / ref_words), name
        assert w["ci_low"] <= w["wer"] <= w["ci_high"], name
    assert summary["wer"]["whisper"]["wer"] == pytest.approx(17 / 14)
    assert summary["wer"]["digits"]["wer"] == pytest.approx(9 / 20)

    cer = summary["cer"]
    assert cer["ref_chars"] == len("mark is going to see elephant" "2648" "i like cats" "0351" "mark is happy")
    assert cer["n_utts"] == 5 and cer["n_skipped_empty_ref"] == 1
    assert 0 < cer["cer"] == pytest.approx(cer["errors"] / cer["ref_chars"])

    assert summary["flags"] == {
        "empty": 1, "repetition": 1, "long": 0, "non_english": 0, "hallucination": 1, "any": 2,
    }
    assert summary["bootstrap"] == {"unit": "speaker", "n_boot": 200, "seed": 0, "alpha": 0.05}


def test_summarize_breakdowns() -> None:
    summary = summarize(_scored(UTTERANCES), n_boot=200)
    speakers = summary["breakdown"]["speaker"]
    assert list(speakers) == ["A", "B", "C"]
    assert speakers["A"]["wer"] == pytest.approx(4 / 7) and speakers["A"]["digits_wer"] == 0.0
    assert speakers["B"]["n_utts"] == 2 and speakers["B"]["n_scored"] == 1
    assert speakers["B"]["wer"] == pytest.approx(1 / 3)
    assert speakers["C"]["wer"] == pytest.approx(12 / 4) and speakers["C"]["digits_wer"] == pytest.approx(8 / 7)
    assert speakers["C"]["n_hallucinations"] == 1
    assert speakers["A"]["ci_low"] is None  # one speaker: no between-speaker interval
    assert set(speakers["A"]) >= {
        "n_utts", "n_scored", "n_speakers", "ref_words", "substitutions", "deletions", "insertions",
        "wer", "ci_low", "ci_high", "digits_wer", "orthographic_wer", "n_hallucinations",
    }
    assert list(summary["breakdown"]["age"]) == ["6", "7", "unknown"]
    assert summary["breakdown"]["age"]["6"] == speakers["A"]
    assert list(summary["breakdown"]["gender"]) == ["f", "m", "unknown"]


def test_breakdown_group_of_several_speakers_has_a_ci_and_dict_meta_works() -> None:
    items = [(asdict(m), s) for m, s in _scored(UTTERANCES)]  # meta as plain dicts
    groups = breakdown(items, "school", n_boot=200)
    assert list(groups) == ["unknown"]
    everyone = groups["unknown"]
    assert everyone["n_speakers"] == 3 and everyone["n_utts"] == 6
    assert everyone["wer"] == pytest.approx(17 / 14)
    assert everyone["ci_low"] <= everyone["wer"] <= everyone["ci_high"]
    assert everyone["ci_low"] < everyone["ci_high"]


def test_summarize_unknown_speakers_are_their_own_bootstrap_unit() -> None:
    metas = [Meta(f"u{i}", None, None, None, None, "I LIKE CATS", "I like dogs" if i % 2 else "I like cats")
             for i in range(20)]
    summary = summarize(_scored(metas), n_boot=200)
    assert summary["n_speakers"] == 0 and summary["audio_seconds"] is None
    whisper = summary["wer"]["whisper"]
    assert whisper["wer"] == pytest.approx(10 / 60)
    assert whisper["ci_low"] < whisper["wer"] < whisper["ci_high"]  # not collapsed into one "unknown" speaker


def test_summarize_nothing_scorable() -> None:
    summary = summarize(_scored([Meta("u1", "A", None, None, 1.0, "[noise]", "hello")]), n_boot=10)
    assert summary["wer"]["whisper"]["wer"] is None and summary["wer"]["whisper"]["ci_low"] is None
    assert summary["wer"]["whisper"]["n_skipped_empty_ref"] == 1
    assert json.dumps(summary, allow_nan=False)


def test_flags_constant_matches_summary_keys() -> None:
    summary = summarize(_scored(UTTERANCES[:1]), n_boot=10)
    assert set(summary["flags"]) == {*FLAGS, "hallucination", "any"}
