"""Face stage: detection on real faces, alignment, subject choice, the store, the pre-cropped path, bad inputs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_DATA
from conftest import run_ffmpeg as ffmpeg
from emofusion.cli import main
from emofusion.device import resolve_device
from emofusion.errors import ConfigError, InputError
from emofusion.faces.align import ARCFACE_112, face_template, similarity_transforms, transform_points, warp_faces
from emofusion.faces.config import FaceSettings
from emofusion.faces.crops import faces_from_crops
from emofusion.faces.detector import MTCNNDetector
from emofusion.faces.stage import extract_faces, make_detector
from emofusion.faces.store import DATASETS, gap_sources, read_faces
from emofusion.faces.tracker import SubjectTracker

torch = pytest.importorskip("torch")

PYFEAT = TEST_DATA / "pyfeat_videos"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")

# The astronaut's face in skimage.data.astronaut() (512x512): MTCNN's box is about (180, 62, 268, 173).
ASTRONAUT_FACE = (165, 45, 285, 190)


def x264(path: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(path)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Short real test videos cut from tests/data (and some broken files), made once per module."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    d = tmp_path_factory.mktemp("media")
    out = {
        "face": d / "face.mp4",  # 12 frames, one man, 640x360
        "noface": d / "noface.mp4",  # 12 frames of the no-face video, 960x540
        "pair": d / "pair.mp4",  # 8 frames: the man (left) beside a woman (right), 1280x360
    }
    ffmpeg("-i", str(PYFEAT / "single_face.mp4"), "-frames:v", "12", *x264(out["face"]))
    ffmpeg("-i", str(PYFEAT / "no_face.mp4"), "-frames:v", "12", *x264(out["noface"]))
    ffmpeg(
        "-i",
        str(PYFEAT / "single_face.mp4"),
        "-ss",
        "2",
        "-i",
        str(PYFEAT / "WolfgangLanger_Pexels.mp4"),
        "-filter_complex",
        "[0:v]setpts=PTS-STARTPTS,fps=30[a];[1:v]setpts=PTS-STARTPTS,fps=30,scale=640:360[b];[a][b]hstack=inputs=2",
        "-frames:v",
        "8",
        *x264(out["pair"]),
    )
    return out


def mtcnn(device="cpu", **faces) -> MTCNNDetector:
    """The face stage's MTCNN with the schema's ``faces:`` defaults, ``faces`` set over them."""
    return make_detector(FaceSettings.from_config(faces), device)


def tracker(**kwargs) -> SubjectTracker:
    """A tracker with the schema's min_probability and reacquire_after unless given."""
    defaults = FaceSettings.from_config()
    kwargs = {"min_probability": defaults.min_probability, "reacquire_after": defaults.reacquire_after, **kwargs}
    return SubjectTracker(**kwargs)


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return mtcnn(max_side=None)


def astronaut():
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8


def as_batch(image: np.ndarray):
    return torch.as_tensor(image).permute(2, 0, 1)[None].contiguous()


def run_cli(*args: str) -> int:
    return main(["faces", *args])


# ------------------------------------------------------------------------------------------ template, transforms


def test_template_is_arcface_at_112_and_scales():
    np.testing.assert_allclose(face_template(112), ARCFACE_112, atol=1e-9)
    t224 = face_template(224)
    np.testing.assert_allclose(t224, (ARCFACE_112 + 0.5) * 2 - 0.5, atol=1e-9)
    wide = face_template(112, margin=0.5)
    centre = 55.5
    np.testing.assert_allclose(wide - centre, (ARCFACE_112 - centre) / 1.5, atol=1e-9)
    with pytest.raises(ConfigError, match="faces.size"):
        face_template(8)


def test_similarity_transform_recovers_a_known_one_in_batch():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(6, 5, 2))
    angles, scales = rng.uniform(-1, 1, 6), rng.uniform(0.2, 3, 6)
    a, b = scales * np.cos(angles), scales * np.sin(angles)
    shift = rng.uniform(-50, 50, size=(6, 2))
    truth = np.stack([np.stack([a, -b, shift[:, 0]], 1), np.stack([b, a, shift[:, 1]], 1)], 1)
    dst = transform_points(truth, src)
    # One template, so fit each row separately against its own target.
    for i in range(6):
        m = similarity_transforms(torch.as_tensor(src[i : i + 1]), dst[i]).numpy()
        np.testing.assert_allclose(m[0], truth[i], atol=1e-8)
    # Batched against a common target: each row maps its points onto the template as well as a similarity can.
    m = similarity_transforms(torch.as_tensor(src), ARCFACE_112).numpy()
    assert m.shape == (6, 2, 3)
    for i in range(6):  # the batch gives each row the fit it would get alone
        np.testing.assert_allclose(
            m[i], similarity_transforms(torch.as_tensor(src[i : i + 1]), ARCFACE_112)[0], atol=1e-8
        )
    # and that fit is the least-squares one: no other similarity brings the points closer to the template
    fitted = transform_points(m, src)
    for eps in (
        np.array([[1e-3, 0, 0], [0, 1e-3, 0]]),
        np.array([[0, -1e-3, 0], [1e-3, 0, 0]]),
        np.array([[0, 0, 0.1], [0, 0, 0]]),
    ):
        worse = transform_points(m + eps, src)
        assert (((worse - ARCFACE_112) ** 2).sum(axis=(1, 2)) > ((fitted - ARCFACE_112) ** 2).sum(axis=(1, 2))).all()


