"""Fine-tuning: strategies decide what trains, one loop trains it (see loop.py)."""

from kidwhisper.train.config import LoraConfig, TrainConfig

__all__ = ["LoraConfig", "TrainConfig", "train"]


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Fine-tune per ``config`` (see :func:`kidwhisper.train.loop.train`)."""
    from kidwhisper.train.loop import train as _train

    return _train(config, resume=resume)
