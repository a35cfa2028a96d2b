"""Hugging Face datasets in: a ``save_to_disk`` directory, parquet / arrow files, or a Hub id -> raw items.

Layouts (``--format hf``)::

    kids/dataset_dict.json  kids/test/...           DatasetDict.save_to_disk; --split picks the split
    kids/state.json  kids/data-00000-of-00001.arrow  Dataset.save_to_disk (one split)
    kids/data/test-00000-of-00001.parquet           a Hub snapshot: splits named by the files (--split)
    kids.parquet | kids.arrow                       one file, one split
    owner/name                                      a Hub dataset id, where the Hub is reachable

With several splits and no ``--split`` the reader stops and lists them: each split is prepared into its
own directory, so test clips never end up in a training manifest.

The audio column is the column of type ``datasets.Audio`` (else one named like a manifest's audio
column), read with ``decode=False`` so that no torchcodec is needed: embedded bytes are written to
``ReadOptions.staging_dir`` as files and paths are used in place (relative ones resolve against the
dataset's directory); :mod:`kidwhisper.data.prepare` decodes both with soundfile like any other layout.
The text column is found by name as in a manifest (``text``, ``sentence``, ``transcription``...) or
named with ``--text-column``; ``id``, ``speaker``, ``age`` and ``gender`` columns are optional. Without
an id column a clip is named after its audio file when every row has a distinct file name, else
``<split>-<row>``. Parquet, arrow and Hub data are streamed, so nothing is copied into a cache.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from kidwhisper.data.readers import (
    AUDIO_EXTENSIONS,
    COLUMN_ALIASES,
    REASON_NO_AUDIO_ENTRY,
    InputError,
    RawItem,
    ReadOptions,
    Skip,
    _age,
    _opt,
    _walk,
    match_columns,
)

log = logging.getLogger(__name__)

HF_FILE_EXTENSIONS = (".parquet", ".arrow")
INSTALL_HINT = "pip install 'kidwhisper[hf]'  (or: pip install datasets)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name


def is_save_to_disk(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def looks_like_hub_id(value: str) -> bool:
    """``owner/name`` that is no local path: neither it nor its first part exists here."""
    return bool(_HUB_ID.match(value)) and not Path(value).exists() and not Path(value.split("/")[0]).exists()


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise InputError(f"reading Hugging Face datasets needs the `datasets` package: {INSTALL_HINT}") from e
    return datasets


# --------------------------------------------------------------------------- opening


def _pick_split(splits: list[str], label: str, wanted: str | None) -> str:
    if wanted is None:
        if len(splits) == 1:
            return splits[0]
        raise InputError(f"{label}: has splits {', '.join(splits)}; pick one with --split (prepare each split into "
                         f"its own directory)")
    if wanted not in splits:
        raise InputError(f"{label}: no split {wanted!r}; its splits are {', '.join(splits) or 'none'}")
    return wanted


def _probe_hub(repo_id: str, datasets: Any) -> None:
    """Fail fast, in one line, when the Hub cannot serve ``repo_id`` (load_dataset retries for ~20 s)."""
    if getattr(datasets.config, "HF_HUB_OFFLINE", False):
        return  # offline mode: load_dataset answers from the local cache
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    local_copy = (f"use a local copy: where the Hub is reachable run `datasets.load_dataset({repo_id!r})"
                  f".save_to_disk(DIR)` (or `hf download {repo_id} --repo-type dataset --local-dir DIR`) and pass DIR")
    try:
        HfApi().dataset_info(repo_id, timeout=10)
    except RepositoryNotFoundError as e:
        raise InputError(f"{repo_id}: no such dataset on the Hugging Face Hub (or it is private/gated: log in "
                         f"with `hf auth login`); check the id, or {local_copy}") from e
    except Exception as e:  # noqa: BLE001 - network errors have the HTTP client's own types
        reason = (str(e).splitlines() or [""])[0][:120]
        raise InputError(f"{repo_id}: not a local path, and the Hugging Face Hub is unreachable "
                         f"({type(e).__name__}: {reason}); {local_copy}") from e


def _open(source: Path | str, options: ReadOptions) -> tuple[Any, str, Path | None, str]:
    """-> (dataset of one split, split name, directory for relative audio paths, label for messages)."""
    datasets = _datasets()
    cache = str(options.staging_dir / "hf-cache") if options.staging_dir else None
    if isinstance(source, str):  # a Hub id
        _probe_hub(source, datasets)
        try:
            splits = datasets.load_dataset(source, streaming=True, cache_dir=cache)
        except (ConnectionError, OSError) as e:
            raise InputError(f"{source}: cannot load it from the Hugging Face Hub ({e}); pass a local copy") from e
        split = _pick_split(list(splits), source, options.split)
        return splits[split], split, None, source
    path = Path(source)
    if path.is_dir() and is_save_to_disk(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            split = _pick_split(list(loaded), str(path), options.split)
            return loaded[split], split, path, str(path)
        if options.split is not None and loaded.split != options.split:
            raise InputError(f"{path}: holds one dataset{f' (split {loaded.split})' if loaded.split else ''}, "
                             f"not split {options.split!r}; drop --split")
        return loaded, str(loaded.split or "train"), path, str(path)
    if path.is_file():
        if options.split is not None:
            raise InputError(f"{path}: one file holds one split; drop --split, or pass the directory holding "
                             f"the files of every split")
        builder = path.suffix.lower().lstrip(".")
        splits = datasets.load_dataset(builder, data_files=str(path), streaming=True, cache_dir=cache)
        return splits["train"], path.stem, path.parent, str(path)
    if not _walk(path, HF_FILE_EXTENSIONS):
        raise InputError(f"{path}: not a Hugging Face dataset (no save_to_disk files, no .parquet/.arrow files)")
    splits = datasets.load_dataset(str(path), streaming=True, cache_dir=cache)
    split = _pick_split(list(splits), str(path), options.split)
    return splits[split], split, path, str(path)


def _audio_column(features: dict[str, Any] | None, names: list[str], datasets: Any) -> str | None:
    typed = [n for n, f in (features or {}).items() if isinstance(f, datasets.Audio)]
    by_name = match_columns(typed or names)["audio"]
    return by_name or (typed[0] if typed else None)


# --------------------------------------------------------------------------- rows


def _stage(data: bytes, name: str | None, row: int, staging: Path | None, label: str) -> Path:
    if staging is None:
        raise InputError(f"{label}: the audio is embedded in the dataset and no staging directory was given; "
                         f"call kidwhisper.data.prepare.prepare (it provides one)")
    suffix = Path(name).suffix.lower() if name else ""
    path = staging / "hf" / f"{row:08d}{suffix if suffix in AUDIO_EXTENSIONS else '.audio'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _audio(value: Any, row: int, base: Path | None, options: ReadOptions, label: str
           ) -> tuple[Path | None, str | None, str | None]:
    """An ``Audio(decode=False)`` value (or a plain path) -> (audio file, source to record, file name)."""
    if isinstance(value, dict):
        data, name = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, name = bytes(value), None
    else:
        data, name = None, None if value is None else str(value)
    if data:
        return _stage(data, name, row, options.staging_dir, label), None, name
    if not name:
        return None, None, None
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path, str(path), name


def read_hf(source: Path | str, options: ReadOptions | None = None) -> tuple[list[RawItem], list[Skip]]:
    """A Hugging Face dataset (see the module docstring for the accepted forms) -> (items, skips)."""
    from tqdm import tqdm

    options = options or ReadOptions()
    datasets = _datasets()
    ds, split, base, label = _open(source, options)
    names = list(ds.column_names or ds.features or [])
    columns = match_columns(names, options.text_column)
    columns["audio"] = _audio_column(ds.features, names, datasets)
    if columns["audio"] is None or columns["text"] is None:
        missing = " and ".join(k for k in ("audio", "text") if columns[k] is None)
        fix = (f"--text-column {options.text_column!r} is not one of them" if options.text_column
               else f"name the transcript column with --text-column (found by name: "
                    f"{'/'.join(COLUMN_ALIASES['text'][:4])}...)")
        raise InputError(f"{label}[{split}]: no {missing} column among {names}; {fix}")
    wanted = [c for c in dict.fromkeys(columns.values()) if c is not None and c in names]
    ds = ds.select_columns(wanted)
    if isinstance((ds.features or {}).get(columns["audio"]), datasets.Audio):
        ds = ds.cast_column(columns["audio"], datasets.Audio(decode=False))  # bytes/path, no torchcodec

    items: list[RawItem] = []
    skips: list[Skip] = []
    file_names: list[str | None] = []  # per item, for ids when the dataset has no id column
    for row, record in enumerate(tqdm(ds, desc=f"reading {split}", unit="row", disable=not options.progress)):
        origin = f"{label}[{split}] row {row}"

        def get(key: str, record: dict = record) -> Any:
            return None if columns[key] is None else record.get(columns[key])

        utt = _opt(get("id"))
        audio, recorded, name = _audio(get("audio"), row, base, options, label)
        if audio is None:
            skips.append(Skip(REASON_NO_AUDIO_ENTRY, origin, "empty audio (no bytes, no path)", utt))
            continue
        text = get("text")
        items.append(RawItem(utt or f"{split}-{row}", audio, "" if text is None else str(text), speaker=_opt(get("speaker")),
                             age=_age(get("age")), gender=_opt(get("gender")), origin=origin,
                             source=recorded or f"{label}[{split}][{row}]"))
        file_names.append(Path(name).stem if name else None)
    if columns["id"] is None:
        _name_by_file(items, file_names)
    log.info("%s[%s]: %d rows with audio (columns: %s)", label, split, len(items),
             ", ".join(f"{k}={v}" for k, v in columns.items() if v is not None))
    return items, skips


def _name_by_file(items: list[RawItem], file_names: list[str | None]) -> None:
    """Ids from the audio file names when every row has a distinct one (else they stay ``<split>-<row>``)."""
    if all(file_names) and len(set(file_names)) == len(file_names):
        for item, name in zip(items, file_names, strict=True):
            item.id = str(name)
