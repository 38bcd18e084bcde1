"""emofusion predict: apply a trained fusion model to any video."""

from __future__ import annotations

import argparse

NAME = "predict"
ORDER = 95
HELP = "apply a trained model (a run folder or an exported bundle) to any video: per-frame valence and arousal"
DESCRIPTION = """\
For each VIDEO, compute the model's inputs with the very settings its training stores were built with (read from
the run's stores, their provenance and run.json, or from the bundle; never from config.yaml): the subject's face
(the largest, or with --side the one on that half of the frame, as the corpus's _left/_right clips), the audio
on the frame timeline, the transcript when the model reads text, every backbone's features; then the model with
the run's normaliser and windowing, and the smoothing windows evaluation chose. The same functions as the
pipeline and evaluation run, so a corpus video gets the rows of its clip in predictions.parquet.
Writes into --out, per video (atomically; <name> = the video's file stem, with _left/_right with --side, then
.<model>: --name, default the model's <experiment>-fold<k>-seed<s>, so two models' predictions sit side by side):
  <name>.csv          frame, time_s, valence, arousal, valence_smoothed, arousal_smoothed, has_face,
                      has_audio (decoded audio, silence included), has_speech (silero VAD hears speech),
                      has_word (empty where the model does not read that input)
  <name>.json         frames, fps, mean and sd of valence and arousal, fractions of frames with a face, audio,
                      speech, a word; the model (run or bundle, checkpoint sha256), every backbone's weights sha256 and
                      licence, the settings used, versions, warnings, cache use
  <name>.png          valence and arousal over time; frames without a face (grey), audio (blue) or speech
                      (light blue) shaded
  <name>.overlay.mp4  with --overlay: the video with the face box and a valence/arousal gauge drawn, audio kept
A file that already exists is refused before anything is computed; --overwrite replaces it.
Stage outputs are cached in --cache (default <out>/.cache) by the video's content sha256 and each stage's
settings: a second model on the same backbones only runs the model; a changed setting never reuses a result.
Predicts running at the same time may share one --cache.
A video without audio is predicted with its audio masked (one warning); one without any face with its visual
input masked (warning); a text model that finds no word in the whole video warns too. An unreadable or
truncated video, a run folder without model.pt, a bundle whose backbone is not installed or whose weights
differ are errors naming the file and what to do."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video file(s) to predict")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="trained and evaluated run folder (model.pt, run.json, "
        "metrics.json), e.g. results/fusion/rjca/fold0/seed0",
    )
    src.add_argument("--model", metavar="BUNDLE", help="a bundle written by `emofusion export` (.tar or folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="the model's name in the output file names (default: <experiment>-fold<k>-seed<s>)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--cache", help="stage cache folder (default: <out>/.cache); share it between models")
    p.add_argument("--side", choices=("left", "right"), help="two people: the face on this half (default: largest)")
    p.add_argument("--overlay", action="store_true", help="also write <name>.overlay.mp4")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (every stage and the model)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default 0: torch's default)")


def run(args: argparse.Namespace) -> int:
    import os

    # Nothing is fetched at run time (as `emofusion embed`): a model that is not on disk fails instead.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from emofusion.io import check_writable_folder
    from emofusion.predict.stage import predict_videos

    check_writable_folder(args.out, "--out")
    if args.cache is not None:
        check_writable_folder(args.cache, "--cache")
    predict_videos(
        args.videos,
        args.out,
        run=args.run,
        bundle=args.model,
        cache=args.cache,
        side=args.side,
        device=args.device,
        threads=args.threads,
        overlay=args.overlay,
        name=args.name,
        overwrite=args.overwrite,
    )
    return 0
