"""Training throughput: the plain Hugging Face recipe vs kidwhisper's default, side by side in one run.

Both train the same LoRA (r=16, alpha=32, dropout 0.05 on q,k,v,out_proj) on the same whisper-base, the
same clips, for the same number of epochs, with the same learning rate and schedule:

- **hf-recipe**: one clip per 30 s window, ``Seq2SeqTrainer`` defaults, features computed up front, the
  ``DataCollatorSpeechSeq2SeqWithPadding`` collator of the Hugging Face Whisper fine-tuning blog;
- **kidwhisper**: ``kidwhisper.train`` with its defaults but no SpecAugment, like the plain recipe (clips
  packed into <= 25 s windows, ~7 clips each, ``pack_mode=isolated``: each clip trained as if alone in the
  window, see ``kidwhisper.train.clipwise``), one window per step, so both systems make about the same
  number of optimizer steps on about the same clips per step;
- further kidwhisper variants given with ``--variant NAME:key=value,...`` (``TrainConfig`` fields, e.g.
  ``kidwhisper-joined:pack_mode=joined,pack_seconds=30`` is the first packing recipe, one joined transcript
  per 30 s window; ``kidwhisper-bf16:mixed_precision=bf16`` autocasts to bf16 on a CPU that has it).

Each system runs in its own subprocess (so its peak memory is its own); then every adapter is scored on
the same dev clips with ``kidwhisper evaluate``. Reports clips/s, peak RSS, dev WER as decoded and
guarded (runaway hypotheses cut to a duration budget, see ``kidwhisper.evaluate``), hallucination flags,
and the error rate of each clip's first reference word (packing trains the start of a transcript only
once per window, so that is where it differs first). Each variant's dev WER minus the plain recipe's comes
with a paired speaker-bootstrap 95 % CI (``kidwhisper.metrics.paired_difference``).

    python bench/train_throughput.py --train data/kids-train --dev data/kids-dev --n-train 240 \
        --variant kidwhisper-joined:pack_mode=joined,pack_seconds=30 --variant kidwhisper-bf16:mixed_precision=bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bench")

LR = 1e-3


def run_hf_recipe(model: str, train_manifest: str, out: Path, epochs: int, batch_size: int, n: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    from kidwhisper.audio import load_audio
    from kidwhisper.data.manifest import audio_path, read_manifest
    from kidwhisper.models.load import load_model
    from kidwhisper.train.batching import target_text

    net, processor = load_model(model, device="cpu")
    net.train()
    clips = read_manifest(train_manifest)[:n]
    processor.tokenizer.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
    data = []
    for c in clips:  # the blog's prepare_dataset: log-mel of the clip padded to 30 s, labels
        audio = load_audio(audio_path(c, train_manifest))
        feats = processor.feature_extractor(audio, sampling_rate=16000).input_features[0]
        data.append({"input_features": feats, "labels": processor.tokenizer(target_text(c.text)).input_ids})

    @dataclass
    class DataCollatorSpeechSeq2SeqWithPadding:  # verbatim logic of the Hugging Face blog collator
        processor: object
        decoder_start_token_id: int

        def __call__(self, features):
            input_features = [{"input_features": f["input_features"]} for f in features]
            batch = self.processor.feature_extractor.pad(input_features, return_tensors="pt")
            label_features = [{"input_ids": f["labels"]} for f in features]
            labels_batch = self.processor.tokenizer.pad(label_features, return_tensors="pt")
            labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
            if (labels[:, 0] == self.decoder_start_token_id).all().cpu().item():
                labels = labels[:, 1:]
            batch["labels"] = labels
            return batch

    net = get_peft_model(net, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                         target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
    args = Seq2SeqTrainingArguments(output_dir=str(out / "hf-trainer"), per_device_train_batch_size=batch_size,
                                    learning_rate=LR, num_train_epochs=epochs,
                                    warmup_steps=round(0.1 * epochs * math.ceil(len(data) / batch_size)),
                                    lr_scheduler_type="cosine", logging_steps=1, save_strategy="no",
                                    report_to=[], remove_unused_columns=False, label_names=["labels"],
                                    use_cpu=not torch.cuda.is_available(), seed=0)
    trainer = Seq2SeqTrainer(model=net, args=args, train_dataset=data,
                             data_collator=DataCollatorSpeechSeq2SeqWithPadding(processor, net.config.decoder_start_token_id))
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    net.save_pretrained(out / "adapter")
    return {"train_seconds": round(wall, 2), "clips": len(clips) * epochs,
            "steps": trainer.state.global_step}


def run_kidwhisper(model: str, train_manifest: str, dev_manifest: str, out: Path, epochs: int,
                   batch_size: int, n: int, options: dict) -> dict:
    from kidwhisper.data.manifest import audio_path, read_manifest, write_manifest
    from kidwhisper.train import TrainConfig, train

    clips = read_manifest(train_manifest)[:n]
    for c in clips:
        c.audio = str(audio_path(c, train_manifest))
    sub = write_manifest(clips, out / "train-subset" / "manifest.jsonl")
    kw = dict(model=model, train=str(sub), dev=dev_manifest, out=str(out / "run"), strategy="lora", epochs=epochs,
              batch_size=batch_size, lr=LR, patience=None, eval_every=10**6, dev_max_clips=8, progress=False,
              spec_augment=False)  # as the plain recipe (and every committed result); a variant may turn it on
    config = TrainConfig(**{**kw, **options})
    s = train(config)
    return {"train_seconds": s["train_seconds"], "clips": s.get("clips_seen", len(clips) * epochs),
            "steps": s.get("steps"), "windows_per_epoch": s["n_windows"], "clips_per_window": s.get("clips_per_window"),
            "options": options, "pack": {"mode": config.pack_mode, "seconds": config.pack_seconds,
                                         "precision": s["mixed_precision"]}}


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME:key=value,key=value`` (values parsed as YAML scalars) -> (name, options)."""
    import yaml

    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected key=value, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    if not name or name == "hf-recipe":
        raise SystemExit(f"--variant {text!r}: give the variant a name other than hf-recipe")
    return name, options