def test_warp_samples_the_right_pixels():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(1, 3, 60, 80), dtype=np.uint8)
    frames = torch.as_tensor(frame)
    shift = torch.tensor([[[1.0, 0.0, -10.0], [0.0, 1.0, -5.0]]], dtype=torch.float64)  # crop = frame[5:, 10:]
    out = warp_faces(frames, shift, 32).numpy()
    np.testing.assert_array_equal(out[0], frame[0, :, 5:37, 10:42].transpose(1, 2, 0))
    # Half scale (crop pixel u's centre at frame pixel 2u + 0.5): the mean of a 2x2 block (supersampled).
    half = torch.tensor([[[0.5, 0.0, -0.25], [0.0, 0.5, -0.25]]], dtype=torch.float64)
    out = warp_faces(frames, half, 16).numpy().astype(float)
    blocks = frame[0, :, :32, :32].reshape(3, 16, 2, 16, 2).mean(axis=(2, 4)).transpose(1, 2, 0)
    assert np.abs(out[0] - blocks).max() <= 0.51
    # Outside the frame: black.
    away = torch.tensor([[[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    assert warp_faces(frames, away, 8).numpy().max() == 0


# ---------------------------------------------------------------------------------------------- gaps, tracking


def test_gap_sources_fills_short_gaps_from_the_nearest_valid_frame():
    v = np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    #            lead     gap 2     gap 3        tail
    np.testing.assert_array_equal(gap_sources(v, 0), np.full(11, -1))
    np.testing.assert_array_equal(gap_sources(v, 2), [1, -1, -1, 2, 5, -1, -1, -1, -1, -1, 9])
    np.testing.assert_array_equal(gap_sources(v, 3), [1, -1, -1, 2, 5, -1, 5, 5, 9, -1, 9])
    assert (gap_sources(np.zeros(5, bool), 10) == -1).all()  # nothing to fill from
    assert (gap_sources(np.ones(5, bool), 10) == -1).all()


def box(cx: float, cy: float, size: float) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def test_tracker_keeps_its_subject_when_a_larger_face_appears():
    t = tracker(side=None, width=640, reacquire_after=3)
    p1, p2 = np.array([0.99]), np.array([0.99, 0.99])
    assert t.choose(np.array([box(200, 180, 80)]), p1) == 0  # only face: the subject
    # A larger face appears; the subject moves a little: keep the subject.
    assert t.choose(np.array([box(450, 180, 160), box(205, 182, 80)]), p2) == 1
    assert t.choose(np.array([box(215, 185, 82), box(450, 180, 160)]), p2) == 0
    # The subject is gone: frames stay invalid instead of jumping to the other person ...
    other = np.array([box(450, 180, 160)])
    assert [t.choose(other, p1) for _ in range(3)] == [-1, -1, -1]
    # ... until reacquire_after (3) frames have passed: then the largest face is taken.
    assert t.choose(other, p1) == 0
    assert t.choose(np.array([box(210, 180, 80), box(452, 181, 160)]), p2) == 1


def test_tracker_side_and_probability():
    faces = np.array([box(150, 180, 60), box(480, 180, 120), box(560, 100, 20)])
    probs = np.array([0.99, 0.99, 0.95])
    assert tracker(side="left", width=640).choose(faces, probs) == 0
    assert tracker(side="right", width=640).choose(faces, probs) == 1
    assert tracker(side=None, width=640).choose(faces, probs) == 1
    assert tracker(side=None, width=640, min_probability=0.999).choose(faces, probs) == -1
    assert tracker(side="left", width=640).choose(faces[1:], probs[1:]) == -1  # nobody on the left


def test_tracker_follows_a_moving_face_with_low_overlap():
    t = tracker(side=None, width=640)
    t.choose(np.array([box(100, 100, 50)]), np.array([0.99]))
    # Moved by 0.4 face widths (IoU < 0.3), next to a bigger face far away: still the subject.
    assert t.choose(np.array([box(400, 300, 150), box(120, 100, 50)]), np.array([0.99, 0.99])) == 1


# ----------------------------------------------------------------------------------------------------- config


def test_settings_defaults_match_the_schema():
    from emofusion.config import validate_config

    cfg = validate_config({})
    assert FaceSettings.from_config(cfg["faces"]) == FaceSettings.from_config()
    with pytest.raises(ConfigError, match="faces"):
        validate_config({"faces": {"sise": 112}})
    with pytest.raises(ConfigError, match="device"):
        validate_config({"faces": {"device": "tpu"}})


def test_cuda_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ConfigError, match=r"faces\.device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match=r"asr\.device is 'cuda'"):
        resolve_device("cuda", key="asr.device")


# ----------------------------------------------------------------------------------- real detection, alignment


def test_a_high_resolution_copy_is_searched_as_the_low_resolution_one(monkeypatch):
    """faces.min_face_size counts detection pixels: a 3x upscaled copy, downscaled to the same detection size
    (max_side), gets the same P-net pyramid (the cost follows the detection size) and the same face."""
    import emofusion.faces.detector as det

    sizes: list[list[tuple[int, int]]] = []
    real = det.Pyramid

    def recording(images, levels):
        sizes.append(levels)
        return real(images, levels)

    monkeypatch.setattr(det, "Pyramid", recording)
    detector = mtcnn(max_side=512, min_face_size=20)
    low = as_batch(astronaut())  # 512x512
    high = torch.nn.functional.interpolate(low.float(), scale_factor=3, mode="bilinear").round().to(torch.uint8)
    d_low, d_high = detector(low), detector(high)
    assert sizes[0] == sizes[1]  # before: the 1536 px copy searched from scale 1.0, the 512 px one from 0.6
    b_low, b_high = d_low.boxes[np.argmax(d_low.probs)], d_high.boxes[np.argmax(d_high.probs)]
    np.testing.assert_allclose(b_high / 3, b_low, atol=3)  # the same face, in each copy's own pixels


def test_detects_the_astronaut_and_aligns_her_eyes_onto_the_template(detector):
    image = astronaut()
    dets = detector(as_batch(image))
    assert len(dets.boxes) >= 1 and dets.offsets.tolist() == [0, len(dets.boxes)]
    best = int(np.argmax(dets.probs))
    x1, y1, x2, y2 = dets.boxes[best]
    X1, Y1, X2, Y2 = ASTRONAUT_FACE
    assert X1 <= x1 < x2 <= X2 and Y1 <= y1 < y2 <= Y2 and dets.probs[best] > 0.99
    lm = dets.points[best]
    assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all()
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left eye / mouth corner first
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above the nose above the mouth

    # Agrees with facenet-pytorch's own MTCNN (frame-by-frame reference) within a few pixels.
    from facenet_pytorch import MTCNN
    from PIL import Image

    ref_boxes, _, ref_points = MTCNN(keep_all=True).detect(Image.fromarray(image), landmarks=True)
    np.testing.assert_allclose(dets.boxes[best], np.asarray(ref_boxes[0], dtype=np.float32), atol=4)
    np.testing.assert_allclose(lm, np.asarray(ref_points[0], dtype=np.float32), atol=3)

    # Align, then detect again on the aligned crop: the eyes sit on the template's eyes.
    size = 112
    m = similarity_transforms(torch.as_tensor(lm[None]), face_template(size))
    crop = warp_faces(as_batch(image), m, size)[0].numpy()
    mapped = transform_points(m.numpy(), lm[None])[0]
    # The fit itself (5 points, 4 degrees of freedom: nose and mouth of a turned, smiling face fit less well).
    assert np.abs(mapped[:2] - face_template(size)[:2]).max() < 3 and np.abs(mapped - face_template(size)).max() < 7
    padded = np.zeros((2 * size, 2 * size, 3), np.uint8)  # room around the tight crop for the detector
    padded[size // 2 : size // 2 + size, size // 2 : size // 2 + size] = crop
    again = detector(as_batch(padded))
    assert len(again.boxes) >= 1
    eyes = again.points[int(np.argmax(again.probs))][:2] - size // 2
    assert np.abs(eyes - face_template(size)[:2]).max() < 4.0, eyes  # on the template, within a few pixels
    assert np.abs(eyes - mapped[:2]).max() < 2.0, eyes  # where the transform put them: the warp is exact


def test_video_store_has_one_row_per_frame_with_the_face(media, tmp_path, caplog):
    out = tmp_path / "faces" / "face.h5"
    assert (
        run_cli(
            "--video",
            str(media["face"]),
            "--clip",
            "face",
            "--out",
            str(out),
            "--config-json",
            json.dumps({"faces": {"batch_size": 5, "device": "cpu"}}),
        )
        == 0
    )
    store = read_faces(out)
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(str(media["face"]))
    n = dec.metadata.num_frames
    assert n == 12
    for name in DATASETS:
        assert store[name].shape[0] == n, name
    assert store["crops"].shape == (n, 112, 112, 3) and store["crops"].dtype == np.uint8
    assert store["boxes"].dtype == np.float32 and store["landmarks"].shape == (n, 5, 2)
    assert store["valid"].all() and not store["filled"].any()
    assert (store["probability"] > 0.95).all()
    np.testing.assert_allclose(store["timestamps"], dec.get_frames_in_range(0, n).pts_seconds.numpy())
    # The man's face is in the middle of the 640x360 frame.
    cx = (store["boxes"][:, 0] + store["boxes"][:, 2]) / 2
    assert ((cx > 220) & (cx < 420)).all()
    attrs = store["attrs"]
    assert attrs["schema_version"] == 1 and attrs["source"] == "mtcnn" and attrs["clip"] == "face"
    assert attrs["frames"] == n and attrs["valid_frames"] == n and attrs["size"] == 112
    assert attrs["provenance"]["config"]["faces"]["batch_size"] == 5
    assert "versions" in attrs["provenance"]
    assert set(attrs["provenance"]["detector"]["weights_sha256"]) == {"pnet.pt", "rnet.pt", "onet.pt"}
    assert attrs["timestamps_backwards"] == 0
    assert list(out.parent.iterdir()) == [out]  # no temporary files left beside it


def test_key_frame_mode_follows_the_face_between_key_frames(media):
    from emofusion.faces.stage import FaceAligner
    from emofusion.video import VideoStream

    frames = torch.cat([b.frames for b in VideoStream(media["face"], batch_size=12)])
    out = {}
    for k in (1, 3):
        aligner = FaceAligner(
            FaceSettings.from_config(dict(device="cpu", detect_every=k)), width=640, height=360, side=None, device="cpu"
        )
        parts = [aligner(frames[i : i + 5]) for i in range(0, len(frames), 5)]  # key frames across calls too
        out[k] = {name: np.concatenate([p[name] for p in parts]) for name in ("valid", "landmarks")}
    assert out[1]["valid"].all() and out[3]["valid"].all()
    diff = np.abs(out[3]["landmarks"] - out[1]["landmarks"])  # faces of ~150 px; MTCNN jitters a few px anyway
    assert diff.max() < 10 and diff.mean() < 2.5


def test_no_face_video_gives_an_all_invalid_store_and_a_warning(media, tmp_path, caplog):
    out = tmp_path / "noface.h5"
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        summary = extract_faces(
            media["noface"], out, clip="noface", settings=FaceSettings.from_config(dict(device="cpu"))
        )
    store = read_faces(out)
    assert summary.frames == 12 and summary.valid == 0
    assert len(store["valid"]) == 12 and not store["valid"].any()
    assert (store["crops"] == 0).all() and np.isnan(store["boxes"]).all() and (store["probability"] == 0).all()
    assert "no face in any frame" in caplog.text


def test_two_person_video_left_and_right_clips_get_their_own_face(media, tmp_path):
    settings = FaceSettings.from_config(dict(device="cpu"))
    stores = {}
    for clip in ("pair_left", "pair_right", "pair"):
        extract_faces(media["pair"], tmp_path / f"{clip}.h5", clip=clip, settings=settings)
        stores[clip] = read_faces(tmp_path / f"{clip}.h5")
    width = stores["pair"]["attrs"]["width"]
    assert width == 1280
    assert stores["pair_left"]["valid"].all() and stores["pair_right"]["valid"].all()
    # The left half is single_face.mp4's first frames, pixel for pixel: the _left clip's crops are that man's
    # (as the one-person video gives them), the _right clip's are someone else's.
    extract_faces(media["face"], tmp_path / "alone.h5", clip="alone", settings=settings)
    alone = read_faces(tmp_path / "alone.h5")["crops"][:8].astype(float)
    left, right = stores["pair_left"]["crops"].astype(float), stores["pair_right"]["crops"].astype(float)
    assert np.abs(left - alone).mean() < 8, np.abs(left - alone).mean()
    assert np.abs(right - alone).mean() > 20 and np.abs(left - right).mean() > 20  # two different people
    # Without a side, the largest face, and the same one in every frame.
    s = stores["pair"]
    cx = (s["boxes"][:, 0] + s["boxes"][:, 2]) / 2
    assert s["valid"].all() and (np.all(cx < width / 2) or np.all(cx >= width / 2))


# ---------------------------------------------------------------------------------------------- pre-cropped path


@needs_ffmpeg
def test_precropped_store_matches_its_images(tmp_path, caplog):
    from PIL import Image

    video = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-frames:v", "10", *x264(video))
    crops = tmp_path / "cropped_aligned" / "clip"
    crops.mkdir(parents=True)
    rng = np.random.default_rng(2)
    present = [1, 2, 3, 6, 7, 10]  # numbers = frame + 1; frames 3, 4, 7, 8 have no image
    for k in present:
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(crops / f"{k:05d}.jpg")
    Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)).save(crops / "00002.jpg")  # resized
    Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(crops / "00011.jpg")  # beyond
    (crops / "notes.txt").write_text("not an image")

    out = tmp_path / "clip.h5"
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        assert run_cli("--video", str(video), "--crops", str(crops), "--clip", "clip", "--out", str(out)) == 0
    assert "outside 1..10" in caplog.text
    s = read_faces(out)
    assert s["attrs"]["source"] == "cropped_aligned" and s["attrs"]["frames"] == 10
    expected_valid = np.isin(np.arange(10), np.array(present) - 1)
    np.testing.assert_array_equal(s["valid"], expected_valid)
    for i in range(10):
        if expected_valid[i]:
            img = Image.open(crops / f"{i + 1:05d}.jpg").convert("RGB")
            if img.size != (112, 112):
                img = img.resize((112, 112), Image.Resampling.BILINEAR)
            np.testing.assert_array_equal(s["crops"][i], np.asarray(img))
        else:
            assert (s["crops"][i] == 0).all()
    np.testing.assert_allclose(s["timestamps"], np.arange(10) / 25)
    assert np.isnan(s["boxes"]).all() and np.isnan(s["landmarks"]).all()

    # Gap filling: runs of up to 2 frames are filled from the nearest valid frame and flagged.
    out2 = tmp_path / "filled.h5"
    assert (
        run_cli(
            "--video",
            str(video),
            "--crops",
            str(crops),
            "--out",
            str(out2),
            "--config-json",
            json.dumps({"faces": {"fill_gaps": 2, "size": 64}}),
        )
        == 0
    )
    f = read_faces(out2)
    assert f["crops"].shape == (10, 64, 64, 3) and f["valid"].all()
    np.testing.assert_array_equal(np.flatnonzero(f["filled"]), [3, 4, 7, 8])
    for dst, src in {3: 2, 4: 5, 7: 6, 8: 9}.items():
        np.testing.assert_array_equal(f["crops"][dst], f["crops"][src])
    assert f["attrs"]["filled_frames"] == 4 and f["attrs"]["detected_frames"] == 6


def test_precropped_frame_count_comes_from_the_video(tmp_path):
    # no_face.mp4's header announces 98 frames; 3 are discarded by its edit list, so the decoder shows 95.
    from emofusion.corpus import probe_video

    crops = tmp_path / "empty"
    crops.mkdir()
    summary = faces_from_crops(crops, PYFEAT / "no_face.mp4", tmp_path / "s.h5", clip="s")
    assert summary.frames == probe_video(PYFEAT / "no_face.mp4")[0] == 95 and summary.valid == 0


def test_variable_frame_rate_timestamps_come_from_the_stream():
    from torchcodec.decoders import VideoDecoder

    from emofusion.video import VideoStream, frame_timestamps

    path = PYFEAT / "noface_face.mov"  # HEVC with irregular frame times
    stamps, _ = frame_timestamps(path)
    stream = VideoStream(path, batch_size=64)
    decoded = np.concatenate([b.timestamps for b in stream])
    assert len(stamps) == len(decoded) == VideoDecoder(str(path)).metadata.num_frames == 169
    np.testing.assert_allclose(stamps, decoded, atol=1e-9)
    assert np.ptp(np.diff(decoded)) > 0.01  # really variable


def test_concatenated_video_with_timestamps_going_back_is_kept_in_decode_order_and_flagged(
    make_video, tmp_path, caplog
):
    """ffmpeg's concat demuxer with -c copy, the first clip cut short by `duration`: the second clip's timestamps
    restart before the first's end. Every frame stays, in decode order; the store counts the steps back and the log
    warns once, naming the file."""
    from emofusion.video import VideoStream

    clip = make_video(frames=30, fps=30)
    (tmp_path / "list.txt").write_text(f"file '{clip}'\nduration 0.5\nfile '{clip}'\n")
    joined = tmp_path / "joined.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"), "-c", "copy", str(joined))
    decoded = np.concatenate([b.timestamps for b in VideoStream(joined, batch_size=16)])
    backwards = int((np.diff(decoded) < 0).sum())
    assert len(decoded) == 60 and backwards > 0  # the file really has timestamps that go back
    out = tmp_path / "joined.h5"
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        extract_faces(joined, out, clip="joined", settings=FaceSettings.from_config(dict(device="cpu", batch_size=16)))
    store = read_faces(out, crops=False)
    np.testing.assert_array_equal(store["timestamps"], decoded)  # decode order, not re-sorted
    assert store["attrs"]["timestamps_backwards"] == backwards and store["attrs"]["frames"] == 60
    warnings = [r.getMessage() for r in caplog.records if "timestamps go backwards" in r.getMessage()]
    assert len(warnings) == 1 and str(joined) in warnings[0] and f"{backwards} time(s)" in warnings[0]


def test_stream_batches_cover_every_frame_once_with_and_without_prefetch():
    from emofusion.video import VideoStream

    plain = list(VideoStream(PYFEAT / "single_face.mp4", batch_size=20))
    ahead = list(VideoStream(PYFEAT / "single_face.mp4", batch_size=20, prefetch=True))
    assert [b.start for b in plain] == [b.start for b in ahead] == [0, 20, 40, 60]
    assert [len(b.timestamps) for b in plain] == [20, 20, 20, 12]
    for a, b in zip(plain, ahead, strict=True):
        assert a.frames.shape == (len(a.timestamps), 3, 360, 640) and a.frames.dtype == torch.uint8
        assert torch.equal(a.frames, b.frames)
    # A decoding error in the background thread reaches the caller, named.
    stream = VideoStream(PYFEAT / "single_face.mp4", batch_size=20, prefetch=True)

    def fail(start):
        raise InputError(f"video {stream.path}: decoding failed at frames {start}")

    stream._decode = fail
    with pytest.raises(InputError, match="single_face.mp4: decoding failed at frames 0"):
        list(stream)


def test_prefetch_keeps_at_most_two_batches_alive():
    import time
    import weakref

    from emofusion.video import _prefetched

    alive: weakref.WeakSet = weakref.WeakSet()
    peak = 0

    class Batch:  # stands in for a FrameBatch: counts how many exist at once
        pass

    def decode(start):
        b = Batch()
        alive.add(b)
        return b

    for batch in _prefetched(decode, range(8)):
        time.sleep(0.02)  # a slow consumer: the worker has time to run ahead if it may
        peak = max(peak, len(alive))
        del batch
    assert peak == 2


def test_rotated_video_gives_the_decoded_frame_size(tmp_path):
    """A rotation tag (phone videos) turns 128x64 frames into 64x128 ones: the size that _left/_right and the
    store's width/height use is the decoded one."""
    from emofusion.video import VideoStream

    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=128x64:rate=25:duration=0.2", *x264(plain))
    ffmpeg("-i", str(plain), "-metadata:s:v:0", "rotate=90", "-c", "copy", str(rotated))
    stream = VideoStream(rotated, batch_size=8)
    assert (stream.info.width, stream.info.height) == (64, 128)
    assert next(iter(stream)).frames.shape[2:] == (128, 64)


@needs_ffmpeg
@pytest.mark.parametrize("container, codec", [("mkv", "libx264"), ("avi", "mpeg4")])
def test_truncated_file_without_a_sample_table_is_refused(tmp_path, container, codec):
    """Matroska and AVI have no exact sample table in front: the cut-off copy is caught from the track's tagged
    duration (Matroska) or the header's frame count (AVI), while the complete file passes."""
    from emofusion.video import probe

    whole = tmp_path / f"whole.{container}"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=128x64:rate=25:duration=4",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=4",
        "-c:v",
        codec,
        "-pix_fmt",
        "yuv420p",
        str(whole),
    )
    assert probe(whole).frames == 100
    cut = tmp_path / f"cut.{container}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"{cut.name} is truncated"):
        probe(cut)


