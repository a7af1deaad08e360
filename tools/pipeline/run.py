"""`--exp pipeline`: the whole job on the embedded default, in one resumable command.

  python main.py --exp pipeline                     # generated data, quickstart config, CPU-sized
  python main.py --exp pipeline --data_path D       # the same on an existing competition-format dataset
  python main.py --exp pipeline --config_mod pipeline.route=grid   # the grid-latent (RSVP/PVDM) route
  python main.py --exp pipeline --data FOLDER       # natural video on real footage (tools/pipeline/natural.py)

Without --data_path a small dataset is generated into pipeline.data_path (under results/); a given --data_path
must be a competition dataset (train/ and val/ with videos), or the pipeline stops before writing anything. Nothing
is ever written inside it.

Slot route (the default for CLEVRER data): a large masks-only set of generated trajectories -> segmenter -> object
classifier (`pipeline.objects`; it names each segmented object from a full-resolution crop) -> pseudo-labels of
D's unlabeled split, when it has one (`pipeline.unlabeled`: segmenter, classifier and instance vote over frames
1-22) -> slot stage 1 -> slot stage 2 on D's train masks, the pseudo-labels and the generated trajectories ->
predict the val split from segmenter masks of frames 1-11, and again from the true ones (the dynamics alone) ->
the hidden split with the very settings of the scored val prediction, when D has one (submission.pt) -> report.
Grid route: segmenter -> stage 1 -> stage 2 -> predict -> report. Every step is an ordinary stage run
(results/{exp}_pipeline_{id}_{data}_{seed}/), so re-running the pipeline resumes each of them; the report is
results/pipeline_{id}_{data}_{seed}/report.md, the submission results/pipeline_{id}_{data}_{seed}/submission.pt.
`pipeline.profile` (cpu | gpu; by default gpu when CUDA is available) picks the steps' budgets.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tools.core.atomic import atomic_path
from tools.core.distributed import DistContext, barrier
from tools.core.errors import UserError
from tools.core.runs import LAST_CHECKPOINT, prepare_run_dir, run_dir_for
from tools.data.validate import VIDEO_DIR_PATTERN, require_split_folder
from tools.pipeline.steps import run_step, step_config

ROUTES = ("slots", "grid")
PROFILES = ("cpu", "gpu")
# What may differ between the scored val prediction and the hidden one: the split and what was measured.
MEASURED_META = ("split", "videos", "sec_per_video", "peak_mem_gib")


def has_dataset(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def has_split(root: Path, split: str) -> bool:
    folder = root / split
    return folder.is_dir() and any(VIDEO_DIR_PATTERN.match(p.name) and p.is_dir() for p in folder.iterdir())


def pipeline_data_path(cfg: DictConfig) -> tuple[Path, bool]:
    """(dataset root, whether to generate it). A given --data_path must already be a competition dataset: a typo
    or a partial copy is refused before anything is written, so no generated data ever lands in a user's folder."""
    if cfg.run.get("data_path"):
        root = Path(str(cfg.run.data_path)).expanduser()
        for split in ("train", "val"):
            try:
                require_split_folder(root, split)
            except UserError as error:
                raise UserError(f"--data_path {root} is not a competition dataset: {error} (the pipeline needs "
                                f"labeled train/ and val/; leave out --data_path to generate a small dataset "
                                f"under results/)") from None
        return root, False
    root = Path(str(cfg.pipeline.data_path))
    return root, not has_dataset(root)


def apply_profile(cfg: DictConfig) -> str:
    """pipeline.profile (cpu | gpu; null: gpu when CUDA is available): the gpu profile's step sections
    (pipeline.profiles.gpu) replace the CPU-sized ones."""
    profile = cfg.pipeline.get("profile") or ("gpu" if torch.cuda.is_available() else "cpu")
    if profile not in PROFILES:
        raise UserError(f"pipeline.profile={profile!r} is unknown; use cpu or gpu (or null: picked from the hardware)")
    sections = (cfg.pipeline.get("profiles") or {}).get(profile) or {}
    for step, section in sections.items():
        cfg.pipeline[step] = OmegaConf.merge(cfg.pipeline[step], section) if step in cfg.pipeline else section
    cfg.pipeline.profile = profile
    return profile


