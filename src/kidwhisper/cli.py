"""The ``kidwhisper`` command: one subcommand per stage, each a thin wrapper over a library function.

Every subcommand accepts ``--config FILE.yaml`` where the stage has a config dataclass; flags given on
the command line override the file. Errors that users can fix (:func:`user_errors`: a bad flag, model,
manifest, audio file or output path, a full disk) exit with status 2 and one clear line (``-v`` adds the
traceback); any other exception is a bug and shows its traceback. Deprecation warnings that libraries
raise from their own calls (:data:`NOISY_WARNINGS`, each named) are hidden unless ``-v``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from kidwhisper.options import add_config_args, config_from_args

log = logging.getLogger("kidwhisper")

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``add_args`` (the decorated function's ``.add_args``) and a handler under ``name``."""

    def wrap(handler):
        COMMANDS[name] = (help, handler.add_args, handler)
        return handler

    return wrap


def _args(fn):
    def deco(handler):
        handler.add_args = fn
        return handler

    return deco


# ------------------------------------------------------------------------------------------ models
def _models_args(p):
    p.add_argument("--convert", action="store_true", help="convert the built-in models now (normally done on first use)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("models", "list the built-in (offline) models: source, converted or not, size, parameters")
@_args(_models_args)
def cmd_models(args) -> int:
    from kidwhisper.models.builtin import available_models, builtin_path, describe_models

    if args.convert:
        for name in available_models():
            builtin_path(name)
    rows = describe_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<17}{'converted':<11}{'size MB':>8}  {'parameters':>12}  source")
    for r in rows:
        params = f"{r['parameters']:,}" if r["parameters"] else "-"
        print(f"{r['name']:<17}{'yes' if r['converted'] else 'no':<11}{r['size_mb'] or '-':>8}  {params:>12}  "
              f"{r['source']}  ({r['description']})")
    return 0


# ----------------------------------------------------------------------------------------- prepare
def _prepare_args(p):
    from kidwhisper.data.prepare import PrepareConfig

    p.add_argument("input", help="corpus directory, manifest file, Hugging Face dataset (save_to_disk dir, "
                                 "parquet/arrow, Hub id) or lhotse manifest (kaldi | manifest | sidecar | segments | "
                                 "hf | lhotse)")
    p.add_argument("output_dir", help="where manifest.jsonl, clips/ and prepare_report.json are written (a new "
                                      "directory or an earlier prepare output, outside the input)")
    p.add_argument("--config", help="YAML/JSON file with the same options (flags override it)")
    add_config_args(p, PrepareConfig, skip=("progress",))


@command("prepare", "raw corpus -> validated 16 kHz mono clips + JSONL manifest + report")
@_args(_prepare_args)
def cmd_prepare(args) -> int:
    from kidwhisper.data.prepare import PrepareConfig, prepare

    cfg = config_from_args(PrepareConfig, args, {"progress": not args.quiet}, "prepare options")
    report = prepare(args.input, args.output_dir, cfg)
    print(json.dumps(prepare_summary(report), indent=2, default=str))
    return 0


def prepare_summary(report: dict) -> dict:
    """The few numbers of a prepare report (``prepare_report.json``) that ``kidwhisper prepare`` prints."""
    return {"input": report["input"], "kept": report["kept"], "skipped": report["skipped"]["total"],
            "minutes": report["duration"]["minutes"], "speakers": report["speakers"]["count"],
            "manifest": report["outputs"]["manifest"], "report": report["outputs"]["report"]}


# ------------------------------------------------------------------------------------------ recipe
def _recipe_args(p):
    from kidwhisper.data.recipes import RECIPES

    p.add_argument("name", choices=sorted(RECIPES), help="the public corpus to build the data sets from")
    p.add_argument("corpus_dir", help="the corpus as downloaded and unpacked (for speechocean762: train/, test/, WAVE/)")
    p.add_argument("output_dir", help="where the Kaldi sets, prepared/<set>/ and recipe_report.json are written")
    p.add_argument("--prepare", action=argparse.BooleanOptionalAction, default=None,
                   help="also run `kidwhisper prepare` on each set into OUTPUT_DIR/prepared/ (default: yes)")
    p.add_argument("--jobs", type=int, default=None, help="prepare's worker processes (default: all cores)")
    p.add_argument("--split", help="JSON file with each set's speakers (default: the split shipped with kidwhisper)")


