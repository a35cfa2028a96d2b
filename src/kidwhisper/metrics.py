"""WER/CER counts, corpus aggregation, speaker bootstrap CIs, hallucination flags and the summary.

Honest-WER rules this module enforces:

* **Corpus WER = sum of errors / sum of reference words** over utterances (:func:`sum_counts`,
  :func:`corpus_wer`), never a mean of per-utterance WERs (which lets a 3-word clip with 40 inserted
  words weigh as much as a long sentence).
* **References that normalize to empty are skipped and counted** (``n_skipped_empty_ref``), per
  normalizer: ``"[noise]"`` is one word orthographically but nothing after Whisper normalization.
* **Confidence intervals resample speakers, not utterances** (:func:`bootstrap_ci`): the utterances of
  one child are not independent, so an utterance bootstrap would be too narrow.
* **Hallucinations are flagged, not hidden** (:func:`flag_utterance`): runaway repeats (stock
  whisper-base loops on "3, 8, 4, 7, 8, 8, 8, 8, ..." for hundreds of tokens) and over-long outputs
  are counted in the summary; their insertions stay in the WER.

Per utterance, :func:`score_utterance` gives an :class:`UtteranceScore` (serialise with ``asdict``);
:func:`summarize` turns ``(meta, UtteranceScore)`` pairs into one JSON-able dict. ``meta`` is a mapping or
an object (e.g. a manifest ``Clip``) with ``id``, ``speaker``, ``age``, ``gender`` and ``duration``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jiwer
import numpy as np

from kidwhisper.text import NORMALIZERS, split_digits

logger = logging.getLogger(__name__)

HEADLINE = "whisper"  # normalizer of the headline WER; CER and flags use its normalized text

# Flag thresholds (see flag_utterance).
FLAGS = ("empty", "repetition", "long", "non_english")
REPEAT_MAX_NGRAM = 4  # look for repeated word n-grams with n = 1..4
REPEAT_MIN_TIMES = 4  # ... occurring at least 4 times in a row (and more often than in the reference)
CHAR_REPEAT_MAX_UNIT = 10  # raw-text loops: a unit of 1..10 characters (at least one letter or digit)
CHAR_REPEAT_MIN_TIMES = 8  # ... repeated at least 8 times in a row ("8, 8, 8, 8, 8, 8, 8, 8", "哈哈哈哈哈哈哈哈")
LONG_RATIO = 2  # "long": hypothesis words > LONG_RATIO * reference words + LONG_SLACK_WORDS
LONG_SLACK_WORDS = 5
MAX_WORDS_PER_SECOND = 6.0  # "long": more hypothesis words per second of audio than anyone speaks
MAX_TOKENS_PER_SECOND = 15.0  # "long": more generated tokens per second of audio (when n_tokens is given)
MIN_RATE_SECONDS = 1.0  # clips shorter than this count as this long for the two rates above
NON_LATIN_FRACTION = 0.5  # "non_english": more than half of the letters are not Latin script

_CHAR_LOOP = re.compile(rf"(.{{1,{CHAR_REPEAT_MAX_UNIT}}}?)\1{{{CHAR_REPEAT_MIN_TIMES - 1},}}", re.DOTALL)


@dataclass
class ErrorCounts:
    """Edit-distance counts of one alignment (or a sum of them).

    For character counts (:func:`char_errors`) the "words" are characters (spaces included) and
    ``wer`` is the CER.
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0
    ref_words: int = 0

    def __post_init__(self) -> None:
        if min(self.substitutions, self.deletions, self.insertions, self.hits) < 0:
            raise ValueError(f"negative error count in {self}")
        if self.hits + self.substitutions + self.deletions != self.ref_words:
            raise ValueError(f"hits + substitutions + deletions must equal ref_words in {self}")

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """(S + D + I) / reference words; ``None`` when there are no reference words."""
        return self.errors / self.ref_words if self.ref_words else None

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
            self.ref_words + other.ref_words,
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ErrorCounts:
        return cls(**{k: int(d[k]) for k in ("substitutions", "deletions", "insertions", "hits", "ref_words")})


def is_empty(text: str) -> bool:
    """True when a (normalized) text has no words; such references are skipped and counted."""
    return not text.split()


