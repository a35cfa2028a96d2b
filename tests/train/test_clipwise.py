"""Clip-wise targets for packed windows (kidwhisper.train.clipwise): masks, collation, and that one masked
decoder row computes exactly what decoding each clip on its own frames computes."""

from __future__ import annotations

import pytest
import torch

from kidwhisper.train.clipwise import (
    ENCODER_FRAMES,
    attention_masks,
    clip_frames,
    collate_clipwise,
    decoder_masks,
    encoder_isolation,
    encoder_layout,
)

PAD, IGNORE = 50257, -100


def test_clip_frames_cover_each_clip_its_half_gaps_and_the_trailing_silence():
    spans = [(0.0, 2.0), (2.2, 5.0)]
    f = clip_frames(spans, seconds=5.0, gap=0.2)
    assert f.shape == (2, ENCODER_FRAMES)
    # clip 0: 0 .. 2.2 s -> frames 0..109; clip 1: 2.2 .. 5.2 s -> frames 110..259; tail from 5.0 s = frame 250
    assert f[0, :110].all() and not f[0, 110:250].any() and f[0, 250:].all()
    assert not f[1, :110].any() and f[1, 110:].all()
    one = clip_frames([(0.0, 3.0)], seconds=3.0, gap=0.2)
    assert one.all()  # a lone clip sees the whole window, exactly as in decoding


def test_collate_restarts_positions_per_clip_and_pads():
    a = {"clip_labels": [[1, 2, 3], [1, 4, 5, 6]], "frames": torch.ones(2, ENCODER_FRAMES, dtype=torch.bool)}
    b = {"clip_labels": [[1, 7]], "frames": torch.ones(1, ENCODER_FRAMES, dtype=torch.bool)}
    out = collate_clipwise([a, b], PAD, IGNORE)
    assert out["decoder_input_ids"].tolist() == [[1, 2, 1, 4, 5], [1, PAD, PAD, PAD, PAD]]
    assert out["targets"].tolist() == [[2, 3, 4, 5, 6], [7, IGNORE, IGNORE, IGNORE, IGNORE]]
    assert out["decoder_position_ids"][0].tolist() == [0, 1, 0, 1, 2]
    assert out["segments"].tolist() == [[0, 0, 1, 1, 1], [0, -1, -1, -1, -1]]
    assert out["frames"].shape == (2, 2, ENCODER_FRAMES) and not out["frames"][1, 1].any()