def test_decoding_failure_mid_stream_leaves_no_store(media, tmp_path, monkeypatch):
    from emofusion.video import VideoStream

    real = VideoStream._decode

    def failing(self, start):
        if start > 0:
            raise InputError(f"video {self.path}: decoding failed at frames {start}..")
        return real(self, start)

    monkeypatch.setattr(VideoStream, "_decode", failing)
    out = tmp_path / "out" / "clip.h5"
    out.parent.mkdir()
    with pytest.raises(InputError, match="decoding failed at frames 4"):
        extract_faces(media["face"], out, clip="clip", settings=FaceSettings.from_config(dict(batch_size=4)))
    assert list(out.parent.iterdir()) == []


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    d = tmp_path_factory.mktemp("broken")
    files = {
        "empty": d / "empty.mp4",
        "text": d / "text.mp4",
        "audio": d / "audio.mp4",
        "truncated": d / "truncated.mp4",
        "no_index": d / "no_index.mp4",
        "codec": d / "codec.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n")
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", files["audio"].as_posix())
    whole = d / "whole.mp4"
    ffmpeg("-i", str(PYFEAT / "single_face.mp4"), "-c", "copy", "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])  # index first, half the frames missing
    plain = (PYFEAT / "single_face.mp4").read_bytes()
    files["no_index"].write_bytes(plain[: len(plain) // 2])  # index at the end: cut off
    files["codec"].write_bytes(plain.replace(b"avc1", b"zzz1"))  # a codec FFmpeg has no decoder for
    return files


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", "empty"),
        ("text", "cannot be opened"),
        ("audio", "no video stream"),
        ("truncated", "truncated"),
        ("no_index", "cannot be opened"),
        ("codec", "unsupported video codec"),
        ("missing", "does not exist"),
    ],
)
def test_bad_input_fails_with_the_file_named_and_no_output(broken, tmp_path, caplog, kind, message):
    video = broken.get(kind, tmp_path / "missing.mp4")
    out = tmp_path / "out" / "clip.h5"
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        assert run_cli("--video", str(video), "--clip", "clip", "--out", str(out)) == 1
    assert str(video) in caplog.text and message in caplog.text
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # The pre-cropped path reads the video's timeline too, and fails the same way.
    crops = tmp_path / "crops"
    crops.mkdir()
    assert run_cli("--video", str(video), "--crops", str(crops), "--out", str(out)) == 1
    assert not out.exists()


def test_missing_crops_folder_and_bad_image_are_named(tmp_path, media):
    out = tmp_path / "s.h5"
    with pytest.raises(InputError, match="crops folder"):
        faces_from_crops(tmp_path / "nope", media["face"], out, clip="s")
    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "00002.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"00002\.jpg"):
        faces_from_crops(crops, media["face"], out, clip="s")
    assert not out.exists() and list(tmp_path.glob(".s.h5*")) == []


# ------------------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
def test_cuda_detection_matches_cpu(detector):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    image = as_batch(astronaut())
    cpu = detector(image)
    gpu = mtcnn("cuda", max_side=None)(image.cuda())
    np.testing.assert_allclose(gpu.boxes, cpu.boxes, atol=1.0)
    np.testing.assert_allclose(gpu.points, cpu.points, atol=1.0)
    m = similarity_transforms(torch.as_tensor(cpu.points[:1]), face_template())
    a = warp_faces(image, m, 112).numpy().astype(int)
    b = warp_faces(image.cuda(), m.cuda(), 112).cpu().numpy().astype(int)
    assert np.abs(a - b).max() <= 1


# ------------------------------------------------------------- overlapped pipeline, GPU decode choice, shards


def assert_same_store(a: Path, b: Path) -> None:
    """Byte-identical data and attributes, provenance aside (it names the run)."""
    x, y = read_faces(a), read_faces(b)
    for name in DATASETS:
        assert x[name].dtype == y[name].dtype and x[name].tobytes() == y[name].tobytes(), name
    ax, ay = dict(x["attrs"]), dict(y["attrs"])
    ax.pop("provenance"), ay.pop("provenance")
    assert ax.keys() == ay.keys()
    for k in ax:
        assert np.array_equal(ax[k], ay[k]), k


@pytest.mark.parametrize(
    "clip, settings",
    [
        ("face", FaceSettings.from_config(dict(device="cpu", batch_size=5))),
        ("pair_left", FaceSettings.from_config(dict(device="cpu", batch_size=3, detect_every=3, fill_gaps=2))),
    ],
)
def test_overlapped_pipeline_writes_the_sequential_store(media, tmp_path, clip, settings):
    video = media["pair" if clip.startswith("pair") else clip]
    for pipeline in ("sequential", "overlapped"):
        extract_faces(video, tmp_path / f"{pipeline}.h5", clip=clip, settings=settings, pipeline=pipeline)
    assert_same_store(tmp_path / "sequential.h5", tmp_path / "overlapped.h5")
    assert read_faces(tmp_path / "overlapped.h5")["valid"].any()
    assert read_faces(tmp_path / "overlapped.h5", crops=False)["attrs"]["provenance"]["detector"]["decode"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov", "no_face.mp4"]
)
def test_overlapped_pipeline_writes_the_sequential_store_on_the_whole_test_videos(tmp_path, name):
    settings = FaceSettings.from_config(dict(device="cpu", batch_size=16))
    for pipeline in ("sequential", "overlapped"):
        extract_faces(PYFEAT / name, tmp_path / f"{pipeline}.h5", clip="clip", settings=settings, pipeline=pipeline)
    assert_same_store(tmp_path / "sequential.h5", tmp_path / "overlapped.h5")


@pytest.mark.parametrize("where", ["decode", "process", "write"])
def test_overlapped_failure_in_any_step_reaches_the_caller_without_a_hang(where):
    import threading
    import weakref

    from emofusion.faces.pipeline import run_overlapped

    alive: weakref.WeakSet = weakref.WeakSet()
    peak, written = [0], []

    class Item:  # stands in for a batch of frames: counts how many exist at once
        def __init__(self, i):
            self.i = i
            alive.add(self)

    def items():
        for i in range(50):
            if where == "decode" and i == 7:
                raise InputError("video x.mp4: decoding failed at frames 7")
            yield Item(i)

    def process(item):
        peak[0] = max(peak[0], len(alive))
        if where == "process" and item.i == 7:
            raise RuntimeError("detection failed at batch 7")
        return item.i

    def write(i):
        if where == "write" and i == 7:
            raise OSError("disk full at batch 7")
        written.append(i)

    before = threading.active_count()
    with pytest.raises((InputError, RuntimeError, OSError), match="at (frames|batch) 7"):
        run_overlapped(items(), process, write, depth=1)
    assert threading.active_count() == before  # the other steps stopped
    assert written == list(range(len(written))) and len(written) <= 7
    assert peak[0] <= 2  # one being detected, one decoded ahead
    # And without a failure: every item once, in order.
    written.clear()
    where = "nowhere"
    assert run_overlapped(items(), process, write, depth=1) == 50
    assert written == list(range(50))


def test_detection_failure_in_the_overlapped_stage_leaves_no_store(media, tmp_path, monkeypatch):
    from emofusion.faces.stage import FaceAligner

    real = FaceAligner.__call__
    calls = []

    def failing(self, frames, images=None):
        calls.append(len(frames))
        if len(calls) == 2:
            raise RuntimeError("injected detector failure")
        return real(self, frames, images)

    monkeypatch.setattr(FaceAligner, "__call__", failing)
    out = tmp_path / "out" / "clip.h5"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="injected detector failure"):
        extract_faces(
            media["face"], out, clip="clip", settings=FaceSettings.from_config(dict(device="cpu", batch_size=4))
        )
    assert list(out.parent.iterdir()) == []


