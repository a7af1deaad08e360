"""Command line of the project: PVDM's flags, one entry point for every stage.

  python main.py --exp generate    --data_path D                    # physics dataset (MuJoCo)
  python main.py --exp check_data  --data CLEVRER --data_path D     # validate a dataset folder
  python main.py --exp first_stage --id main --pretrain_config configs/autoencoder/base.yaml --data CLEVRER --data_path D
  python main.py --exp ddpm --id main --pretrain_config configs/latent-diffusion/base.yaml --data_path D --first_model R/model_last.pth
  python main.py --exp pipeline                                     # the whole job on generated data
  python main.py --exp pipeline --data FOLDER                       # natural video on real footage
  python main.py --exp sample --data FOLDER --data_path D --config_mod sample.ddpm=R/model_last.pth sample.mode=predict

Re-running a command resumes its run folder results/{exp}_{id}_{data}_{seed}/; --fresh starts again.
Works the same on CPU, one GPU and under `torchrun --nproc_per_node=N main.py ...`.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

import torch

from omegaconf import OmegaConf

from models import ModelConfigError
from tools.core.atomic import disk_full_message
from tools.core.config import apply_overrides, load_yaml
from tools.core.errors import UserError
from tools.core.stages import STAGES, StageNotAvailable, default_config_for, resolve_stage, run_stage

EXIT_USER_ERROR = 2
EXIT_NOT_AVAILABLE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Latent video diffusion for physical video prediction (PVDM/RSVP-style).",
        epilog="Every stage writes results/{exp}_{id}_{data}_{seed}/ (config.yaml, model_last.pth, "
               "stats.jsonl, TensorBoard events); view with `tensorboard --logdir results`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--exp", required=True, choices=sorted(STAGES),
                        help="stage to run: " + "; ".join(f"{k}: {v.summary}" for k, v in sorted(STAGES.items())))
    parser.add_argument("--id", default="main", help="run name; part of the run folder name")
    parser.add_argument("--seed", type=int, default=42, help="random seed; part of the run folder name")
    parser.add_argument("--data", default="CLEVRER", choices=["CLEVRER", "UCF101", "FOLDER"],
                        help="dataset kind: competition folder format, UCF-101, or a generic video folder")
    parser.add_argument("--data_path", default=None,
                        help="dataset root (for CLEVRER: the folder holding train/ val/ unlabeled/ hidden/)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="batch size per process (default: the config's train.batch_size)")
    parser.add_argument("--pretrain_config", default=None,
                        help="YAML config of the stage being run (default depends on --exp)")
    parser.add_argument("--diffusion_config", default=None,
                        help="YAML config of the latent-diffusion stage where a command needs it beside "
                             "--pretrain_config (ddpm uses it when --pretrain_config is not given)")
    parser.add_argument("--first_stage_folder", default=None,
                        help="run folder of a trained first stage to continue from (GAN finetune)")
    parser.add_argument("--first_model", default=None,
                        help="first-stage checkpoint (model_last.pth) for ddpm/predict; 'none' = pixel space")
    parser.add_argument("--config_mod", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. train.max_steps=100 model.channels=32")
    parser.add_argument("--fresh", action="store_true",
                        help="start the run again: move an existing run folder aside instead of resuming")
    parser.add_argument("--results_dir", default="results", help="where run folders are written")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def assemble_config(args: argparse.Namespace):
    """The stage's YAML config plus a `run` section from the flags, with --config_mod applied last."""
    path = args.pretrain_config or (args.diffusion_config if args.exp == "ddpm" else None)
    path = path or default_config_for(args.exp, args.data)
    cfg = load_yaml(path) if path else OmegaConf.create({})
    cfg.run = {
        "exp": args.exp, "id": args.id, "seed": args.seed, "data": args.data, "data_path": args.data_path,
        "batch_size": args.batch_size, "config_path": str(path) if path else None,
        "diffusion_config": args.diffusion_config, "first_stage_folder": args.first_stage_folder,
        "first_model": args.first_model, "results_dir": args.results_dir, "fresh": args.fresh,
        "device": args.device,
    }
    return apply_overrides(cfg, args.config_mod)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_stage(args.exp)  # an unbuilt stage says so before any config is read
        if args.batch_size is not None and args.batch_size < 1:  # 0 must not fall back to the config silently
            raise UserError(f"--batch_size {args.batch_size} is not a batch size; pass 1 or more")
        return run_stage(args.exp, assemble_config(args))
    except StageNotAvailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    except (UserError, ModelConfigError) as err:  # networks raise ModelConfigError (a ValueError)
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except torch.cuda.OutOfMemoryError as err:
        print(f"error: the GPU ran out of memory ({str(err).splitlines()[0]}); lower --batch_size or the "
              f"config's model.channels (e.g. --config_mod model.channels=64)", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        where = os.path.dirname(os.path.abspath(err.filename)) if err.filename else args.results_dir
        print(f"error: {disk_full_message(where)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