def _counts(ref_units: int, hyp_units: int, align: Callable[[], Any]) -> ErrorCounts:
    if ref_units == 0:  # not handed to jiwer: empty inputs raise in some jiwer versions
        return ErrorCounts(insertions=hyp_units)
    if hyp_units == 0:
        return ErrorCounts(deletions=ref_units, ref_words=ref_units)
    o = align()
    return ErrorCounts(o.substitutions, o.deletions, o.insertions, o.hits, ref_units)


def word_errors(ref: str, hyp: str) -> ErrorCounts:
    """Word-level S/D/I/hits of ``hyp`` against ``ref`` (both already normalized; split on whitespace).

    An empty reference gives ``ref_words == 0`` and all hypothesis words as insertions; callers skip such
    utterances (see :func:`is_empty`) rather than add them to a corpus WER.
    """
    ref, hyp = " ".join(ref.split()), " ".join(hyp.split())
    return _counts(len(ref.split()), len(hyp.split()), lambda: jiwer.process_words(ref, hyp))


def char_errors(ref: str, hyp: str) -> ErrorCounts:
    """Character-level counts (whitespace collapsed to single spaces, which count as characters)."""
    ref, hyp = " ".join(ref.split()), " ".join(hyp.split())
    return _counts(len(ref), len(hyp), lambda: jiwer.process_characters(ref, hyp))


def sum_counts(counts: Iterable[ErrorCounts]) -> ErrorCounts:
    """Add up counts over utterances; ``sum_counts(c).wer`` is the corpus WER."""
    total = ErrorCounts()
    for c in counts:
        total = total + c
    return total


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Corpus WER of normalized ``(ref, hyp)`` pairs: sum of errors / sum of reference words.

    Pairs whose reference is empty are skipped. ``None`` when no reference has words.
    """
    return sum_counts(word_errors(r, h) for r, h in pairs if not is_empty(r)).wer


def _group_sums(per_utt: Sequence[Sequence[ErrorCounts]], groups: Sequence[Hashable] | None,
                alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Errors [systems, groups] and reference words [groups], summed per group once (input checks here)."""
    n = len(per_utt[0])
    if not n:
        raise ValueError("bootstrap needs at least one utterance")
    if groups is None:
        groups = range(n)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} utterances")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(g, len(index)) for g in groups), dtype=np.int64, count=n)
    errors = np.stack([np.bincount(codes, weights=[c.errors for c in counts], minlength=len(index))
                       for counts in per_utt])
    refs = np.bincount(codes, weights=[c.ref_words for c in per_utt[0]], minlength=len(index))
    if refs.sum() == 0:
        raise ValueError("bootstrap: no reference words; skip utterances with empty references first")
    return errors, refs