def test_decode_choice_follows_the_detector_and_refuses_cuda_without_a_gpu(monkeypatch):
    from emofusion.faces.stage import decode_device

    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert decode_device("auto", cpu) == "cpu" and decode_device("cpu", gpu) == "cpu"
    assert decode_device("auto", gpu) == "cuda:0"  # on the detector's own GPU: no copy through the host
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"faces\.decode is 'cuda'"):
        decode_device("cuda", cpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert decode_device("cuda", cpu) == "cuda" and decode_device("cuda", gpu) == "cuda:0"
    from emofusion.config import validate_config

    assert validate_config({})["faces"]["decode"] == "auto"
    with pytest.raises(ConfigError, match="decode"):
        validate_config({"faces": {"decode": "nvdec"}})


def test_gpu_decoder_failure_falls_back_to_the_cpu_with_one_warning(media, tmp_path, monkeypatch, caplog):
    import emofusion.faces.stage as stage
    import emofusion.video as video

    real = video.open_decoder
    asked = []

    def factory(path, *, device="cpu", **kw):
        asked.append(device)
        if device != "cpu":
            raise RuntimeError("Unsupported device: NVDEC is not available")
        return real(path, device=device, **kw)

    settings = FaceSettings.from_config(dict(device="cpu", batch_size=5))
    extract_faces(media["face"], tmp_path / "cpu.h5", clip="face", settings=settings)
    monkeypatch.setattr(video, "open_decoder", factory)
    monkeypatch.setattr(stage, "decode_device", lambda decode, device: "cuda")  # as with decode: cuda on a GPU
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        extract_faces(media["face"], tmp_path / "fallback.h5", clip="face", settings=settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(media["face"]) in warnings[0] and "on the CPU" in warnings[0], warnings
    assert asked == ["cuda", "cpu"]
    assert_same_store(tmp_path / "cpu.h5", tmp_path / "fallback.h5")
    assert read_faces(tmp_path / "fallback.h5", crops=False)["attrs"]["provenance"]["detector"]["decode"] == "cpu"


def test_shard_writes_each_clip_as_one_job_would_and_skips_a_bad_one(media, broken, tmp_path, caplog):
    cfg = ["--config-json", json.dumps({"faces": {"batch_size": 5, "device": "cpu", "detect_every": 3}})]
    clips = [("face", media["face"]), ("pair_left", media["pair"]), ("pair_right", media["pair"])]
    for clip, video in clips:
        assert run_cli(*cfg, "--video", str(video), "--clip", clip, "--out", str(tmp_path / "one" / f"{clip}.h5")) == 0
    args = [
        a
        for clip, video in clips
        for a in ("--video", str(video), "--clip", clip, "--out", str(tmp_path / "shard" / f"{clip}.h5"))
    ]
    assert run_cli(*cfg, *args) == 0
    for clip, _ in clips:  # the detector reused across clips starts each one afresh (detect_every's key frames)
        assert_same_store(tmp_path / "one" / f"{clip}.h5", tmp_path / "shard" / f"{clip}.h5")
    # A broken video in the middle of a shard: the others are written, the bad one is named, exit 1.
    shard = [(media["face"], "a"), (broken["text"], "bad"), (media["face"], "face")]
    args = [
        a
        for video, clip in shard
        for a in ("--video", str(video), "--clip", clip, "--out", str(tmp_path / "bad" / f"{clip}.h5"))
    ]
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        assert run_cli(*cfg, *args) == 1
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == ["a.h5", "face.h5"]
    assert "1 of 3 clips of the shard failed" in caplog.text and str(broken["text"]) in caplog.text
    assert read_faces(tmp_path / "bad" / "face.h5", crops=False)["attrs"]["clip"] == "face"
    # Mismatched options are a usage error naming them.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="emofusion"):
        assert run_cli("--video", str(media["face"]), "--video", str(media["face"]), "--out", "x.h5") == 1
    assert "--out once per clip" in caplog.text


@pytest.mark.parametrize("where", ["inside", "at the edge", "partly outside"])
def test_a_large_frame_is_warped_from_face_regions_as_from_the_whole_frame(monkeypatch, where):
    """Frames over REGION_MIN_PIXELS are warped from a region around each face (a 1080p frame is not turned into
    float whole for every face): the crops equal the whole-frame warp's within one level, rarely off at all."""
    import emofusion.faces.align as align

    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (5, 3, 1080, 1920), dtype=np.uint8))
    frames = torch.nn.functional.avg_pool2d(frames.float(), 5, 1, 2).to(torch.uint8)  # smooth, like an image
    centre = {"inside": (900.0, 500.0), "at the edge": (60.0, 1040.0), "partly outside": (-20.0, 30.0)}[where]
    points = face_template(112)[None].repeat(5, 0) * np.array([1.6, 1.4, 2.2, 3.0, 1.0])[:, None, None]
    points = points - points.mean(axis=1, keepdims=True) + np.array(centre)
    m = similarity_transforms(torch.as_tensor(points), face_template(112))
    index = torch.tensor([4, 0, 2, 1, 3])
    regions = warp_faces(frames, m, 112, index=index).numpy().astype(int)
    monkeypatch.setattr(align, "REGION_MIN_PIXELS", 10**9)
    whole = warp_faces(frames, m, 112, index=index).numpy().astype(int)
    assert np.abs(regions - whole).max() <= 1 and (regions != whole).mean() < 0.01