def train_grid_route(cfg: DictConfig, ctx: DistContext, timings: dict[str, float]) -> dict[str, DictConfig]:
    first = run_step("first_stage", step_config(cfg, "first_stage"), ctx, timings)
    ddpm = run_step("ddpm", step_config(cfg, "ddpm", first_model=str(run_dir_for(first.run) / LAST_CHECKPOINT)),
                    ctx, timings)
    return {"first_stage": first, "ddpm": ddpm}


def pseudo_label_step(cfg: DictConfig, ctx: DistContext, timings: dict[str, float], segmenter: Path,
                      classifier: Path | None, tta: bool) -> Path:
    """Masks of D's unlabeled videos (frames 1-22) by the segmenter, the object classifier and the instance vote,
    as prediction reads frames 1-11 (tta: the predict step's); written (resumably) into the step's run folder,
    never into D."""
    extra = ["mode=pseudo_label", f"pseudo_label.checkpoint={segmenter}", "pseudo_label.split=unlabeled",
             "pseudo_label.instance_vote=true", f"train.tta={tta}"]
    if classifier is not None:
        extra.append(f"pseudo_label.object_classifier={classifier}")
    step = step_config(cfg, "segment", exp="segment", extra=extra, id=f"pipeline_{cfg.run.id}_pseudo_labels")
    run_step("pseudo_labels", step, ctx, timings)
    return run_dir_for(step.run) / "pseudo_labels"


def train_slot_route(cfg: DictConfig, ctx: DistContext, timings: dict[str, float],
                     pseudo_labels: Path | None = None) -> dict[str, DictConfig]:
    trajectories = Path(str(cfg.pipeline.trajectories.data_path))
    use_generated = bool(cfg.pipeline.trajectories.get("enabled", True))
    if use_generated and not (trajectories / "train").is_dir():
        run_step("trajectories", step_config(cfg, "trajectories", exp="generate", data_path=str(trajectories)),
                 ctx, timings)
    first = run_step("first_stage", step_config(cfg, "slot_first_stage", exp="first_stage"), ctx, timings)
    ddpm_cfg = step_config(cfg, "slot_ddpm", exp="ddpm", first_model=str(run_dir_for(first.run) / LAST_CHECKPOINT))
    ddpm_cfg.data.trajectory_path = str(trajectories) if use_generated else None
    ddpm_cfg.data.pseudo_label_path = str(pseudo_labels) if pseudo_labels else None
    ddpm = run_step("ddpm", ddpm_cfg, ctx, timings)
    return {"first_stage": first, "ddpm": ddpm}


def publish_submission(run_dir: Path, val_dir: Path, hidden_dir: Path) -> Path:
    """Copy the hidden split's submission.pt and its ids beside the report, after checking that the hidden run
    used exactly the settings of the scored val run."""
    val_meta, hidden_meta = (json.loads((d / "meta.json").read_text()) for d in (val_dir, hidden_dir))
    differ = sorted(k for k in set(val_meta) | set(hidden_meta)
                    if k not in MEASURED_META and val_meta.get(k) != hidden_meta.get(k))
    if differ:
        raise UserError(f"the hidden prediction in {hidden_dir} differs from the scored val prediction in {differ}; "
                        f"rerun with --fresh")
    for name, target in (("submission.pt", "submission.pt"), ("video_ids.json", "submission_ids.json")):
        with atomic_path(run_dir / target) as temp:
            shutil.copyfile(hidden_dir / name, temp)
    return run_dir / "submission.pt"


def predict_step(cfg: DictConfig, ctx: DistContext, timings: dict[str, float], ddpm: DictConfig, segmenter: Path,
                 name: str = "predict", **predict_keys) -> DictConfig:
    predict_cfg = step_config(cfg, "predict", **({"id": f"pipeline_{cfg.run.id}_{name}"} if name != "predict" else {}))
    predict_cfg.predict.ddpm = str(run_dir_for(ddpm.run) / LAST_CHECKPOINT)
    predict_cfg.predict.segmenter = str(segmenter)
    for key, value in predict_keys.items():
        predict_cfg.predict[key] = value
    return run_step(name, predict_cfg, ctx, timings)