def test_attention_masks_are_block_causal_and_route_each_clip_to_its_frames():
    frames = torch.zeros(1, 2, ENCODER_FRAMES, dtype=torch.bool)
    frames[0, 0, :10] = True
    frames[0, 1, 10:20] = True
    segments = torch.tensor([[0, 0, 1, 1, -1]])
    self_mask, cross = attention_masks(segments, frames)
    assert self_mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0],
                                              [1, 1, 0, 0, 0],
                                              [0, 0, 1, 0, 0],
                                              [0, 0, 1, 1, 0],
                                              [0, 0, 0, 0, 1]]
    assert cross[0, 0, 1, :10].all() and not cross[0, 0, 1, 10:].any()
    assert cross[0, 0, 3, 10:20].all() and cross[0, 0, 3].sum() == 10
    assert cross[0, 0, 4].all()  # padding attends everywhere (no empty softmax row)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_one_masked_row_equals_decoding_each_clip_on_its_own_frames(tiny_model_dir, implementation):
    """The invariant that makes clip-wise targets correct: logits of clip k in the packed row are those of
    a separate decoder pass over clip k's labels that cross-attends to clip k's frames only."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir, attn_implementation=implementation)
    model.eval()
    labels = [[50258, 50259, 50359, 50363, 440, 2373, 50257], [50258, 50259, 50359, 50363, 883, 50257],
              [50258, 50259, 50359, 50363, 50257]]
    frames = clip_frames([(0.0, 2.0), (2.2, 9.5), (9.7, 10.0)], seconds=10.0, gap=0.2)
    batch = collate_clipwise([{"clip_labels": labels, "frames": frames},
                              {"clip_labels": labels[:1], "frames": clip_frames([(0.0, 2.0)], 2.0, 0.2)}],
                             PAD, IGNORE)
    torch.manual_seed(0)
    enc = torch.randn(2, ENCODER_FRAMES, model.config.d_model)
    with torch.no_grad():
        self_mask, cross = attention_masks(batch["segments"], batch["frames"])
        with decoder_masks(model, self_mask, cross):
            packed = model(encoder_outputs=(enc,), decoder_input_ids=batch["decoder_input_ids"],
                           decoder_position_ids=batch["decoder_position_ids"], use_cache=False).logits
        unmasked = model(encoder_outputs=(enc,), decoder_input_ids=batch["decoder_input_ids"],
                         decoder_position_ids=batch["decoder_position_ids"], use_cache=False).logits
        t = 0
        for k, lab in enumerate(labels):
            n = len(lab) - 1
            alone = model(encoder_outputs=(enc[:1, frames[k]],), decoder_input_ids=torch.tensor([lab[:-1]]),
                          use_cache=False).logits
            torch.testing.assert_close(packed[0, t : t + n], alone[0], atol=1e-5, rtol=1e-4)
            t += n
        full = model(encoder_outputs=(enc[1:],), decoder_input_ids=torch.tensor([labels[0][:-1]]),
                     use_cache=False).logits
        torch.testing.assert_close(packed[1, : len(labels[0]) - 1], full[0], atol=1e-5, rtol=1e-4)
    # the hooks are gone after the block: the same call no longer masks (clip 2 now sees clip 1)
    assert not torch.allclose(unmasked[0, 6:11], packed[0, 6:11])
    assert all(not layer.self_attn._forward_pre_hooks for layer in model.model.decoder.layers)


def test_encoder_layout_restarts_positions_per_clip():
    frames = clip_frames([(0.0, 2.0), (2.2, 5.0)], seconds=5.0, gap=0.2)
    segment, position = encoder_layout(frames, 5.0)
    assert (segment[:110] == 0).all() and (segment[110:250] == 1).all() and (segment[250:] == -1).all()
    assert position[:110].tolist() == list(range(110)) and position[110:250].tolist() == list(range(140))
    assert position[250:].tolist() == list(range(250, ENCODER_FRAMES))  # the silence keeps its own


def test_isolated_encoder_keeps_clips_apart(tiny_model_dir):
    """Under isolation a clip's encoder frames do not see the other clips' audio (exactly so in this 1-layer
    encoder; deeper ones see it second-hand through the silence frames), and a window holding one clip is
    encoded exactly as without isolation (the clip already opens the window)."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    encoder = model.model.encoder
    frames = clip_frames([(0.0, 2.0), (2.2, 5.0)], seconds=5.0, gap=0.2)
    segment, position = encoder_layout(frames, 5.0)
    torch.manual_seed(0)
    feats = torch.randn(1, 80, 3000)
    other = feats.clone()
    other[:, :, :200] = torch.randn(1, 80, 200)  # new audio for clip 0 (0-2 s = log-mel frames 0-199)
    with torch.no_grad():
        with encoder_isolation(model, segment[None], position[None]):
            a, b = encoder(feats).last_hidden_state, encoder(other).last_hidden_state
        plain_a, plain_b = encoder(feats).last_hidden_state, encoder(other).last_hidden_state
        assert torch.equal(a[0, 112:250], b[0, 112:250])  # clip 1 does not see clip 0 (past the conv edge)
        assert not torch.equal(plain_a[0, 112:250], plain_b[0, 112:250])  # without isolation it does
        assert not torch.equal(a[0, :100], b[0, :100])  # (and clip 0 did change)
        assert not encoder.embed_positions._forward_hooks  # hooks removed
        one = clip_frames([(0.0, 3.0)], seconds=3.0, gap=0.2)
        with encoder_isolation(model, *(t[None] for t in encoder_layout(one, 3.0))):
            alone = encoder(feats).last_hidden_state
        torch.testing.assert_close(alone, plain_a)