def test_large_faces_of_a_large_frame_are_cut_from_the_detection_image():
    """Over max_side, a face that the detection image holds at the crop's resolution is warped from that image (what
    a frame of the detection size costs), a smaller one from the full frame's pixels; in the batch's order, and
    both close to the full-frame warp (issue 23)."""
    from emofusion.faces.align import cut_faces
    from emofusion.faces.pyramid import resize_frames

    frames = torch.zeros((3, 3, 1080, 1920), dtype=torch.uint8)
    frames[:, :, 28:1052, 448:1472] = torch.nn.functional.interpolate(as_batch(astronaut()), scale_factor=2)
    images = resize_frames(frames, 360, 640)  # the detection images: 3x smaller
    # eyes 315 px apart (crop 1 px = 9 frame px = 3 detection px: from the detection image) and 53 px apart (crop
    # 1 px = 1.5 frame px = 0.5 detection px: the detection image is too coarse), around the astronaut's face
    big, small = face_template(112) * 9, face_template(112) * 1.5
    points = np.stack([big - big.mean(0) + (950, 520), small - small.mean(0) + (900, 350), big - big.mean(0) + 960])
    m = similarity_transforms(torch.as_tensor(points), face_template(112))
    index = torch.tensor([2, 0, 1])
    got = cut_faces(frames, m, 112, index, images=images).numpy().astype(int)
    from_images = warp_faces(images, m[[0, 2]], 112, index[[0, 2]], scale=(3.0, 3.0)).numpy().astype(int)
    assert (got[[0, 2]] == from_images).all()
    assert (got[1] == warp_faces(frames, m[1:2], 112, index[1:2]).numpy()[0]).all()
    full = warp_faces(frames, m, 112, index).numpy().astype(int)
    assert np.abs(got - full).mean() < 1.5 and np.abs(got - full).max() < 64  # a re-sampling apart, not elsewhere
    assert got[[0, 2]].std() > 30  # a real picture, not a flat patch
    # Frames at the detection size already (the demo's): the full-frame warp's bytes.
    small_frames = frames[:, :, ::3, ::3].contiguous()
    assert (cut_faces(small_frames, m, 112, index) == warp_faces(small_frames, m, 112, index)).all()


