"""``kidwhisper recipe speechocean762 CORPUS_DIR OUT_DIR``: the public speechocean762 release -> the four sets.

speechocean762 (Zhang et al., Interspeech 2021, arXiv:2104.01378; Apache-2.0) holds 5000 English
sentences read by 250 Mandarin-L1 speakers, children and adults, 20 sentences each. It is published at
https://www.openslr.org/101/ (SLR101) and https://github.com/jimbozhang/speechocean762. This module reads
the release as published::

    CORPUS_DIR/
      train/  test/       one Kaldi directory per release split (no speaker is in both)
        wav.scp           <utt-id><TAB>WAVE/SPEAKER<spk>/<utt-id>.WAV   (paths relative to CORPUS_DIR)
        text              <utt-id><TAB><PROMPT IN UPPER CASE>
        utt2spk  spk2age  spk2gender           <key> <value>   (spk2utt and the score files are not read)
      WAVE/SPEAKER<spk>/<utt-id>.WAV           16 kHz mono 16-bit PCM

Keys and values may be separated by tabs or spaces; runs of whitespace inside a value become one space.
``CORPUS_DIR`` may also be the folder the archive was unpacked into, holding one ``speechocean762/``.

The sets are the ones kidwhisper's published results are computed on. Their speakers ship with the
package (``kidwhisper/assets/speechocean762_split.json``), each set with the release split its speakers
come from, its utterance count and the checksums of its published files:

    speechocean762-kids/train    52 children (6-12) of the release's train split
    speechocean762-kids/dev      11 children of the release's test split
    speechocean762-kids/test     31 children of the release's test split
    speechocean762-adults/test   16 adults of the release's test split

Every utterance of a set's speakers is kept. Output, in the layout of kidwhisper's published data::

    OUT_DIR/<set>/text          <utt-id> <TRANSCRIPT>        lines sorted by utt id, one space, "\\n"
    OUT_DIR/<set>/wav.scp       <utt-id> audio/<utt-id>.flac
    OUT_DIR/<set>/utt2spk       <utt-id> <speaker-id>
    OUT_DIR/<set>/spk2age       <speaker-id> <age>           lines sorted by speaker id
    OUT_DIR/<set>/spk2gender    <speaker-id> m|f
    OUT_DIR/<set>/audio/<utt-id>.flac     the release's samples as 16 kHz mono 16-bit FLAC
    OUT_DIR/prepared/<name>/    ``kidwhisper prepare`` of each set: kids-train, kids-dev, kids-test, adults-test
    OUT_DIR/recipe_report.json  per set: speakers, utterances, skips, and which files match the published ones;
                                the release's speakers in no set (left out), by release split
    OUT_DIR/recipe_config.json  the resolved Speechocean762Config

Checksums (:func:`checksums`) are the sha256 of each Kaldi file and an audio sha256 over the utterances
in wav.scp order (utt id, sample count, int16 little-endian samples), so a rebuilt set is compared with
the published one sample for sample, whichever FLAC encoder wrote it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kidwhisper.audio import SAMPLE_RATE, AudioError, read_audio, to_mono_16k
from kidwhisper.data.manifest import atomic_write_text

log = logging.getLogger(__name__)

DOWNLOAD = "https://www.openslr.org/101/ or https://github.com/jimbozhang/speechocean762"
RELEASE_SPLITS = ("train", "test")
RELEASE_FILES = ("wav.scp", "text", "utt2spk", "spk2age", "spk2gender")  # read from each release split
KALDI_FILES = ("text", "wav.scp", "utt2spk", "spk2age", "spk2gender")  # written to each set
AUDIO_DIR = "audio"
PREPARED_DIR = "prepared"
REPORT_NAME = "recipe_report.json"
CONFIG_NAME = "recipe_config.json"
SPLIT_ASSET = "speechocean762_split.json"

REASON_NO_TRANSCRIPT = "no line in text"
REASON_NO_AUDIO_ENTRY = "no line in wav.scp"
REASON_MISSING_AUDIO = "audio file not found"
REASON_UNREADABLE = "unreadable audio"


class RecipeError(ValueError):
    """The corpus is missing or not in the release layout, or the split file is unusable; names the fix."""


@dataclass
class Speechocean762Config:
    """Options of ``kidwhisper recipe speechocean762`` (each field is the flag of the same name)."""

    prepare: bool = True  # also run `kidwhisper prepare` on each set, into OUT_DIR/prepared/<name>
    jobs: int = 0  # prepare's worker processes, 0 = all available cores
    split: str | None = None  # JSON file with each set's speakers; None = the split shipped with kidwhisper
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise ValueError(f"`--jobs` must be >= 0 (0 = all cores); got {self.jobs}")


@dataclass
class SetResult:
    """What the recipe wrote for one set (an entry of the report)."""

    name: str
    dir: str
    release_split: list[str]  # release splits the set's speakers were found in
    speakers: int
    utterances: int
    minutes: float
    missing_speakers: list[str] = field(default_factory=list)  # in the split file, not in the corpus
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> utt ids
    converted: list[str] = field(default_factory=list)  # utts whose audio was not 16 kHz mono 16-bit
    sha256: dict[str, str] = field(default_factory=dict)
    matches_published: dict[str, bool] = field(default_factory=dict)  # file (or "audio") -> equal


@dataclass
class _Release:
    """Both release splits, pooled (utt ids and speaker ids are unique across them)."""

    root: Path
    wav: dict[str, str] = field(default_factory=dict)  # utt -> path relative to root
    text: dict[str, str] = field(default_factory=dict)
    utt2spk: dict[str, str] = field(default_factory=dict)
    spk2age: dict[str, str] = field(default_factory=dict)
    spk2gender: dict[str, str] = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)  # speaker -> release split


# --------------------------------------------------------------------------- split and checksums


def load_split(path: str | Path | None = None) -> dict:
    """The split file (default: the one shipped in ``kidwhisper/assets``), checked for the fields used."""
    source = files("kidwhisper") / "assets" / SPLIT_ASSET if path is None else Path(path)
    try:
        split = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RecipeError(f"{source}: cannot read the split file ({e}); pass a JSON file like "
                          f"kidwhisper/assets/{SPLIT_ASSET} to --split, or leave --split out") from e
    sets = split.get("sets") if isinstance(split, dict) else None
    if not isinstance(sets, dict) or not sets:
        raise RecipeError(f"{source}: no `sets` mapping; see kidwhisper/assets/{SPLIT_ASSET} for the format")
    for name, entry in sets.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("speakers"), list) or not entry.get("prepared"):
            raise RecipeError(f"{source}: set {name!r} needs a `speakers` list and a `prepared` name")
    return split


def _audio_digest(h: hashlib._Hash, utt: str, pcm: np.ndarray) -> None:
    h.update(f"{utt}\t{len(pcm)}\n".encode())
    h.update(pcm.astype("<i2").tobytes())


def checksums(set_dir: str | Path) -> dict[str, str]:
    """sha256 of each Kaldi file of a set and of its audio samples (see the module docstring)."""
    import soundfile as sf

    set_dir = Path(set_dir)
    sums = {name: hashlib.sha256((set_dir / name).read_bytes()).hexdigest() for name in KALDI_FILES}
    h = hashlib.sha256()
    for line in (set_dir / "wav.scp").read_text(encoding="utf-8").splitlines():
        utt, path = line.split(maxsplit=1)
        _audio_digest(h, utt, sf.read(str(set_dir / path), dtype="int16")[0])
    sums["audio"] = h.hexdigest()
    return sums


def describe_sets(data_root: str | Path, split: dict) -> dict:
    """``split`` with each set's speakers, utterance count and checksums read from built sets under
    ``data_root`` (how the shipped split file is made from the published data)."""
    out = {**split, "sets": {}}
    for name, entry in split["sets"].items():
        set_dir = Path(data_root) / name
        utt2spk = _table(set_dir / "utt2spk")
        out["sets"][name] = {**entry, "speakers": sorted(set(utt2spk.values())), "utterances": len(utt2spk),
                             "sha256": checksums(set_dir)}
    return out


# --------------------------------------------------------------------------- the release


def _table(path: Path) -> dict[str, str]:
    """``<key><whitespace><value>`` lines -> {key: value with whitespace runs made one space}."""
    table = {}
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path}:{lineno}: not UTF-8 ({e}); the file is damaged, download the corpus again "
                              f"from {DOWNLOAD}") from e
        fields = line.split(maxsplit=1)
        if fields:
            table[fields[0]] = " ".join(fields[1].split()) if len(fields) > 1 else ""
    return table


def _missing(root: Path) -> list[str]:
    missing = [f"{s}/{f}" for s in RELEASE_SPLITS for f in RELEASE_FILES if not (root / s / f).is_file()]
    return missing + ([] if (root / "WAVE").is_dir() else ["WAVE/"])


def find_release(corpus_dir: str | Path) -> Path:
    """The release root: ``corpus_dir`` or its single ``speechocean762/``; RecipeError says where to get it."""
    root = Path(corpus_dir).expanduser()
    where = (f"download speechocean762 from {DOWNLOAD} (kidwhisper downloads nothing), unpack it and pass the "
             f"directory that holds train/, test/ and WAVE/")
    if not root.is_dir():
        raise RecipeError(f"{root}: speechocean762 corpus not found; {where}")
    missing = _missing(root)
    nested = root / "speechocean762"
    if missing and nested.is_dir() and not _missing(nested):
        log.info("reading the release in %s", nested)
        return nested
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise RecipeError(f"{root}: not the speechocean762 release layout ({shown} missing; each of train/ and "
                          f"test/ needs {', '.join(RELEASE_FILES)}); {where}")
    return root


def read_release(root: Path) -> _Release:
    """Both splits' Kaldi files -> one pooled :class:`_Release`."""
    release = _Release(root)
    for split in RELEASE_SPLITS:
        tables = {name: _table(root / split / name) for name in RELEASE_FILES}
        release.wav.update(tables["wav.scp"])
        release.text.update(tables["text"])
        release.utt2spk.update(tables["utt2spk"])
        release.spk2age.update(tables["spk2age"])
        release.spk2gender.update(tables["spk2gender"])
        for speaker in sorted(set(tables["utt2spk"].values())):
            if release.split_of.setdefault(speaker, split) != split:
                log.warning("speaker %s is in both release splits; counted in %s", speaker, release.split_of[speaker])
    return release