def run(cfg: DictConfig, ctx: DistContext) -> int:
    if cfg.run.data != "CLEVRER":  # natural video: latent and pixel routes on real footage
        if cfg.pipeline.get("first_stage") is None or cfg.pipeline.get("pixel_ddpm") is None:
            raise UserError(f"--exp pipeline --data {cfg.run.data} needs the natural-video pipeline config: leave out "
                            f"--pretrain_config or pass configs/quickstart/natural.yaml")
        from tools.pipeline.natural import run_natural

        return run_natural(cfg, ctx)
    route = str(cfg.pipeline.get("route", "slots"))
    if route not in ROUTES:
        raise UserError(f"pipeline.route={route!r} is unknown; use one of {', '.join(ROUTES)}")
    data_path, generate = pipeline_data_path(cfg)
    profile = apply_profile(cfg)
    cfg.run.data_path = str(data_path)
    run_dir = prepare_run_dir(cfg, ctx)
    if ctx.is_main:
        print(f"pipeline: profile {profile}, route {route}, data {data_path}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if generate:
        run_step("generate", step_config(cfg, "generate"), ctx, timings)
    segment = run_step("segment", step_config(cfg, "segment"), ctx, timings)
    # The last weights, not the best on val: the report scores those same val videos, so picking the checkpoint
    # on them would flatter it; the segmenter's rate decays to its end and both average their weights.
    segmenter = run_dir_for(segment.run) / LAST_CHECKPOINT
    steps = {"segment": segment}
    classifier = None
    if route == "slots" and cfg.pipeline.get("objects") and cfg.pipeline.objects.get("enabled", True):
        steps["objects"] = run_step("objects", step_config(cfg, "objects"), ctx, timings)
        classifier = run_dir_for(steps["objects"].run) / LAST_CHECKPOINT
    tta = bool(step_config(cfg, "predict").predict.get("tta", False))  # the segmenter's, wherever it reads frames
    pseudo_labels = None
    if route == "slots" and cfg.pipeline.unlabeled.get("enabled", True) and has_split(data_path, "unlabeled"):
        pseudo_labels = pseudo_label_step(cfg, ctx, timings, segmenter, classifier, tta)
    if route == "slots":
        trained = train_slot_route(cfg, ctx, timings, pseudo_labels)
    else:
        trained = train_grid_route(cfg, ctx, timings)
    vote_keys = {"object_classifier": str(classifier)} if classifier else {}
    predicted = {"model": predict_step(cfg, ctx, timings, trained["ddpm"], segmenter, **vote_keys)}
    hidden = None
    if cfg.pipeline.get("hidden", True) and has_split(data_path, "hidden"):  # the very settings of the val row
        hidden = predict_step(cfg, ctx, timings, trained["ddpm"], segmenter, name="predict_hidden", split="hidden",
                              **vote_keys)
    if route == "slots":  # the dynamics alone: the same model from the true masks of frames 1-11
        predicted["true_masks"] = predict_step(cfg, ctx, timings, trained["ddpm"], segmenter,
                                               name="predict_true_masks", observed_masks=True)
        if trained["ddpm"].model.get("motion_head"):  # what the diffusion samples add to the head's own guess
            predicted["guess"] = predict_step(cfg, ctx, timings, trained["ddpm"], segmenter, name="predict_guess",
                                              observed_masks=True, slot_combine="guess")
    barrier(ctx)
    if ctx.is_main:
        from tools.pipeline.report import write_report

        submission = None
        if hidden is not None:
            submission = publish_submission(run_dir, run_dir_for(predicted["model"].run), run_dir_for(hidden.run))
        timings["total"] = time.perf_counter() - started
        report = write_report(run_dir, data_path, {k: run_dir_for(v.run) for k, v in predicted.items()}, segmenter,
                              {**steps, **trained}, timings, route, classifier, tta=tta, profile=profile,
                              pseudo_labels=pseudo_labels, submission_path=submission)
        print(f"\npipeline finished in {timings['total'] / 60:.1f} min; report: {report}")
        if submission is not None:
            print(f"submission: {submission} (ids: {submission.with_name('submission_ids.json')})")
    return 0