@needs_ffmpeg
def test_a_1080p_copy_gives_the_360p_copys_store_from_detection_size_pixels(tmp_path, monkeypatch):
    """The cost follows the detection size, not the source's (issue 23): a 1080p copy of a 360p video is detected on
    the same 640x360 images, and its faces (large enough) are cut from them, never from a full 1080p frame. The
    stores agree within the stated tolerance: the same frames valid, box centres within 1.5 px at 360p scale
    (median; 3 px at most), crops within 4 grey levels on average (the two copies are encoded apart)."""
    import emofusion.faces.align as align

    source = PYFEAT / "single_face.mp4"
    low, high = tmp_path / "360p.mp4", tmp_path / "1080p.mp4"
    ffmpeg("-i", str(source), "-frames:v", "12", *x264(low))
    ffmpeg("-i", str(source), "-frames:v", "12", "-vf", "scale=1920:1080", *x264(high))
    warped: list[tuple[int, int]] = []
    real = align.warp_faces

    def recording(frames, *args, **kwargs):
        warped.append(tuple(frames.shape[2:]))
        return real(frames, *args, **kwargs)

    monkeypatch.setattr(align, "warp_faces", recording)
    stores = {}
    settings = FaceSettings.from_config({"device": "cpu", "batch_size": 5})
    for name, video in (("low", low), ("high", high)):
        extract_faces(video, tmp_path / f"{name}.h5", clip=name, settings=settings)
        stores[name] = read_faces(tmp_path / f"{name}.h5")
    assert set(warped) == {(360, 640)}  # before: the 1080p frames, region by region, 16 samples a crop pixel
    a, b = stores["low"], stores["high"]
    assert a["valid"].all() and (a["valid"] == b["valid"]).all()
    centre = lambda boxes: (boxes[:, :2] + boxes[:, 2:]) / 2  # noqa: E731
    moved = np.abs(centre(b["boxes"]) / 3 - centre(a["boxes"])).max(axis=1)
    assert np.median(moved) < 1.5 and moved.max() < 3  # 360p pixels (measured 0.9 and 2.2); the face is 150 px wide
    assert np.abs(b["crops"].astype(int) - a["crops"].astype(int)).mean() < 4  # grey levels (measured 2.3)
    attrs = read_faces(tmp_path / "high.h5", crops=False)["attrs"]
    assert attrs["provenance"]["detector"]["detection_version"] == 3


