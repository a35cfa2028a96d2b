"""On-the-fly waveform augmentation of training clips: speed and pitch perturbation.

Each training clip is perturbed before it is packed into its window, with values drawn from a generator
seeded by (seed, epoch, clip index) alone: the same run gives the same perturbations in any process,
with any number of DataLoader workers, and after a resume. Dev and test audio are never augmented.

- **Speed** (``--speed-perturb S``): the clip is resampled as if played ``f`` times faster, ``f`` uniform
  in [1 - S, 1 + S] (Kaldi's speed perturbation: tempo and pitch change together, the duration becomes
  ``d / f``). The resampling is soxr's (:func:`soxr.resample`).
- **Pitch** (``--pitch-perturb P``): the pitch moves by ``n`` semitones, ``n`` uniform in [-P, P], the
  tempo stays (:func:`librosa.effects.pitch_shift`: phase-vocoder time stretch, then soxr resampling).

Speed perturbation changes durations, so windows are planned for the slowest case
(:attr:`ClipAugment.stretch` = 1 / (1 - S)): a packed window never outgrows ``pack_seconds``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from kidwhisper.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

_SEED_TAG = 0x5A11  # separates the augmentation stream from the other uses of the run's seed


@dataclass(frozen=True)
class ClipAugment:
    """Perturb one clip for one epoch. ``speed``: max relative speed change (0 = off); ``pitch``: max
    shift in semitones (0 = off); ``seed``: the run's seed."""

    speed: float = 0.0
    pitch: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.speed < 0.5:
            raise ValueError(f"speed perturbation must be in [0, 0.5); got {self.speed}")
        if not 0 <= self.pitch <= 12:
            raise ValueError(f"pitch perturbation must be in [0, 12] semitones; got {self.pitch}")

    @property
    def active(self) -> bool:
        return self.speed > 0 or self.pitch > 0

    @property
    def stretch(self) -> float:
        """The largest factor by which a clip's duration can grow (slowest speed)."""
        return 1.0 / (1.0 - self.speed)

    def draw(self, epoch: int, clip: int) -> tuple[float, float]:
        """(speed factor, semitones) of ``clip`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, _SEED_TAG, epoch, clip])
        factor = float(rng.uniform(1 - self.speed, 1 + self.speed)) if self.speed > 0 else 1.0
        steps = float(rng.uniform(-self.pitch, self.pitch)) if self.pitch > 0 else 0.0
        return factor, steps

    def __call__(self, wave: np.ndarray, epoch: int, clip: int) -> np.ndarray:
        factor, steps = self.draw(epoch, clip)
        return perturb(wave, factor, steps)


def perturb(wave: np.ndarray, factor: float = 1.0, semitones: float = 0.0) -> np.ndarray:
    """``wave`` (16 kHz float32) played ``factor`` times faster, then shifted by ``semitones``."""
    out = np.asarray(wave, dtype=np.float32)
    if factor != 1.0:
        import soxr

        out = soxr.resample(out, SAMPLE_RATE, SAMPLE_RATE / factor, quality="HQ").astype(np.float32)
    if semitones != 0.0 and len(out):
        import librosa

        n_fft = 2048 if len(out) >= 2048 else 1 << (len(out).bit_length() - 1)
        out = librosa.effects.pitch_shift(out, sr=SAMPLE_RATE, n_steps=semitones, res_type="soxr_hq",
                                          n_fft=n_fft).astype(np.float32)
    return out
