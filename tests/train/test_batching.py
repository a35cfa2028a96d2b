"""Packing, labels, features, collation and epoch order (kidwhisper.train.batching)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidwhisper.train.batching import (
    IGNORE_INDEX,
    MAX_LABEL_TOKENS,
    Collator,
    WindowDataset,
    build_windows,
    epoch_order,
    label_ids,
    pack_clips,
    rank_batches,
    target_text,
    window_audio,
)

SOT, EN, TRANSCRIBE, NO_TIMESTAMPS, EOT = 50258, 50259, 50359, 50363, 50257


@pytest.fixture(scope="module")
def processor(base_dir):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(base_dir)


@pytest.mark.parametrize("raw, expected", [
    ("WE CALL IT BEAR", "We call it bear"),
    ("I'M SIX AND I LIKE IT", "I'm six and I like it"),
    ("  MARK   IS GOING ", "Mark is going"),
    ("ZERO THREE FIVE ONE", "Zero three five one"),
    ("", ""),
])
def test_target_text_is_sentence_case(raw, expected):
    assert target_text(raw) == expected


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pack_clips_keeps_every_clip_once_within_the_limit(seed):
    rng = np.random.default_rng(seed)
    durations = rng.uniform(1.6, 20.0, size=200).tolist()
    tokens = rng.integers(3, 40, size=200).tolist()
    windows = pack_clips(durations, 30.0, 0.2, seed, tokens=tokens, max_tokens=120)
    flat = [i for w in windows for i in w]
    assert sorted(flat) == list(range(200))  # every clip exactly once
    for w in windows:
        assert w == sorted(w)  # manifest order inside a window
        assert sum(durations[i] for i in w) + 0.2 * (len(w) - 1) <= 30.0 + 1e-6
        assert sum(tokens[i] for i in w) <= 120
    assert pack_clips(durations, 30.0, 0.2, seed, tokens=tokens, max_tokens=120) == windows  # deterministic
    assert pack_clips(durations, 30.0, 0.2, seed + 100) != windows  # the seed matters


def test_pack_clips_first_fit_fills_windows():
    # 3.6 s clips (the corpus median) with 0.2 s gaps: 7 fit in 30 s (26.4 s), 8 would need 30.2 s
    windows = pack_clips([3.6] * 70, 30.0, 0.2, 0)
    assert [len(w) for w in windows] == [7] * 10
    assert pack_clips([], 30.0, 0.2, 0) == []
    with pytest.raises(ValueError, match="does not fit"):
        pack_clips([3.0, 31.0], 30.0, 0.2, 0)


def test_labels_start_with_the_whisper_prompt(processor):
    tok = processor.tokenizer
    ids = label_ids(tok, "Mark is going", multilingual=True, language="en")
    assert ids[:4] == [SOT, EN, TRANSCRIBE, NO_TIMESTAMPS] and ids[-1] == EOT
    assert tok.decode(ids[4:-1]) == "Mark is going"
    english_only = label_ids(tok, "Mark is going", multilingual=False)
    assert english_only[:2] == [SOT, NO_TIMESTAMPS] and english_only[2:] == ids[4:]


@pytest.mark.slow
def test_english_only_model_prompt():
    from transformers import WhisperProcessor

    from kidwhisper.models.builtin import builtin_path

    tok = WhisperProcessor.from_pretrained(builtin_path("whisper-tiny.en")).tokenizer
    ids = label_ids(tok, "We call it bear", multilingual=False)
    assert tok.convert_ids_to_tokens(ids[:2]) == ["<|startoftranscript|>", "<|notimestamps|>"]
    assert tok.convert_ids_to_tokens(ids[-1]) == "<|endoftext|>"


def _tones(seconds: list[float]) -> list[np.ndarray]:
    return [np.full(int(round(s * 16000)), 0.1 * (k + 1), np.float32) for k, s in enumerate(seconds)]


def _lengths(audios: list[np.ndarray]) -> list[int]:
    return [len(a) for a in audios]


def test_build_windows_packs_audio_and_joins_text(processor):
    seconds = [3.0, 4.5, 2.0, 31.0, 6.0, 10.0, 8.0]
    texts = ["WE CALL IT BEAR", "I LIKE APPLES", "YES", "TOO LONG", "", "MARK IS GOING", "ZERO THREE"]
    audios = _tones(seconds)
    windows, skipped = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=True, seed=3)
    assert skipped == {"empty transcript": [4], "longer than 30 s": [3]}
    assert sorted(i for w in windows for i in w.clips) == [0, 1, 2, 5, 6]
    for w in windows:
        wave = window_audio(audios, w.clips, 0.2)
        assert len(wave) == sum(len(audios[i]) for i in w.clips) + 3200 * (len(w.clips) - 1) <= 480000
        assert w.labels[:4] == [SOT, EN, TRANSCRIBE, NO_TIMESTAMPS] and len(w.labels) <= MAX_LABEL_TOKENS
        text = processor.tokenizer.decode(w.labels, skip_special_tokens=True)
        assert text == " ".join(target_text(texts[i]) for i in w.clips)
        # the gap is silence and every clip's samples are where they should be
        start = 0
        for i in w.clips:
            assert np.array_equal(wave[start : start + len(audios[i])], audios[i])
            start += len(audios[i]) + 3200
        # clip-wise targets: each clip's own labels and its span in the window
        assert [processor.tokenizer.decode(lab, skip_special_tokens=True) for lab in w.clip_labels] == \
            [target_text(texts[i]) for i in w.clips]
        assert all(lab[:4] == [SOT, EN, TRANSCRIBE, NO_TIMESTAMPS] and lab[-1] == EOT for lab in w.clip_labels)
        start = 0
        for (a, b), i in zip(w.spans, w.clips, strict=True):
            assert a == pytest.approx(start / 16000) and b - a == pytest.approx(len(audios[i]) / 16000)
            start += len(audios[i]) + 3200
        assert w.seconds == pytest.approx(w.spans[-1][1])
    unpacked, _ = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=False)
    assert [w.clips for w in unpacked] == [[0], [1], [2], [5], [6]]
    assert all(w.clip_labels == [w.labels] for w in unpacked)


def test_build_windows_skips_clips_without_samples(processor):
    audios = _tones([2.0, 0.0, 3.0])
    for pack in (True, False):
        windows, skipped = build_windows(["A B", "NO AUDIO", "C"], _lengths(audios), processor.tokenizer, True, "en", pack=pack)
        assert skipped == {"empty audio (no samples)": [1]}
        assert sorted(i for w in windows for i in w.clips) == [0, 2]


def test_dataset_features_and_collator(processor):
    audios = _tones([2.0, 3.0, 1.0])
    tok = processor.tokenizer
    windows, _ = build_windows(["A B", "C D E F G", "H"], _lengths(audios), tok, True, "en", pack=False)
    ds = WindowDataset(windows, audios, processor.feature_extractor, 0.2)
    item = ds[1]
    assert item["input_features"].shape == (80, 3000) and item["labels"] == windows[1].labels
    assert "input_features" not in WindowDataset(windows, audios, processor.feature_extractor, with_features=False)[0]
    batch = Collator(EOT)([ds[0], ds[1], ds[2]])
    assert batch["input_features"].shape == (3, 80, 3000)
    width = max(len(w.labels) for w in windows) - 1
    assert batch["decoder_input_ids"].shape == batch["targets"].shape == (3, width)
    for b, w in enumerate(windows):
        n = len(w.labels) - 1
        assert batch["decoder_input_ids"][b, :n].tolist() == w.labels[:-1]
        assert batch["targets"][b, :n].tolist() == w.labels[1:]
        assert (batch["targets"][b, n:] == IGNORE_INDEX).all() and (batch["decoder_input_ids"][b, n:] == EOT).all()
    assert batch["index"].tolist() == [0, 1, 2]
    # log-mels are computed once per window and reused (same array object the second time)...
    assert ds[1]["input_features"] is item["input_features"] and set(ds.cache) == {0, 1, 2}
    # ...up to the cache budget: the first windows computed are kept, the others recomputed (equal values)
    small = WindowDataset(windows, audios, processor.feature_extractor, 0.2, cache_bytes=2_000_000)
    assert [small[i]["input_features"] is small[i]["input_features"] for i in (2, 0, 1)] == [True, True, False]
    assert set(small.cache) == {2, 0} and np.array_equal(small[1]["input_features"], item["input_features"])
    assert WindowDataset(windows, audios, processor.feature_extractor, cache_bytes=0).cache is None


def test_clipwise_items_and_batches(processor):
    audios = _tones([2.0, 3.0, 1.0])
    windows, _ = build_windows(["A B", "C D E F G", "H"], _lengths(audios), processor.tokenizer, True, "en", pack=True,
                               max_seconds=10.0)
    assert len(windows) == 1 and windows[0].clips == [0, 1, 2]
    ds = WindowDataset(windows, audios, processor.feature_extractor, 0.2, clipwise=True)
    item = ds[0]
    assert item["clip_labels"] == windows[0].clip_labels and item["frames"].shape == (3, 1500)
    batch = Collator(EOT)([item])
    n = sum(len(lab) - 1 for lab in windows[0].clip_labels)
    assert batch["decoder_input_ids"].shape == (1, n) and batch["segments"][0].tolist() == \
        [k for k, lab in enumerate(windows[0].clip_labels) for _ in lab[1:]]
    assert batch["input_features"].shape == (1, 80, 3000) and batch["index"].tolist() == [0]


def test_loss_equals_hand_computed_cross_entropy(tiny_model_dir, processor):
    from transformers import WhisperForConditionalGeneration

    from kidwhisper.train.loop import token_loss

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    audios = _tones([2.0, 5.0])
    windows, _ = build_windows(["WE CALL IT BEAR", "MARK IS GOING TO SEE ELEPHANT"], _lengths(audios), processor.tokenizer,
                               True, "en", pack=False)
    ds = WindowDataset(windows, audios, processor.feature_extractor)
    batch = Collator(EOT)([ds[0], ds[1]])
    with torch.no_grad():
        logits = model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"]).logits
        loss = token_loss(logits, batch["targets"]).item()
        # by hand: -log p(target) averaged over the real (non-padding) target tokens
        logp = torch.log_softmax(logits.double(), dim=-1)
        terms = [-logp[b, t, batch["targets"][b, t]].item() for b in range(2) for t in range(logits.shape[1])
                 if batch["targets"][b, t] != IGNORE_INDEX]
        assert len(terms) == sum(len(w.labels) - 1 for w in windows)
        assert loss == pytest.approx(sum(terms) / len(terms), rel=1e-5)
        # and Hugging Face's own convention (labels shifted right after <|startoftranscript|>) agrees
        hf = model(input_features=batch["input_features"], labels=batch["targets"]).loss.item()
        assert loss == pytest.approx(hf, rel=1e-5)
        # label smoothing e: (1 - e) * -log p(target) + e * mean over the vocabulary of -log p(token)
        e = 0.1
        uniform = [-logp[b, t].mean().item() for b in range(2) for t in range(logits.shape[1])
                   if batch["targets"][b, t] != IGNORE_INDEX]
        smoothed = token_loss(logits, batch["targets"], label_smoothing=e).item()
        expected = sum((1 - e) * a + e * u for a, u in zip(terms, uniform, strict=True)) / len(terms)
        assert smoothed == pytest.approx(expected, rel=1e-5) and smoothed != pytest.approx(loss, rel=1e-3)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = epoch_order(50, seed=1, epoch=0)
    assert sorted(a) == list(range(50)) and a == epoch_order(50, seed=1, epoch=0)
    assert a != epoch_order(50, seed=1, epoch=1) and a != epoch_order(50, seed=2, epoch=0)
    lengths = list(np.random.default_rng(0).integers(5, 100, 1000))
    grouped = epoch_order(1000, 0, 0, lengths, batch_size=8)
    assert sorted(grouped) == list(range(1000))
    spread = np.mean([np.ptp([lengths[i] for i in grouped[s : s + 8]]) for s in range(0, 1000, 8)])
    random_spread = np.mean([np.ptp([lengths[i] for i in a8]) for a8 in np.array_split(np.arange(1000), 125)])
    assert spread < random_spread / 5  # batches hold similar lengths


@pytest.mark.parametrize("n, batch_size, world", [(10, 3, 1), (10, 3, 2), (7, 2, 3), (1, 4, 2), (13, 4, 4)])
def test_rank_batches_cover_every_window_exactly_once(n, batch_size, world):
    order = list(np.random.default_rng(n).permutation(n))
    per_rank = [rank_batches(order, batch_size, world, r) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # every process runs the same number of steps
    trained = [i for shards in per_rank for sh in shards if sh.weight > 0 for i in sh.windows]
    assert sorted(trained) == list(range(n))  # every window once per epoch, none twice, none missed
    for step in range(len(per_rank[0])):
        shards = [b[step] for b in per_rank]
        assert len({tuple(sh.batch) for sh in shards}) == 1
        assert [i for sh in shards if sh.weight > 0 for i in sh.windows] == shards[0].batch  # in batch order
        assert max(len(sh.windows) for sh in shards) - min(len(sh.windows) for sh in shards) <= 1
        # the weights make the mean over processes of each process's mean loss the mean over windows
        assert sum(sh.weight for sh in shards) == pytest.approx(world)
        for sh in shards:
            assert sh.weight == pytest.approx(len(sh.windows) * world / len(sh.batch)) or (
                sh.weight == 0 and sh.windows == sh.batch[:1])
    if world == 1:
        assert [i for sh in per_rank[0] for i in sh.windows] == order
        assert all(sh.weight == 1.0 for sh in per_rank[0])


def test_rank_batches_split_even_batches_as_before():
    """A global batch that divides evenly goes to the processes in consecutive blocks of equal size, weight 1."""
    shards = [rank_batches(list(range(8)), 2, 2, r) for r in (0, 1)]
    assert [[sh.windows for sh in s] for s in shards] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    assert all(sh.weight == 1.0 for s in shards for sh in s)


def test_build_windows_single_fraction_gives_some_clips_their_own_window(processor):
    seconds = [3.0, 4.5, 2.0, 6.0, 10.0, 8.0, 2.5, 3.5, 1.0, 2.0]
    texts = [f"CLIP {k}" for k in range(len(seconds))]
    audios = _tones(seconds)
    packed, _ = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=True, seed=3)
    mixed, _ = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=True, seed=3, single_fraction=0.3)
    assert all(len(w.clips) > 1 for w in packed[:-1])  # plain packing leaves at most the last window alone
    # 3 of 10 clips alone, listed first, the other 7 packed; every clip exactly once
    assert [len(w.clips) for w in mixed[:3]] == [1, 1, 1] and all(len(w.clips) > 1 for w in mixed[3:-1])
    assert sorted(i for w in mixed for i in w.clips) == list(range(10))
    again, _ = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=True, seed=3, single_fraction=0.3)
    assert [w.clips for w in again] == [w.clips for w in mixed]  # seeded
    alone, _ = build_windows(texts, _lengths(audios), processor.tokenizer, True, "en", pack=True, single_fraction=1.0)
    assert sorted(w.clips for w in alone) == [[k] for k in range(10)]
    for w in mixed[:3]:
        assert processor.tokenizer.decode(w.labels, skip_special_tokens=True) == target_text(texts[w.clips[0]])


@pytest.mark.parametrize("pack, speed", [(True, 0.0), (False, 0.0), (True, 0.1)])
def test_streamed_windows_give_the_same_batches_as_audio_held_in_memory(processor, kids_manifests, pack, speed):
    """Windows planned from file headers and clips read per window (in 0 or 2 DataLoader workers) give the
    same windows and the same collated batches, epoch by epoch, as planning from and reading audio loaded
    up front; with speed perturbation too (windows planned with its stretch, clips perturbed per epoch)."""
    from kidwhisper.data.manifest import (
        AudioFiles,
        load_usable_audios,
        probe_clips,
        read_clip_table,
        read_manifest,
    )
    from kidwhisper.train.augment import ClipAugment

    manifest = kids_manifests[0]
    augment = ClipAugment(speed, 0.0, seed=5)
    opts = dict(pack=pack, max_seconds=25.0, seed=5, stretch=augment.stretch)
    loaded = load_usable_audios(read_manifest(manifest), manifest)
    in_memory, _ = build_windows([c.text for c in loaded.clips], _lengths(loaded.audios), processor.tokenizer,
                                 True, "en", **opts)
    table = read_clip_table(manifest)
    probed = probe_clips(table.ids, table.paths, manifest)
    streamed, _ = build_windows(table.select(probed.kept).texts, probed.samples, processor.tokenizer, True, "en",
                                **opts)
    assert [(w.clips, w.labels, w.spans) for w in streamed] == [(w.clips, w.labels, w.spans) for w in in_memory]
    assert len(streamed) == (2 if pack else 12)
    kw = dict(clipwise=pack, isolate=pack, augment=augment)
    old = WindowDataset(in_memory, loaded.audios, processor.feature_extractor, **kw)
    new = WindowDataset(streamed, AudioFiles(table.select(probed.kept).paths), processor.feature_extractor,
                        cache_bytes=0, **kw)
    collate = Collator(EOT)
    for epoch in (0, 1):
        old.epoch = new.epoch = epoch
        shards = rank_batches(epoch_order(len(streamed), 5, epoch), 2)
        expected = [collate([old[i] for i in sh.windows]) for sh in shards]
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(new, batch_sampler=[sh.windows for sh in shards], collate_fn=collate,
                                                 num_workers=workers)
            got = list(loader)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                assert a.keys() == b.keys()
                for k in a:
                    assert torch.equal(a[k], b[k]), k
