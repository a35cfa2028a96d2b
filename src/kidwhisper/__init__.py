"""kidwhisper: make OpenAI Whisper good at children's speech.

Pipeline: data (prepare, manifest, audio) -> models (load, convert) -> train -> evaluate -> report.
"""

__version__ = "0.1.0"
