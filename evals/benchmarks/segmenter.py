"""Benchmark of the segmenter: per-frame Jaccard against CPU minutes, on generated val and on real frames.

  python -m evals.benchmarks.segmenter --data_path D --real_path ../shared/data/real_samples \\
      --variant factorised=configs/segmentation/cpu.yaml --variant flat=configs/segmentation/cpu.yaml:model.head=flat \\
      --minutes 2 5 10 15 --out results/benchmark_segmenter

Each variant is trained on D's train split only (`--exp segment`, in this process) in chunks of `--chunk_steps`
steps; a run that resumes continues the same training. "CPU minutes" are this process's CPU time (user + system,
all threads) divided by 2, i.e. minutes of two fully used cores: on a machine shared with other jobs, wall time
says more about the neighbours than about the segmenter (wall minutes and `uptime` load are recorded too).
Decoding the frames into memory is done once before timing and reported separately. At the first chunk end past
each `--minutes` point the EMA weights are scored on every frame of D's val split and of the real videos
(evals/scoring/segmenter_scores.py, with the per-factor scores; the instance-vote rows at the last point only).
With `--objects CONFIG`, an object classifier (`--exp objects`) is first trained for `--objects_minutes` CPU
minutes, and every point also gets the rows of the instance vote with it (its minutes are added to the
segmenter's in the "segmenter + classifier" column).
A config with a learning-rate schedule (`train.lr_schedule`, tools/train/schedule.py) is instead trained afresh
for each `--minutes` point as one run with `train.max_minutes` set to it, so its rate decays over exactly that
budget (the minutes are then wall minutes of training; the CPU minutes are measured as before); the same holds
for the object classifier.
Generated val is D's val split, or `--val_path`'s (its first `--val_videos` labeled videos): a bar such as 0.85
per frame needs more videos than a training set's small val split holds. The segmenter's scores come back to
the frames' resolution by `--upsample` (guided: the guided filter, models/guided_filter.py; bilinear); a second
mode scores the same weights again and gets a table of its own.
Writes benchmark.md / .json.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

PER_FRAME = "per_frame"
OBJECTS_ROW = "per_frame_vote_objects"
UPSAMPLING_ROWS = (PER_FRAME, "per_frame_vote_video", OBJECTS_ROW)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """'name=config.yaml[:key=value:key=value]' -> (name, config, overrides)."""
    name, _, rest = text.partition("=")
    config, *overrides = rest.split(":")
    return name, config, overrides


def train_chunk(name: str, config: str, overrides: list[str], args: argparse.Namespace, steps: int | None,
                exp: str = "segment", minutes: float | None = None) -> None:
    """Train run bench_{name} to `steps` (resuming it), or a fresh one for `minutes` of training time."""
    import main

    budget = [f"train.max_steps={steps}", "train.max_minutes=null"] if minutes is None else \
        [f"train.max_minutes={minutes}"]
    argv = ["--exp", exp, "--id", f"bench_{name}", "--data", "CLEVRER", "--data_path", args.data_path,
            "--results_dir", str(args.out), "--pretrain_config", config, "--config_mod", *budget, *overrides]
    if main.main(argv) != 0:
        raise SystemExit(f"training {name} failed; see the messages above")


def variant_config(config: str, overrides: list[str]):
    """The config file with the variant's key=value overrides applied."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.load(config), OmegaConf.from_dotlist(overrides))


def has_schedule(config: str, overrides: list[str]) -> bool:
    """Whether the config decays its learning rate over its budget (then a point is a run of its own)."""
    from tools.train.schedule import LRSchedule

    return LRSchedule.from_config(variant_config(config, overrides).train).active


def point_record(name: str, steps: int, used_cpu: float, used_wall: float, scores: dict,
                 args: argparse.Namespace) -> dict:
    """One point of a variant's curve (printed as it is made): its budget, its load and its scores."""
    record = {"variant": name, "steps": steps, "cpu_minutes_2core": used_cpu / 120,
              "objects_cpu_minutes": args.objects_cpu_minutes, "wall_minutes": used_wall / 60,
              "load_average": load_average(), **scores}
    print(json.dumps(record), flush=True)
    return record


