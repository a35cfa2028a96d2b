"""The ``kidwhisper`` command: one subcommand per stage, each a thin wrapper over a library function.

Every subcommand accepts ``--config FILE.yaml`` where the stage has a config dataclass; flags given on
the command line override the file. Errors that users can fix exit with status 2 and one clear line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

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


def _config_from(cls, args: argparse.Namespace, names: list[str], required: list[str]):
    """Merge ``--config FILE`` with explicit flags (flags win) into dataclass ``cls``."""
    from kidwhisper.config import ConfigError, from_dict, read_config_file

    data = read_config_file(args.config) if getattr(args, "config", None) else {}
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            data[n] = v
    missing = [n for n in required if data.get(n) is None]
    if missing:
        raise ConfigError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return from_dict(cls, data, where=f"{args.command} options")


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
    p.add_argument("input", help="corpus directory or manifest file (kaldi | manifest | sidecar | segments)")
    p.add_argument("output_dir", help="where manifest.jsonl, clips/ and prepare_report.json are written")
    p.add_argument("--format", choices=["auto", "kaldi", "manifest", "sidecar", "segments"], default=None)
    p.add_argument("--min-duration", dest="min_duration", type=float, default=None, help="seconds (default 0.3)")
    p.add_argument("--max-duration", dest="max_duration", type=float, default=None, help="seconds, <= 30 (default 30)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")


@command("prepare", "raw corpus -> validated 16 kHz mono clips + JSONL manifest + report")
@_args(_prepare_args)
def cmd_prepare(args) -> int:
    from kidwhisper.data.prepare import PrepareConfig, prepare

    kw = {k: getattr(args, k) for k in ("format", "min_duration", "max_duration", "jobs") if getattr(args, k) is not None}
    report = prepare(args.input, args.output_dir, PrepareConfig(progress=not args.quiet, **kw))
    print(json.dumps({k: report[k] for k in report if k in ("kept", "skipped_total", "total_minutes", "n_speakers")
                      or k.startswith("input")}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------- evaluate
EVAL_FLAGS = ["model", "adapter", "data", "out", "language", "batch_size", "beam_size", "max_new_tokens", "device", "limit"]


def _evaluate_args(p):
    p.add_argument("--model", help="built-in name (whisper-base, whisper-tiny.en), HF/CTranslate2 dir or Hub id")
    p.add_argument("--adapter", help="LoRA adapter directory (RUN_DIR/adapter)")
    p.add_argument("--data", help="manifest.jsonl (or its directory) from `kidwhisper prepare`, or a corpus dir")
    p.add_argument("--out", help="output directory for summary.json and utterances.jsonl")
    p.add_argument("--language", help="force this language (default en), or 'auto' to let the model guess")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--beam-size", dest="beam_size", type=int)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--limit", type=int, help="only the first N clips")
    p.add_argument("--config", help="YAML/JSON file with the same options")


@command("evaluate", "WER of a model on a manifest: normalized, orthographic, digit-aware, CIs, flags")
@_args(_evaluate_args)
def cmd_evaluate(args) -> int:
    from kidwhisper.evaluate import EvalConfig, evaluate, format_summary

    cfg = _config_from(EvalConfig, args, EVAL_FLAGS, ["model", "data", "out"])
    cfg.progress = not args.quiet
    summary = evaluate(cfg)
    print(format_summary(summary))
    print(f"written: {Path(cfg.out) / 'summary.json'}, {Path(cfg.out) / 'utterances.jsonl'}")
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
    """Exceptions that mean "bad input": reported in one line, exit status 2."""
    from kidwhisper.audio import AudioError
    from kidwhisper.config import ConfigError
    from kidwhisper.data.manifest import ManifestError
    from kidwhisper.models.builtin import ModelError

    errors: list[type[BaseException]] = [AudioError, ConfigError, ManifestError, ModelError, FileNotFoundError]
    try:
        from kidwhisper.data.prepare import PrepareError

        errors.append(PrepareError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
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
    except user_errors() as e:
        print(f"kidwhisper {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # config validation in __post_init__
        print(f"kidwhisper {args.command}: error: {e}", file=sys.stderr)
        return 2