def first_word_error(utterances: Path) -> float:
    """Share of clips whose first reference word is not matched in the alignment (normalized text)."""
    import jiwer

    missed = n = 0
    for line in utterances.read_text().splitlines():
        u = json.loads(line)
        ref, hyp = u["ref_norm"]["whisper"], u["hyp_norm"]["whisper"]
        if not ref.split():
            continue
        n += 1
        if not hyp.split():
            missed += 1
            continue
        chunks = jiwer.process_words(ref, hyp).alignments[0]
        missed += not any(c.type == "equal" and c.ref_start_idx == 0 for c in chunks)
    return missed / max(n, 1)


def child(args) -> None:
    out = Path(args.out_dir) / args.system
    shutil.rmtree(out, ignore_errors=True)  # a fresh run every time (an earlier run would be refused)
    out.mkdir(parents=True)
    if args.system == "hf-recipe":
        r = run_hf_recipe(args.model, args.train, out, args.epochs, args.batch_size, args.n_train)
    else:
        r = run_kidwhisper(args.model, args.train, args.dev, out, args.epochs, args.windows_per_step, args.n_train,
                           json.loads(args.options))
    r["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / "result.json").write_text(json.dumps(r, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--train", default="data/kids-train")
    p.add_argument("--dev", default="data/kids-dev")
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-dev", type=int, default=None, help="first N dev clips (default: all)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="hf-recipe: clips per step")
    p.add_argument("--windows-per-step", type=int, default=1, help="kidwhisper: packed windows per step")
    p.add_argument("--out-dir", default="runs/bench-train")
    p.add_argument("--out", default="bench/results/train_throughput.json")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value,...",
                   help="also train this kidwhisper variant (TrainConfig options); repeatable")
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.system:
        return child(args)
    from kidwhisper.config import machine_info, package_versions
    from kidwhisper.evaluate import EvalConfig, evaluate
    from kidwhisper.report import paired_eval_difference

    systems = [("kidwhisper", {})] + [parse_variant(v) for v in args.variant] + [("hf-recipe", {})]
    rows = []
    for system, options in systems:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--system", system, "--options", json.dumps(options)]
        subprocess.run(cmd, check=True)
        r = json.loads((Path(args.out_dir) / system / "result.json").read_text())
        adapter = Path(args.out_dir) / system / ("adapter" if system == "hf-recipe" else "run/adapter")
        ev = Path(args.out_dir) / system / "dev-eval"
        s = evaluate(EvalConfig(model=args.model, adapter=str(adapter), data=args.dev, limit=args.n_dev,
                                out=str(ev), progress=False))
        r.update(system=system, clips_per_second=round(r["clips"] / r["train_seconds"], 3),
                 dev_wer=s["wer"]["whisper"]["wer"], dev_wer_ci=[s["wer"]["whisper"]["ci_low"], s["wer"]["whisper"]["ci_high"]],
                 dev_wer_guarded=s["guarded"]["wer"]["whisper"]["wer"], dev_hallucinations=s["flags"]["hallucination"],
                 dev_first_word_error=round(first_word_error(ev / "utterances.jsonl"), 4), n_dev_clips=s["n_utts"])
        rows.append(r)
    hf = rows[-1]
    for r in rows[:-1]:
        r["speedup_vs_hf_recipe"] = round(r["clips_per_second"] / hf["clips_per_second"], 2)
        r["dev_wer_minus_hf_recipe"] = [round(v, 4) for v in paired_eval_difference(
            Path(args.out_dir) / r["system"] / "dev-eval", Path(args.out_dir) / "hf-recipe" / "dev-eval")]
    speedup = rows[0]["speedup_vs_hf_recipe"]
    result = {"model": args.model, "strategy": "lora r=16", "epochs": args.epochs, "n_train_clips": args.n_train,
              "n_dev_clips": hf["n_dev_clips"], "hf_batch_size": args.batch_size,
              "kidwhisper_windows_per_step": args.windows_per_step, "lr": LR, "speedup_clips_per_s": speedup,
              "versions": package_versions(), "machine": machine_info(), "command": " ".join(["python", *sys.argv]), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'system':<18}{'clips/s':>9}{'speed-up':>9}{'steps':>7}{'peak RSS MB':>13}{'dev WER %':>11}"
          f"{'guarded %':>11}{'halluc.':>9}{'1st word %':>12}  vs hf-recipe (paired 95 % CI)")
    for r in rows:
        d = r.get("dev_wer_minus_hf_recipe")
        vs = f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to {100 * d[2]:+.1f})" if d else "-"
        print(f"{r['system']:<18}{r['clips_per_second']:>9.3f}{r.get('speedup_vs_hf_recipe', 1):>9.1f}{r['steps']:>7}"
              f"{r['peak_rss_mb']:>13.0f}{100 * r['dev_wer']:>11.1f}{100 * r['dev_wer_guarded']:>11.1f}"
              f"{r['dev_hallucinations']:>9}{100 * r['dev_first_word_error']:>12.1f}  {vs}")


if __name__ == "__main__":
    main()
