"""decode_ct2: the CTranslate2 backend decodes what the PyTorch one decodes, runaway decodes included.

The runaway clips are the kids-test clips on which stock whisper-base (English, greedy) runs to the
224-token bound in the committed baseline (``truncated`` in its utterances.jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import KIDS_TEST

REPO = Path(__file__).resolve().parents[1]

BASELINE = REPO / "results" / "baseline" / "whisper-base-en" / "kids-test" / "utterances.jsonl"


@pytest.mark.parametrize("n, prompt, steps", [(224, 4, 224), (20, 4, 20), (1, 4, 1), (2, 4, 2), (444, 4, 444),
                                              (224, 2, 224), (1, 2, 1)])
def test_ct2_max_length_allows_exactly_n_steps(n, prompt, steps):
    """CTranslate2 decodes min(L // 2, L - (prompt - 1)) steps; the L we pass gives exactly n."""
    from kidwhisper.decode_ct2 import ct2_max_length

    length = ct2_max_length(n, prompt)
    assert min(length // 2, length - (prompt - 1)) == steps


def _runaway_ids() -> list[str]:
    lines = [json.loads(line) for line in BASELINE.read_text().splitlines()]
    return [u["id"] for u in lines if u["truncated"]]


@pytest.fixture(scope="module")
def runaway_audios():
    from kidwhisper.audio import load_audio

    if not KIDS_TEST.exists():
        pytest.skip(f"{KIDS_TEST} not found (the shared children's speech data)")
    wav = dict(line.split() for line in (KIDS_TEST / "wav.scp").read_text().splitlines())
    ids = _runaway_ids()
    assert len(ids) >= 2, f"{BASELINE}: expected runaway clips marked truncated"
    return [load_audio(KIDS_TEST / wav[u]) for u in ids]


@pytest.fixture(scope="module")
def backends():
    """whisper-base in PyTorch and in CTranslate2 float32 (its built-in CTranslate2 weights)."""
    from kidwhisper.decode import transcribe_arrays
    from kidwhisper.decode_ct2 import CT2Decoder
    from kidwhisper.models.builtin import ModelError, builtin_ct2_dir
    from kidwhisper.models.load import load_model

    try:
        model, processor = load_model("whisper-base", None, "cpu")
    except ModelError as e:
        pytest.skip(f"whisper-base not available: {e}")
    ct2 = CT2Decoder(builtin_ct2_dir("whisper-base"), processor, "float32")
    return {"torch": lambda audios, **kw: transcribe_arrays(model, processor, audios, progress=False, **kw),
            "ct2": lambda audios, **kw: ct2.transcribe_arrays(audios, progress=False, **kw)}


def _decode_both(backends, audios, **kw):
    return [[(d.tokens, d.truncated) for d in backends[b](audios, **kw)] for b in ("torch", "ct2")]


@pytest.mark.slow
def test_runaway_clips_run_to_the_same_bound(backends, runaway_audios):
    """Greedy, as the committed baseline: every runaway clip stops at 224 tokens in both, flagged."""
    torch_out, ct2_out = _decode_both(backends, runaway_audios, batch_size=len(runaway_audios))
    assert ct2_out == torch_out
    assert all(truncated and len(tokens) == 224 for tokens, truncated in ct2_out)


@pytest.mark.slow
def test_a_small_budget_cuts_both_backends_alike(backends, runaway_audios, kids_test_clips):
    from kidwhisper.audio import load_audio

    audios = [load_audio(p) for _, p, _ in kids_test_clips[:5]] + runaway_audios[:1]
    torch_out, ct2_out = _decode_both(backends, audios, max_new_tokens=20, batch_size=6)
    assert ct2_out == torch_out
    assert all(len(tokens) <= 20 for tokens, _ in ct2_out)
    assert ct2_out[-1][1] and len(ct2_out[-1][0]) == 20  # the runaway clip is cut at 20 and flagged
    assert not any(truncated for _, truncated in ct2_out[:-1])  # clips that end by themselves are not


@pytest.mark.slow
def test_beam_search_stops_at_the_same_bound(backends, kids_test_clips):
    """5 beams, a budget every hypothesis outruns (clips of 5+ reference words, 3 tokens): the same cut.

    Beam searches that end by themselves may differ: transformers divides a finished hypothesis' score by
    its length counting <|endoftext|>, CTranslate2 without it, and CTranslate2 stops once 5 hypotheses have
    finished while transformers goes on while a running beam may still beat them.
    """
    from kidwhisper.audio import load_audio

    audios = [load_audio(p) for _, p, ref in kids_test_clips if len(ref.split()) >= 5]
    assert len(audios) >= 3
    torch_out, ct2_out = _decode_both(backends, audios, num_beams=5, max_new_tokens=3, batch_size=len(audios),
                                      fallback=False)
    assert ct2_out == torch_out
    assert all(truncated and len(tokens) == 3 for tokens, truncated in ct2_out)
    # With the greedy fallback every one of these cut clips is decoded again greedily, alike in both engines.
    kw = dict(max_new_tokens=3, batch_size=len(audios))
    fell = [backends[b](audios, num_beams=5, **kw) for b in ("torch", "ct2")]
    greedy = _decode_both(backends, audios, **kw)
    assert [[(d.tokens, d.truncated) for d in out] for out in fell] == greedy
    assert all(d.fallback for out in fell for d in out)