@pytest.mark.slow  # real detection on four videos
def test_a_rotated_phone_video_gives_the_upright_videos_store(tmp_path):
    """Pixels stored sideways with a rotation tag (as phones write them) are detected and aligned as the upright
    video: the same faces at the same places, the same crops up to the re-encoding's noise (issue 21)."""
    source = TEST_DATA / "pyfeat_videos" / "single_face.mp4"
    upright = tmp_path / "upright.mp4"
    ffmpeg("-i", str(source), "-frames:v", "8", *x264(upright))
    stores = {}
    # the pixels turned against the tag, so a player (and the decoder) shows them upright again
    for angle, turn in ((0, None), (90, "transpose=1"), (180, "hflip,vflip"), (270, "transpose=2")):
        video = upright
        if turn:
            sideways = tmp_path / f"sideways{angle}.mp4"
            ffmpeg("-i", str(upright), "-vf", turn, *x264(sideways))
            video = tmp_path / f"rotated{angle}.mp4"
            ffmpeg("-i", str(sideways), "-metadata:s:v:0", f"rotate={angle}", "-c", "copy", str(video))
        out = tmp_path / f"{angle}.h5"
        extract_faces(video, out, clip=f"r{angle}", settings=FaceSettings.from_config(dict(device="cpu")), threads=1)
        stores[angle] = read_faces(out)
    ref = stores[0]
    assert ref["valid"].all()
    for angle in (90, 180, 270):
        got = stores[angle]
        assert got["crops"].shape == ref["crops"].shape and (got["valid"] == ref["valid"]).all(), angle
        # display pixels, of a face 150 px wide: MTCNN sees the pixels turned, so its boxes move by a pixel or
        # so (measured: median 0.6-0.8, at most 4.9); a sideways box or crop would be off by tens
        moved = np.abs(got["boxes"] - ref["boxes"])
        assert np.median(moved) < 1.5 and moved.max() < 8, (angle, np.median(moved), moved.max())
        assert np.median(np.abs(got["landmarks"] - ref["landmarks"])) < 1, angle
        assert np.abs(got["crops"].astype(int) - ref["crops"].astype(int)).mean() < 4, angle