def _resampled_rates(errors: np.ndarray, refs: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Corpus error rates [resamples, systems] over ``n_boot`` group resamples (the same draws for every
    system); resamples that drew only zero-word groups are dropped."""
    n_groups = len(refs)
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, 4_000_000 // n_groups)  # bound memory for large utterance bootstraps
    rates = []
    for start in range(0, n_boot, rows_per_chunk):
        idx = rng.integers(0, n_groups, size=(min(rows_per_chunk, n_boot - start), n_groups))
        e, r = errors[:, idx].sum(axis=2).T, refs[idx].sum(axis=1)[:, None]
        rates.append(np.divide(e, r, out=np.full(e.shape, np.nan), where=r > 0))
    all_rates = np.concatenate(rates)
    return all_rates[~np.isnan(all_rates).any(axis=1)]


def bootstrap_ci(
    per_utt_counts: Sequence[ErrorCounts],
    groups: Sequence[Hashable] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of the corpus error rate, resampling whole groups.

    ``groups[i]`` is the speaker of utterance ``i``: each resample draws as many speakers as there are,
    with replacement, and takes all their utterances. ``groups=None`` (or one group per utterance) is an
    utterance bootstrap. Errors and reference words are summed per group once, then the group index is
    resampled with numpy, so 1000 resamples over tens of speakers take milliseconds.
    """
    errors, refs = _group_sums([per_utt_counts], groups, alpha)
    low, high = np.quantile(_resampled_rates(errors, refs, n_boot, seed)[:, 0], [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_difference(
    a: Sequence[ErrorCounts],
    b: Sequence[ErrorCounts],
    groups: Sequence[Hashable] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Corpus error rate of ``a`` minus that of ``b`` on the same utterances, and its paired bootstrap CI.

    ``a[i]`` and ``b[i]`` score the same utterance (same reference word count, else ValueError). Each
    resample draws one set of groups (speakers) and scores both systems on it, so the speaker-to-speaker
    spread that both share cancels: the CI of the difference is much narrower than the two separate
    CIs suggest. Returns ``(difference, low, high)``; a CI that holds 0 means no difference was shown.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} utterances against {len(b)}")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.ref_words != y.ref_words:
            raise ValueError(f"paired_difference: utterance {i} has {x.ref_words} reference words in one "
                             f"system and {y.ref_words} in the other; score the same utterances in the same order")
    errors, refs = _group_sums([a, b], groups, alpha)
    rates = _resampled_rates(errors, refs, n_boot, seed)
    low, high = np.quantile(rates[:, 0] - rates[:, 1], [alpha / 2, 1 - alpha / 2])
    return float((errors[0].sum() - errors[1].sum()) / refs.sum()), float(low), float(high)


# ---------------------------------------------------------------------------------------------- flags


def _repeat_runs(words: list[str]) -> Iterable[list[str]]:
    """Word runs that repeat an n-gram (n <= REPEAT_MAX_NGRAM) at least REPEAT_MIN_TIMES times in a row."""
    for n in range(1, REPEAT_MAX_NGRAM + 1):
        i = 0
        while i + n < len(words):
            j = i  # extend while the sequence stays periodic with period n
            while j + n < len(words) and words[j] == words[j + n]:
                j += 1
            times = (j - i + n) // n
            if times >= REPEAT_MIN_TIMES:
                yield words[i : i + times * n]
            i = max(j, i + 1)


def _contains(haystack: list[str], needle: list[str]) -> bool:
    return f" {' '.join(needle)} " in f" {' '.join(haystack)} "


def _has_runaway_repetition(ref_words: list[str], hyp_words: list[str], hyp_raw: str) -> bool:
    if any(not _contains(ref_words, run) for run in _repeat_runs(hyp_words)):
        return True
    ref_compact = "".join(ref_words)
    for m in _CHAR_LOOP.finditer(hyp_raw):
        unit = "".join(c for c in m.group(1).lower() if c.isalnum())
        if unit and unit * (len(m.group(0)) // len(m.group(1))) not in ref_compact:
            return True
    return False


def _non_latin_fraction(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(not unicodedata.name(c, "").startswith("LATIN") for c in letters) / len(letters)


def flag_utterance(
    ref_norm: str, hyp_raw: str, hyp_norm: str, duration: float | None, n_tokens: int | None = None
) -> list[str]:
    """Flags (in :data:`FLAGS` order) of one decoded utterance; ``[]`` for an ordinary one.

    ``ref_norm``/``hyp_norm`` are Whisper-normalized; word counts and repeats are taken on their
    digit-split form (:func:`kidwhisper.text.split_digits`) so "2648" and "2 6 4 8" count alike.

    * ``"empty"``: the hypothesis normalizes to nothing while the reference does not.
    * ``"repetition"``: a word n-gram (n = 1..REPEAT_MAX_NGRAM) repeated REPEAT_MIN_TIMES+ times in a row
      that the reference does not contain, or a raw-text unit of up to CHAR_REPEAT_MAX_UNIT characters
      repeated CHAR_REPEAT_MIN_TIMES+ times in a row (catches loops in unspaced scripts) that the
      reference does not contain.
    * ``"long"``: hypothesis words > LONG_RATIO * reference words + LONG_SLACK_WORDS, or, with a
      ``duration``, more than MAX_WORDS_PER_SECOND words (or MAX_TOKENS_PER_SECOND generated tokens)
      per second, clips shorter than MIN_RATE_SECONDS counted as that long.
    * ``"non_english"``: more than NON_LATIN_FRACTION of the hypothesis letters are not Latin script
      (Chinese, Cyrillic, Arabic...): the multilingual model left English.
    """
    ref_words, hyp_words = split_digits(ref_norm).split(), split_digits(hyp_norm).split()
    flags = []
    if not hyp_words and ref_words:
        flags.append("empty")
    if _has_runaway_repetition(ref_words, hyp_words, hyp_raw):
        flags.append("repetition")
    seconds = None if duration is None else max(duration, MIN_RATE_SECONDS)
    if (
        len(hyp_words) > LONG_RATIO * len(ref_words) + LONG_SLACK_WORDS
        or (seconds is not None and len(hyp_words) / seconds > MAX_WORDS_PER_SECOND)
        or (seconds is not None and n_tokens is not None and n_tokens / seconds > MAX_TOKENS_PER_SECOND)
    ):
        flags.append("long")
    if _non_latin_fraction(hyp_raw) > NON_LATIN_FRACTION:
        flags.append("non_english")
    return flags


def is_hallucination(flags: Iterable[str]) -> bool:
    """A runaway output: repeated loops or far more words than the audio or the reference can hold."""
    return any(f in ("repetition", "long") for f in flags)


# ------------------------------------------------------------------------------------ per utterance


@dataclass
class UtteranceScore:
    """Everything measured on one utterance; ``dataclasses.asdict`` gives its JSONL line.

    ``words[name]`` is ``None`` when the reference normalizes to empty under ``name`` (the utterance is
    skipped, and counted, for that normalizer). ``skipped`` is that for the headline normalizer.
    """

    ref_norm: dict[str, str]
    hyp_norm: dict[str, str]
    words: dict[str, ErrorCounts | None]
    chars: ErrorCounts | None  # CER counts on the headline-normalized text
    flags: list[str] = field(default_factory=list)
    hallucination: bool = False
    skipped: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UtteranceScore:
        """Inverse of ``asdict`` (for re-summarising a saved utterances.jsonl)."""
        return cls(
            ref_norm=dict(d["ref_norm"]),
            hyp_norm=dict(d["hyp_norm"]),
            words={k: None if v is None else ErrorCounts.from_json(v) for k, v in d["words"].items()},
            chars=None if d.get("chars") is None else ErrorCounts.from_json(d["chars"]),
            flags=list(d.get("flags", [])),
            hallucination=bool(d.get("hallucination", False)),
            skipped=bool(d.get("skipped", False)),
        )


def score_utterance(
    ref: str,
    hyp: str,
    duration: float | None = None,
    n_tokens: int | None = None,
    normalizers: Mapping[str, Callable[[str], str]] = NORMALIZERS,
) -> UtteranceScore:
    """Normalize ``ref`` and ``hyp`` with every normalizer, count errors, CER and flags."""
    if HEADLINE not in normalizers:
        raise ValueError(f"normalizers must include the headline {HEADLINE!r}; got {sorted(normalizers)}")
    ref_norm = {name: f(ref) for name, f in normalizers.items()}
    hyp_norm = {name: f(hyp) for name, f in normalizers.items()}
    words = {
        name: None if is_empty(ref_norm[name]) else word_errors(ref_norm[name], hyp_norm[name])
        for name in normalizers
    }
    skipped = words[HEADLINE] is None
    chars = None if skipped else char_errors(ref_norm[HEADLINE], hyp_norm[HEADLINE])
    flags = flag_utterance(ref_norm[HEADLINE], hyp, hyp_norm[HEADLINE], duration, n_tokens)
    return UtteranceScore(ref_norm, hyp_norm, words, chars, flags, is_hallucination(flags), skipped)


# ------------------------------------------------------------------------------------------ summary


def _meta_get(meta: Any, key: str) -> Any:
    return meta.get(key) if isinstance(meta, Mapping) else getattr(meta, key, None)


def _group_key(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_key(key: str) -> tuple[int, float, str]:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1 if key != "unknown" else 2, 0.0, key)


def _speaker_groups(items: Sequence[tuple[Any, UtteranceScore]]) -> list[Hashable]:
    """Bootstrap unit per utterance: the speaker, or the utterance itself when the speaker is unknown."""
    groups: list[Hashable] = []
    for i, (meta, _) in enumerate(items):
        speaker = _meta_get(meta, "speaker")
        groups.append(("speaker", speaker) if speaker is not None else ("utterance", _meta_get(meta, "id"), i))
    return groups


def _rate_summary(
    counts: list[ErrorCounts | None],
    groups: list[Hashable],
    rate: str,
    ref: str,
    n_boot: int,
    seed: int,
    alpha: float,
) -> dict[str, Any]:
    kept = [(c, g) for c, g in zip(counts, groups, strict=True) if c is not None]
    total = sum_counts(c for c, _ in kept)
    low = high = None
    if total.ref_words:
        low, high = bootstrap_ci([c for c, _ in kept], [g for _, g in kept], n_boot, seed, alpha)
    return {
        rate: total.wer,
        "ci_low": low,
        "ci_high": high,
        "substitutions": total.substitutions,
        "deletions": total.deletions,
        "insertions": total.insertions,
        "hits": total.hits,
        "errors": total.errors,
        ref: total.ref_words,
        "n_utts": len(kept),
        "n_skipped_empty_ref": len(counts) - len(kept),
    }


def breakdown(
    items: Sequence[tuple[Any, UtteranceScore]],
    key: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Headline WER (with S/D/I, a speaker-bootstrap CI and the other normalizers' WERs) per value of
    ``meta[key]`` (``"speaker"``, ``"age"``, ``"gender"``...); a missing value is the group ``"unknown"``.

    Group entry keys: ``n_utts, n_scored, n_speakers, ref_words, substitutions, deletions, insertions,
    wer, ci_low, ci_high`` (``None`` for a group of one speaker), ``<name>_wer`` for every other
    normalizer (e.g. ``digits_wer``), ``n_hallucinations``.
    """
    groups = _speaker_groups(items)
    members: dict[str, list[int]] = {}
    for i, (meta, _) in enumerate(items):
        members.setdefault(_group_key(_meta_get(meta, key)), []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(members, key=_sort_key):
        idx = members[name]
        scores = [items[i][1] for i in idx]
        head = _rate_summary(
            [s.words.get(HEADLINE) for s in scores], [groups[i] for i in idx], "wer", "ref_words",
            n_boot, seed, alpha,
        )
        units = {groups[i] for i in idx}  # speakers (utterances where the speaker is unknown)
        entry: dict[str, Any] = {
            "n_utts": len(idx),
            "n_scored": head["n_utts"],
            "n_speakers": sum(u[0] == "speaker" for u in units),
            **{k: head[k] for k in ("ref_words", "substitutions", "deletions", "insertions", "wer")},
            "ci_low": head["ci_low"] if len(units) >= 2 else None,
            "ci_high": head["ci_high"] if len(units) >= 2 else None,
        }
        for other in sorted({n for s in scores for n in s.words} - {HEADLINE}):
            entry[f"{other}_wer"] = sum_counts(c for s in scores if (c := s.words.get(other)) is not None).wer
        entry["n_hallucinations"] = sum(s.hallucination for s in scores)
        out[name] = entry
    return out


def summarize(
    items: Iterable[tuple[Any, UtteranceScore]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    breakdown_keys: Sequence[str] = ("speaker", "age", "gender"),
) -> dict[str, Any]:
    """One JSON-able summary of scored utterances (``(meta, UtteranceScore)`` pairs).

    Keys: ``n_utts, n_speakers, audio_seconds, headline`` (the headline normalizer's name), ``wer``
    (normalizer name -> ``{wer, ci_low, ci_high, substitutions, deletions, insertions, hits, errors,
    ref_words, n_utts, n_skipped_empty_ref}``), ``cer`` (same on characters of the headline-normalized
    text, with ``cer`` and ``ref_chars``), ``flags`` (``empty, repetition, long, non_english,
    hallucination, any`` -> number of utterances), ``breakdown`` (key -> :func:`breakdown`) and
    ``bootstrap`` (``unit, n_boot, seed, alpha``). Rates are ``None`` when nothing could be scored.
    """
    items = list(items)
    groups = _speaker_groups(items)
    scores = [s for _, s in items]
    names = list(dict.fromkeys(n for s in scores for n in s.words))
    durations = [_meta_get(m, "duration") for m, _ in items]
    summary: dict[str, Any] = {
        "n_utts": len(items),
        "n_speakers": len({g for g in groups if g[0] == "speaker"}),
        "audio_seconds": float(sum(durations)) if items and None not in durations else None,
        "headline": HEADLINE,
        "wer": {
            name: _rate_summary([s.words.get(name) for s in scores], groups, "wer", "ref_words", n_boot, seed, alpha)
            for name in names
        },
        "cer": _rate_summary([s.chars for s in scores], groups, "cer", "ref_chars", n_boot, seed, alpha),
        "flags": {
            **{f: sum(f in s.flags for s in scores) for f in FLAGS},
            "hallucination": sum(s.hallucination for s in scores),
            "any": sum(bool(s.flags) for s in scores),
        },
        "breakdown": {key: breakdown(items, key, n_boot, seed, alpha) for key in breakdown_keys},
        "bootstrap": {"unit": "speaker", "n_boot": n_boot, "seed": seed, "alpha": alpha},
    }
    head = summary["wer"].get(HEADLINE, {})
    logger.debug(
        "%d utterances, %d speakers: %s WER %s (%d skipped, empty reference), %d hallucinations",
        len(items), summary["n_speakers"], HEADLINE, head.get("wer"), head.get("n_skipped_empty_ref", 0),
        summary["flags"]["hallucination"],
    )
    return summary