# --------------------------------------------------------------------------- one set


def _pcm16(path: Path) -> tuple[np.ndarray, bool]:
    """The file's samples as 16 kHz mono int16 and whether they had to be converted to that."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16"):
            return sf.read(str(path), dtype="int16")[0], False
    except (RuntimeError, OSError):  # not for libsndfile: read_audio tries PyAV (or raises AudioError)
        pass
    data, rate = read_audio(path)
    pcm = np.clip(np.round(to_mono_16k(data, rate) * 32768.0), -32768, 32767).astype(np.int16)
    return pcm, True


def _write_flac(path: Path, pcm: np.ndarray) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def build_set(release: _Release, name: str, speakers: list[str], out: Path, bar: tqdm | None = None) -> SetResult:
    """Write one set: every utterance of ``speakers`` (audio as FLAC, Kaldi files) into ``out``."""
    wanted = set(speakers)
    utts = sorted(u for u, s in release.utt2spk.items() if s in wanted)
    missing = sorted(wanted - set(release.utt2spk.values()))
    if not utts:
        log.warning("%s: none of its %d speakers is in the corpus; not written", name, len(wanted))
        return SetResult(name, str(out), [], 0, 0, 0.0, missing)
    skipped: dict[str, list[str]] = defaultdict(list)
    converted: list[str] = []
    kept: list[str] = []
    audio_dir = out / AUDIO_DIR
    audio_dir.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    samples = 0
    for utt in utts:
        if bar is not None:
            bar.update(1)
        if utt not in release.text:
            skipped[REASON_NO_TRANSCRIPT].append(utt)
            continue
        if utt not in release.wav:
            skipped[REASON_NO_AUDIO_ENTRY].append(utt)
            continue
        src = release.root / release.wav[utt]
        if not src.is_file():
            skipped[REASON_MISSING_AUDIO].append(utt)
            continue
        try:
            pcm, was_converted = _pcm16(src)
        except AudioError as e:
            log.warning("%s: %s", utt, e)
            skipped[REASON_UNREADABLE].append(utt)
            continue
        if was_converted:
            converted.append(utt)
        _write_flac(audio_dir / f"{utt}.flac", pcm)
        _audio_digest(h, utt, pcm)
        samples += len(pcm)
        kept.append(utt)
    keep = {f"{u}.flac" for u in kept}
    for stale in audio_dir.iterdir():
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    spk = sorted({release.utt2spk[u] for u in kept})
    contents = {
        "text": [f"{u} {release.text[u]}" for u in kept],
        "wav.scp": [f"{u} {AUDIO_DIR}/{u}.flac" for u in kept],
        "utt2spk": [f"{u} {release.utt2spk[u]}" for u in kept],
        "spk2age": [f"{s} {release.spk2age[s]}" for s in spk if s in release.spk2age],
        "spk2gender": [f"{s} {release.spk2gender[s]}" for s in spk if s in release.spk2gender],
    }
    sums = {}
    for file, lines in contents.items():
        text = "".join(line + "\n" for line in lines)
        atomic_write_text(out / file, text)
        sums[file] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    sums["audio"] = h.hexdigest()
    for reason, ids in skipped.items():
        log.warning("%s: %d utterance(s) skipped, %s: %s", name, len(ids), reason, ", ".join(ids[:5]))
    if converted:
        log.warning("%s: %d file(s) were not 16 kHz mono 16-bit and were converted (e.g. %s)", name,
                    len(converted), release.wav[converted[0]])
    return SetResult(name, str(out), sorted({release.split_of[s] for s in spk}), len(spk), len(kept),
                     round(samples / SAMPLE_RATE / 60, 2), missing, dict(skipped), converted, sums)


# --------------------------------------------------------------------------- the recipe


def speechocean762(corpus_dir: str | Path, output_dir: str | Path, config: Speechocean762Config | None = None) -> dict:
    """Build the sets of the split file from the release in ``corpus_dir`` into ``output_dir``.

    Returns the report (also written to ``OUTPUT_DIR/recipe_report.json``). Raises RecipeError when the
    corpus is missing or not in the release layout, or when none of the split's speakers is in it.
    """
    config = config or Speechocean762Config()
    split = load_split(config.split)
    root = find_release(corpus_dir)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{out}: output exists and is not a directory; pass a directory for OUT_DIR")
    release = read_release(root)
    sets = split["sets"]
    in_sets = {s for entry in sets.values() for s in entry["speakers"]}
    n_wanted = sum(1 for s in release.utt2spk.values() if s in in_sets)
    if not n_wanted:
        raise RecipeError(f"{root}: none of the {len(in_sets)} speakers of the split is in the corpus "
                          f"(train/utt2spk, test/utt2spk); is it speechocean762? Get it from {DOWNLOAD}")

    results: dict[str, SetResult] = {}
    with tqdm(total=n_wanted, unit="utt", desc="speechocean762", disable=not config.progress) as bar:
        for name, entry in sets.items():
            result = build_set(release, name, entry["speakers"], out / name, bar)
            published = entry.get("sha256") or {}
            result.matches_published = {k: published.get(k) == v for k, v in result.sha256.items() if published}
            if result.missing_speakers:
                log.warning("%s: %d speaker(s) of the split are not in the corpus (e.g. %s; all in %s)", name,
                            len(result.missing_speakers), " ".join(result.missing_speakers[:5]), REPORT_NAME)
            expected = entry.get("release_split")
            if expected and result.release_split not in ([], [expected]):
                log.warning("%s: speakers found in release split(s) %s, the split file says %s", name,
                            result.release_split, expected)
            results[name] = result

    left_out: dict[str, list[str]] = defaultdict(list)
    for speaker, rsplit in sorted(release.split_of.items()):
        if speaker not in in_sets:
            left_out[rsplit].append(speaker)
    n_left_utts = sum(1 for s in release.utt2spk.values() if s not in in_sets)
    no_speaker = sorted(set(release.wav) - set(release.utt2spk))

    prepared = {}
    if config.prepare:
        from kidwhisper.data.prepare import PrepareConfig, prepare

        for name, entry in sets.items():
            if not results[name].utterances:
                log.warning("%s: no utterances, not prepared", name)
                continue
            target = out / PREPARED_DIR / entry["prepared"]
            rep = prepare(out / name, target, PrepareConfig(jobs=config.jobs, progress=config.progress))
            prepared[entry["prepared"]] = {"dir": str(target), "kept": rep["kept"],
                                           "skipped": rep["skipped"]["total"]}

    identical = all(r.matches_published and all(r.matches_published.values()) for r in results.values())
    report = {
        "recipe": "speechocean762",
        "corpus": str(root.resolve()),
        "release": {s: {"speakers": sum(1 for v in release.split_of.values() if v == s),
                        "utterances": sum(1 for v in release.utt2spk.values() if release.split_of[v] == s)}
                    for s in RELEASE_SPLITS},
        "sets": {name: asdict(r) for name, r in results.items()},
        "left_out": {"speakers": sum(len(v) for v in left_out.values()), "utterances": n_left_utts,
                     "by_release_split": dict(left_out), "utterances_without_speaker": len(no_speaker)},
        "identical_to_published": identical,
        "prepared": prepared,
        "config": asdict(config),
        "outputs": {"report": str(out / REPORT_NAME), "config": str(out / CONFIG_NAME)},
    }
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / CONFIG_NAME, json.dumps(asdict(config), indent=2) + "\n")
    if identical:
        log.info("speechocean762: %d sets identical to the published ones -> %s", len(results), out)
    else:
        differ = {n: sorted(k for k, ok in r.matches_published.items() if not ok) for n, r in results.items()}
        log.warning("speechocean762: sets differ from the published ones (files: %s); see %s", differ,
                    out / REPORT_NAME)
    log.info("speechocean762: left out %d speakers (%d utterances) that are in no set", report["left_out"]["speakers"],
             n_left_utts)
    return report