@command("recipe", "public corpus -> the exact data sets of kidwhisper's results (Kaldi dirs + prepared)")
@_args(_recipe_args)
def cmd_recipe(args) -> int:
    from kidwhisper.data.recipes import RECIPES

    build, config_cls = RECIPES[args.name]
    kw = {k: getattr(args, k) for k in ("prepare", "jobs", "split") if getattr(args, k) is not None}
    report = build(args.corpus_dir, args.output_dir, config_cls(progress=not args.quiet, **kw))
    summary = {name: {k: s[k] for k in ("speakers", "utterances", "minutes")} for name, s in report["sets"].items()}
    print(json.dumps({"sets": summary, "left_out": {k: report["left_out"][k] for k in ("speakers", "utterances")},
                      "identical_to_published": report["identical_to_published"],
                      "prepared": {k: v["dir"] for k, v in report["prepared"].items()},
                      "report": report["outputs"]["report"]}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------- evaluate
def _evaluate_args(p):
    from kidwhisper.evaluate import EvalConfig

    p.add_argument("--config", help="YAML/JSON file with the same options (flags override it)")
    add_config_args(p, EvalConfig, skip=("progress",))
    p.add_argument("--resume", action="store_true", help="continue the evaluation in --out, skipping its finished "
                   "clips (refused if its options differ); an interrupted one in the same --out continues anyway")


@command("evaluate", "WER of a model on a manifest: normalized, orthographic, digit-aware, CIs, flags")
@_args(_evaluate_args)
def cmd_evaluate(args) -> int:
    from kidwhisper.evaluate import EvalConfig, evaluate, format_summary

    cfg = config_from_args(EvalConfig, args, {"progress": not args.quiet}, "evaluate options")
    summary = evaluate(cfg, resume=args.resume)
    print(format_summary(summary))
    print(f"written: {Path(cfg.out) / 'summary.json'}, {Path(cfg.out) / 'utterances.jsonl'}")
    return 0


# ------------------------------------------------------------------------------------------- train
def _train_args(p):
    from kidwhisper.train.config import TrainConfig

    p.add_argument("--config", help="YAML/JSON file with TrainConfig options (flags override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR/checkpoints/last (or previous, when last is damaged)")
    add_config_args(p, TrainConfig, skip=("progress",))


@command("train", "fine-tune with a named strategy (lora, lora-decoder, lora-encoder, full, encoder, decoder)")
@_args(_train_args)
def cmd_train(args) -> int:
    from kidwhisper.train import TrainConfig, train

    cfg = config_from_args(TrainConfig, args, {"progress": not args.quiet}, "train options")
    summary = train(cfg, resume=args.resume)
    print(json.dumps({k: summary.get(k) for k in ("strategy", "trainable_params", "trainable_pct", "best_dev_wer",
                                                   "best_step", "steps", "wall_seconds") if k in summary}, indent=2))
    return 0


# ----------------------------------------------------------------------------------------- compare
def _compare_args(p):
    from kidwhisper.report import CompareConfig

    p.add_argument("inputs", nargs="+", help="evaluation dirs (summary.json) and/or training run dirs")
    p.add_argument("--out", required=True, help="where report.md, report.html, comparison.csv and plots go")
    p.add_argument("--config", help="YAML/JSON file with the same options (flags override it)")
    add_config_args(p, CompareConfig)


@command("compare", "baseline vs tuned: tables, plots, report.md/html from result files only")
@_args(_compare_args)
def cmd_compare(args) -> int:
    from kidwhisper.report import CompareConfig, compare

    compare(args.inputs, args.out, config_from_args(CompareConfig, args, where="compare options"))
    print(f"written: {Path(args.out) / 'report.md'}, report.html, comparison.csv and plots")
    return 0


# -------------------------------------------------------------------------------------- model-card
def _model_card_args(p):
    p.add_argument("model_dir", help="the tuned adapter or model directory that gets README.md")
    p.add_argument("inputs", nargs="+", help="its training run directory and evaluation dirs (as for compare)")
    p.add_argument("--label", help="the configuration to describe when the inputs hold several (a compare label)")


@command("model-card", "write a Hugging Face model card (README.md) for tuned weights from result files")
@_args(_model_card_args)
def cmd_model_card(args) -> int:
    from kidwhisper.report.model_card import write_card_from_results

    print(f"written: {write_card_from_results(args.model_dir, args.inputs, args.label)}")
    return 0


# -------------------------------------------------------------------------------------- transcribe
def _transcribe_args(p):
    from kidwhisper.transcribe import TranscribeConfig

    p.add_argument("audio", nargs="+", help="audio files (wav/flac/mp3/ogg, any rate, stereo, any length)")
    p.add_argument("--config", help="YAML/JSON file with the same options (flags override it)")
    add_config_args(p, TranscribeConfig, skip=("progress",))


@command("transcribe", "transcribe audio files with a (tuned) model: text, JSON, SRT or WebVTT")
@_args(_transcribe_args)
def cmd_transcribe(args) -> int:
    import warnings

    # Deprecation notices of the libraries (peft calling transformers' is_gradient_checkpointing, ...) are
    # for their developers, not for someone transcribing a file.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|torch|accelerate)\b")
    from kidwhisper.transcribe import TranscribeConfig, format_listed, format_transcripts, transcribe_iter

    cfg = config_from_args(TranscribeConfig, args, {"progress": not args.quiet}, "transcribe options")
    results = transcribe_iter(cfg, args.audio)
    if cfg.output_dir:
        for _ in results:
            pass  # each file is written as it finishes
        print(f"written: {len(args.audio)} file(s) in {cfg.output_dir}")
    elif cfg.format == "json" or len(args.audio) == 1:
        print(format_transcripts(list(results), cfg.format))
    else:
        for r in results:  # printed as each file finishes
            print(format_listed(r, cfg.format), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ export
def _export_args(p):
    from kidwhisper.export import ExportConfig

    p.add_argument("out", help="output directory")
    p.add_argument("--config", help="YAML/JSON file with the same options (flags override it)")
    add_config_args(p, ExportConfig)


@command("export", "export a tuned model: merged Hugging Face weights, or CTranslate2 for faster-whisper")
@_args(_export_args)
def cmd_export(args) -> int:
    from kidwhisper.export import ExportConfig, export

    path = export(config_from_args(ExportConfig, args, where="export options"), args.out)
    print(f"written: {path}")
    return 0


# --------------------------------------------------------------------------------------------- run
def _run_args(p):
    p.add_argument("config", help="run config YAML (configs/quick.yaml, configs/reference.yaml)")
    p.add_argument("--out", help="override the config's output directory")
    p.add_argument("--data", help="override the config's `data:` (e.g. OUT_DIR of `kidwhisper recipe speechocean762`)")


@command("run", "the whole job from one config: prepare -> baseline -> train -> evaluate -> compare")
@_args(_run_args)
def cmd_run(args) -> int:
    from kidwhisper.pipeline import load_run_config, run

    cfg = load_run_config(args.config, {"out": args.out, "data": args.data, "progress": False if args.quiet else None})
    run(cfg)
    report = Path(cfg.out) / "report" / "report.md"
    if report.exists():
        print(report.read_text())
    print(f"written: {report}")
    return 0


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from kidwhisper import __version__

    parser = argparse.ArgumentParser(prog="kidwhisper", description="Make Whisper good at children's speech.")
    parser.add_argument("--version", action="version", version=f"kidwhisper {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "bad input" or "cannot write the output": reported in one line, exit status 2.
    Each is raised by kidwhisper with a message that names the input and the fix; anything else (a
    FileNotFoundError or ValueError from inside a library included) is a bug."""
    from kidwhisper.audio import AudioError
    from kidwhisper.config import ConfigError, OutputError
    from kidwhisper.data.manifest import ManifestError
    from kidwhisper.export import ExportError
    from kidwhisper.models.builtin import ModelError
    from kidwhisper.report.collect import CompareError

    errors: list[type[BaseException]] = [AudioError, ConfigError, ManifestError, ModelError, ExportError,
                                         OutputError, CompareError]
    try:
        from kidwhisper.data.prepare import PrepareError
        from kidwhisper.train.strategies import StrategyError

        errors += [PrepareError, StrategyError]
    except ImportError:
        pass
    from kidwhisper.data.recipes import RecipeError

    errors.append(RecipeError)
    return tuple(errors)


def _no_space(e: BaseException) -> bool:
    """A full disk or quota met somewhere no kidwhisper write translated it (a library's own cache)."""
    import errno

    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


# Deprecation notices that libraries raise from their own calls on every command; nothing a user can act on.
# (category, message regex): each filter names one known warning, so any other warning still shows.
NOISY_WARNINGS: list[tuple[type[Warning], str]] = [
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),  # peft reads it when wrapping a model
]


def quiet_library_warnings() -> None:
    """Hide :data:`NOISY_WARNINGS` (``-v`` leaves them visible)."""
    import warnings

    for category, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not args.verbose:
        quiet_library_warnings()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # transformers' generation chatter ("Both max_new_tokens and max_length...") is not for users
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    _, _, handler = COMMANDS[args.command]
    try:
        return handler(args)
    except Exception as e:
        if not (isinstance(e, user_errors()) or _no_space(e)):
            raise  # a bug: the traceback is the report
        if args.verbose:
            traceback.print_exc()
        print(f"kidwhisper {args.command}: error: {e}", file=sys.stderr)
        return 2
