"""Recipes: a public corpus as released -> the exact data sets kidwhisper's results are computed on.

A recipe reads a corpus the user downloaded (nothing is downloaded here), selects the utterances of a
split that ships with the package (speaker ids only), writes Kaldi data directories that ``kidwhisper
prepare`` and ``kidwhisper run`` read, and reports what it left out. ``RECIPES`` maps the name used by
``kidwhisper recipe NAME`` to the library function and its config dataclass.
"""

from __future__ import annotations

from kidwhisper.data.recipes.speechocean762 import RecipeError, Speechocean762Config, speechocean762

RECIPES = {"speechocean762": (speechocean762, Speechocean762Config)}

__all__ = ["RECIPES", "RecipeError", "Speechocean762Config", "speechocean762"]