def train_objects(args: argparse.Namespace) -> tuple[Path, float]:
    """Train the object classifier (`--objects`) on D's train split in chunks until --objects_minutes CPU
    minutes; its last checkpoint and the CPU minutes it took. Cropping the objects is done before timing."""
    from tools.data.object_crops import ObjectCrops

    _, config, overrides = parse_variant(f"objects={args.objects}")
    cfg = variant_config(config, overrides)
    start = time.perf_counter()
    for splits in (list(cfg.data.train_splits), [cfg.data.val_split]):
        ObjectCrops(args.data_path, splits, int(cfg.data.get("min_pixels") or 1), desc="cropping objects")
    args.crop_seconds = time.perf_counter() - start
    used_cpu, steps = 0.0, 0
    if has_schedule(config, overrides):  # one fresh run whose rate decays over the whole budget
        shutil.rmtree(args.out / "objects_bench_objects_CLEVRER_42", ignore_errors=True)
        cpu = cpu_seconds()
        train_chunk("objects", config, overrides, args, None, exp="objects", minutes=args.objects_minutes)
        used_cpu = cpu_seconds() - cpu
    else:
        while used_cpu / 120 < args.objects_minutes:
            steps += args.chunk_steps
            cpu = cpu_seconds()
            train_chunk("objects", config, overrides, args, steps, exp="objects")
            used_cpu += cpu_seconds() - cpu
    return args.out / "objects_bench_objects_CLEVRER_42" / "model_last.pth", used_cpu / 120


def evaluate(name: str, args: argparse.Namespace, with_vote: bool) -> dict[str, dict[str, float]]:
    """The scores of run bench_{name}'s last weights on generated val and on the real videos."""
    from evals.scoring.segmenter_scores import score_segmenter
    from tools.predict.instance_vote import load_vote_judge
    from tools.predict.segmenter_io import load_segmenter

    model = load_segmenter(args.out / f"segment_bench_{name}_CLEVRER_42" / "model_last.pth")
    judge = load_vote_judge({"object_classifier": str(args.classifier) if args.classifier else None})
    splits = (("generated_val", args.val_path, "val", args.val_ids), ("real", args.real_path, "train", None))
    scores: dict = {}
    for mode in args.upsample:
        model.upsample = mode
        by_split = {split_name: score_segmenter(model, root, split, video_ids, vote=with_vote, progress=False,
                                                judge=judge)
                    for split_name, root, split, video_ids in splits}
        if not scores:
            scores.update(by_split)  # the first mode's scores are the record's own
        else:
            scores.setdefault("upsampling", {})[mode] = by_split
    return scores


def run_variant(name: str, config: str, overrides: list[str], args: argparse.Namespace) -> list[dict]:
    """Train in chunks until the last --minutes point, scoring at each point; the curve as records. A config
    with a learning-rate schedule instead trains a fresh run per --minutes point, its rate decaying over it."""
    if has_schedule(config, overrides) and not args.at_steps:
        return [run_scheduled_point(name, config, overrides, args, minutes) for minutes in sorted(args.minutes)]
    points, records = sorted(args.at_steps or args.minutes), []
    used_cpu, used_wall, steps = 0.0, 0.0, 0

    def progress() -> float:  # in the units of the points
        return steps if args.at_steps else used_cpu / 120

    while points:
        steps += args.chunk_steps
        cpu, wall = cpu_seconds(), time.perf_counter()
        train_chunk(name, config, overrides, args, steps)
        used_cpu += cpu_seconds() - cpu
        used_wall += time.perf_counter() - wall
        if progress() < points[0]:
            continue
        while points and progress() >= points[0]:
            points.pop(0)
        scores = evaluate(name, args, with_vote=not points or args.classifier is not None)
        records.append(point_record(name, steps, used_cpu, used_wall, scores, args))
    return records


def run_scheduled_point(name: str, config: str, overrides: list[str], args: argparse.Namespace,
                        minutes: float) -> dict:
    """Train a fresh run for `minutes` of training time (its schedule spans them) and score it; its record."""
    from tools.core.checkpoint import load_checkpoint

    point_name = f"{name}_{minutes:g}min"
    shutil.rmtree(args.out / f"segment_bench_{point_name}_CLEVRER_42", ignore_errors=True)  # a point is one run
    cpu, wall = cpu_seconds(), time.perf_counter()
    train_chunk(point_name, config, overrides, args, None, minutes=minutes)
    used_cpu, used_wall = cpu_seconds() - cpu, time.perf_counter() - wall
    steps = int(load_checkpoint(args.out / f"segment_bench_{point_name}_CLEVRER_42" / "model_last.pth")["step"])
    return point_record(name, steps, used_cpu, used_wall, evaluate(point_name, args, with_vote=True), args)


def warm_cache(config: str, overrides: list[str], args: argparse.Namespace) -> float:
    """Decode the training frames once (kept in memory for every chunk); returns the seconds it took."""
    from tools.data.frames import LabeledFrames

    cfg = variant_config(config, overrides)
    start = time.perf_counter()
    LabeledFrames(args.data_path, list(cfg.data.train_splits), (int(cfg.data.height), int(cfg.data.width)),
                  cache=bool(cfg.data.get("cache")), max_videos=cfg.data.get("max_train_videos"))
    return time.perf_counter() - start


def val_video_ids(args: argparse.Namespace) -> list[int]:
    """Ids of the generated val videos scored: the first --val_videos labeled ones of <val_path>/val."""
    from tools.core.errors import UserError
    from tools.data.clevrer import list_videos

    try:
        ids = [entry.id for entry in list_videos(args.val_path, "val") if entry.has_mask]
    except UserError as error:
        raise SystemExit(f"--val_path: {error}") from None
    if not ids:
        raise SystemExit(f"--val_path {args.val_path}: no labeled videos in its val/ split; generate some with "
                         f"`python main.py --exp generate` or point --val_path at a dataset that has them")
    return ids[:args.val_videos] if args.val_videos else ids


def gen_real_cell(scores: dict, key: str) -> str:
    """'generated val / real' of one score, nan where a split lacks it."""
    return f"{scores['generated_val'].get(key, float('nan')):.3f} / {scores['real'].get(key, float('nan')):.3f}"


def markdown(records: list[dict], cache_seconds: dict[str, float], args: argparse.Namespace) -> str:
    from evals.scoring.segmenter_scores import FACTOR_LABELS, ROW_LABELS

    lines = ["# Segmenter benchmark", "",
             "CPU minutes = process CPU time / 2 (two fully used cores); trained on generated data only.",
             f"Generated val: {len(args.val_ids)} videos of {args.val_path}/val; real: every labeled video of "
             f"{args.real_path}/train. Scores upsampled by {args.upsample[0]}.", "",
             "| variant | steps | CPU min | wall min | load avg | gen val per-frame | real per-frame |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['variant']} | {r['steps']} | {r['cpu_minutes_2core']:.1f} | {r['wall_minutes']:.1f} | "
                     f"{r['load_average']} | {r['generated_val'][PER_FRAME]:.3f} | {r['real'][PER_FRAME]:.3f} |")
    objects = [r for r in records if r.get("objects_cpu_minutes")]
    if objects:
        lines += ["", f"With the object classifier ({objects[0]['objects_cpu_minutes']:.1f} CPU minutes of its own "
                  "training, not in the segmenter's CPU minutes above):", "",
                  "| variant | steps | segmenter + classifier CPU min | gen val per-frame, vote + classifier | "
                  "real per-frame, vote + classifier |", "|---|---|---|---|---|"]
        for r in objects:
            total = r["cpu_minutes_2core"] + r["objects_cpu_minutes"]
            lines.append(f"| {r['variant']} | {r['steps']} | {total:.1f} | "
                         f"{r['generated_val'].get(OBJECTS_ROW, float('nan')):.3f} | "
                         f"{r['real'].get(OBJECTS_ROW, float('nan')):.3f} |")
    lines += ["", "Last point of each variant:", "", "| variant | row | generated val | real |", "|---|---|---|---|"]
    for name in dict.fromkeys(r["variant"] for r in records):
        last = [r for r in records if r["variant"] == name][-1]
        for key, label in ROW_LABELS.items():
            if key in last["generated_val"]:
                lines.append(f"| {name} | {label} | {last['generated_val'][key]:.3f} | "
                             f"{last['real'].get(key, float('nan')):.3f} |")
    lines += ["", "Per-frame errors split by factor (evals/scoring/segmenter_scores.py: objectness IoU; shape, material, colour "
              "right on true object pixels predicted as an object), generated val / real:", "",
              "| variant | steps | " + " | ".join(FACTOR_LABELS) + " |", "|---|---|" + "---|" * len(FACTOR_LABELS)]
    for r in records:
        cells = [gen_real_cell(r, key) for key in FACTOR_LABELS]
        lines.append(f"| {r['variant']} | {r['steps']} | " + " | ".join(cells) + " |")
    for mode in args.upsample[1:]:
        lines += ["", f"The same weights with the scores upsampled by {mode}, generated val / real:", "",
                  "| variant | steps | " + " | ".join(ROW_LABELS[k] for k in UPSAMPLING_ROWS) + " | objectness IoU |",
                  "|---|---|" + "---|" * (len(UPSAMPLING_ROWS) + 1)]
        for r in records:
            other = r.get("upsampling", {}).get(mode)
            if other is None:
                continue
            cells = [gen_real_cell(other, key) for key in (*UPSAMPLING_ROWS, "objectness_iou")]
            lines.append(f"| {r['variant']} | {r['steps']} | " + " | ".join(cells) + " |")
    lines += ["", "Frame decoding into memory (once, not in CPU minutes): " +
              ", ".join(f"{k} {v:.0f} s" for k, v in cache_seconds.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from models.segmenter import UPSAMPLING

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", required=True, help="generated dataset with train/ (and val/)")
    parser.add_argument("--val_path", help="generated dataset whose val/ split is scored (default: --data_path)")
    parser.add_argument("--val_videos", type=int, help="score the first N labeled val videos (default: all)")
    parser.add_argument("--upsample", nargs="+", choices=UPSAMPLING, default=["guided"],
                        help="how the scores return to full resolution; a second mode is scored as a comparison")
    parser.add_argument("--real_path", default="../shared/data/real_samples", help="real videos in <path>/train")
    parser.add_argument("--variant", action="append", required=True, help="name=config.yaml[:key=value...]")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 15], help="CPU-minute points")
    parser.add_argument("--at_steps", type=int, nargs="+", help="score at these steps instead of --minutes")
    parser.add_argument("--chunk_steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/benchmark_segmenter"))
    parser.add_argument("--objects", help="config.yaml[:key=value...] of an object classifier to train first "
                                          "(e.g. configs/segmentation/objects.yaml); its rows join every point")
    parser.add_argument("--objects_minutes", type=float, default=3.5, help="CPU minutes for --objects")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.val_path = args.val_path or args.data_path
    args.val_ids = val_video_ids(args)
    args.out.mkdir(parents=True, exist_ok=True)
    records, cache_seconds = [], {}
    args.classifier, args.objects_cpu_minutes = None, None
    if args.objects:
        args.classifier, args.objects_cpu_minutes = train_objects(args)
        cache_seconds["object crops"] = args.crop_seconds
    for name, config, overrides in map(parse_variant, args.variant):
        cache_seconds[name] = warm_cache(config, overrides, args)
        records += run_variant(name, config, overrides, args)
        (args.out / "benchmark.json").write_text(json.dumps(records, indent=2))
        (args.out / "benchmark.md").write_text(markdown(records, cache_seconds, args))
    print((args.out / "benchmark.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
