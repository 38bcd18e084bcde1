"""ABAW submission files: the writer (plain and sample-file driven) and the validator on purpose-broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofusion.errors import InputError
from emofusion.report.submission import (
    HEADER,
    build_submission,
    check_submission,
    image_locations,
    read_sample,
    write_submission,
)

FRAMES = {"clip_a": 4, "clip_b_left": 3}  # test clips -> frame count N
COLUMNS = ["valence", "arousal"]


def predictions(frames=FRAMES, drop=()) -> pd.DataFrame:
    """One row per frame (0-based), values that encode (clip, frame) so a wrong row is visible; plus a train clip
    that must never reach a submission."""
    rows = []
    for k, (clip, n) in enumerate({**frames, "train_clip": 5}.items()):
        for f in range(n):
            if (clip, f) not in drop:
                rows.append({"clip": clip, "frame": f, "valence": 0.1 * f + 0.01 * k, "arousal": -0.1 * f})
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=0)  # order must not matter


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_text() -> str:
    rows = [f"clip_a/{i:05d}.jpg,{0.1 * i:.3f},-0.2" for i in range(1, 5)]
    rows += [f"clip_b_left/{i:05d}.jpg,0.5,{-0.1 * i:.3f}" for i in range(1, 4)]
    return HEADER + "\n" + "\n".join(rows) + "\n"


def test_written_submission_has_every_frame_and_passes_the_check(tmp_path):
    preds = predictions()
    preds.loc[preds["clip"] == "clip_a", "valence"] *= 20  # out of range: must be clipped to [-1, 1]
    rows = build_submission(preds, FRAMES, run="runs/x", variant_columns=COLUMNS)
    path = tmp_path / "sub.csv"
    write_submission(path, rows)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    assert [ln.split(",")[0] for ln in lines[1:]] == (
        [f"clip_a/{i:05d}.jpg" for i in range(1, 5)] + [f"clip_b_left/{i:05d}.jpg" for i in range(1, 4)]
    )
    assert lines[1] == "clip_a/00001.jpg,0.000000,0.000000"  # not -0.000000
    assert lines[3] == "clip_a/00003.jpg,1.000000,-0.200000"  # 0.2 * 20 clipped
    assert lines[7] == "clip_b_left/00003.jpg,0.210000,-0.200000"  # frame 3 = 0-based row 2 of the clip
    verdict = check_submission(path, FRAMES)
    assert verdict == {"file": str(path), "ok": True, "rows": 7, "clips": 2, "errors": []}


def test_a_frame_without_prediction_names_the_run_and_clip():
    with pytest.raises(InputError, match=r"runs/seed0: no prediction .* 1 test frame.*clip_b_left \(1 of 3"):
        build_submission(predictions(drop={("clip_b_left", 1)}), FRAMES, run="runs/seed0", variant_columns=COLUMNS)
    nan = predictions()
    nan.loc[(nan["clip"] == "clip_a") & (nan["frame"] == 0), "arousal"] = np.nan
    with pytest.raises(InputError, match="NaN"):
        build_submission(nan, FRAMES, run="runs/seed0", variant_columns=COLUMNS)
    extra = pd.concat([predictions(), pd.DataFrame([{"clip": "clip_a", "frame": 4, "valence": 0, "arousal": 0}])])
    with pytest.raises(InputError, match="outside the manifest's frames.*clip_a frames 4..4 for 4 frames"):
        build_submission(extra, FRAMES, run="runs/seed0", variant_columns=COLUMNS)


def test_sample_file_rows_are_followed_exactly_with_padding_and_truncation(tmp_path):
    # clip_b_left listed first and 5 frames long (we have 3: pad with frame 3); clip_a only 2 of its 4 frames.
    sample_rows = [f"clip_b_left/{i:05d}.jpg,0,0" for i in range(1, 6)] + [f"clip_a/{i:05d}.jpg,0,0" for i in (1, 2)]
    sample = read_sample(write_csv(tmp_path / "sample.csv", HEADER + "\n" + "\n".join(sample_rows) + "\n"))
    rows = build_submission(predictions(), FRAMES, run="r", variant_columns=COLUMNS, sample=sample)
    assert list(rows["image_location"]) == [r.split(",")[0] for r in sample_rows]
    b = rows["valence"].to_numpy()[:5]
    np.testing.assert_allclose(b, [0.01, 0.11, 0.21, 0.21, 0.21])  # frames 4, 5 repeat frame 3
    np.testing.assert_allclose(rows["arousal"].to_numpy()[5:], [0.0, -0.1])
    path = tmp_path / "sub.csv"
    write_submission(path, rows)
    assert check_submission(path, FRAMES, sample=sample)["ok"]
    # Without the sample, the same file is wrong for the manifest's frame counts.
    plain = check_submission(path, FRAMES)
    assert not plain["ok"] and any("outside 1..3" in e for e in plain["errors"])
    # Rows in another order than the sample's are caught.
    lines = path.read_text().splitlines()
    write_csv(path, "\n".join([lines[0], *lines[6:], *lines[1:6]]) + "\n")
    swapped = check_submission(path, FRAMES, sample=sample)
    assert swapped["errors"] == [
        "rows are not in the sample submission's order: row 2 is 'clip_a/00001.jpg', "
        "the sample has 'clip_b_left/00001.jpg'"
    ]


def test_sample_file_errors(tmp_path):
    unknown = write_csv(tmp_path / "u.csv", HEADER + "\nclip_a/00001.jpg,0,0\nnot_ours/00001.jpg,0,0\n")
    with pytest.raises(InputError, match="not_ours.*not test clips of the manifest"):
        build_submission(predictions(), FRAMES, run="r", variant_columns=COLUMNS, sample=read_sample(unknown))
    with pytest.raises(InputError, match="report.sample_submission: .*missing.csv does not exist"):
        read_sample(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="not an 'image_location,valence,arousal' header"):
        read_sample(write_csv(tmp_path / "h.csv", "valence,arousal\n0,0\n"))
    with pytest.raises(InputError, match=r"row 3: 'clip_a/00003.jpg' where frame 2 of clip clip_a"):
        read_sample(write_csv(tmp_path / "g.csv", HEADER + "\nclip_a/00001.jpg,0,0\nclip_a/00003.jpg,0,0\n"))
    with pytest.raises(InputError, match=r"row 2: image_location 'clip_a/1.png' is not"):
        read_sample(write_csv(tmp_path / "f.csv", HEADER + "\nclip_a/1.png,0,0\n"))
    # A BOM, CRLF lines and value columns holding anything are the organisers' business, not an error.
    sample = read_sample(
        write_csv(
            tmp_path / "bom.csv",
            "\ufeffimage_location,valence,arousal\r\nclip_a/00001.jpg,,\r\nclip_a/00002.jpg,x,y\r\n",
        )
    )
    assert list(sample["image_location"]) == ["clip_a/00001.jpg", "clip_a/00002.jpg"]
    assert list(read_sample(write_csv(tmp_path / "one.csv", "image_location\nclip_a/00001.jpg\n"))["frame"]) == [1]


def _break(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


BROKEN = {
    "missing frame": (
        lambda t: _break(t, "clip_a/00003.jpg,0.300,-0.2\n", ""),
        "clip clip_a: 1 of its 4 frames missing: 3",
    ),
    "missing first frames": (
        lambda t: _break(_break(t, "clip_b_left/00001.jpg,0.5,-0.100\n", ""), "clip_b_left/00002.jpg,0.5,-0.200\n", ""),
        "clip clip_b_left: 2 of its 3 frames missing: 1-2",
    ),
    "duplicate": (
        lambda t: _break(
            t, "clip_a/00002.jpg,0.200,-0.2\n", "clip_a/00002.jpg,0.200,-0.2\nclip_a/00002.jpg,0.200,-0.2\n"
        ),
        "duplicate image_location in 1 row(s): row 4 clip_a/00002.jpg",
    ),
    "NaN": (
        lambda t: _break(t, "clip_a/00002.jpg,0.200", "clip_a/00002.jpg,nan"),
        "valence is NaN or infinite in 1 row(s): row 3 ('nan')",
    ),
    "infinite": (
        lambda t: _break(t, "clip_b_left/00003.jpg,0.5,-0.300", "clip_b_left/00003.jpg,0.5,-inf"),
        "arousal is NaN or infinite in 1 row(s): row 8 ('-inf')",
    ),
    "empty value": (
        lambda t: _break(t, "clip_a/00004.jpg,0.400,-0.2", "clip_a/00004.jpg,,-0.2"),
        "valence is not a number in 1 row(s): row 5 ('')",
    ),
    "out of range": (
        lambda t: _break(t, "clip_a/00001.jpg,0.100,-0.2", "clip_a/00001.jpg,1.0001,-0.2"),
        "valence is outside [-1, 1] in 1 row(s): row 2 ('1.0001')",
    ),
    "wrong header": (
        lambda t: _break(t, HEADER, "image,valence,arousal"),
        "header is 'image,valence,arousal'; it must be exactly 'image_location,valence,arousal'",
    ),
    "header with spaces": (
        lambda t: _break(t, HEADER, "image_location, valence, arousal"),
        "header is 'image_location, valence, arousal'",
    ),
    "unknown clip": (
        lambda t: t + "someone_else/00001.jpg,0,0\nsomeone_else/00002.jpg,0,0\n",
        "1 clip(s) not in the manifest's test clips: someone_else (2 rows from row 9)",
    ),
    "missing clip": (
        lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("clip_b_left")) + "\n",
        "1 expected clip(s) have no rows: clip_b_left",
    ),
    "bad location": (
        lambda t: _break(t, "clip_a/00004.jpg", "clip_a/4.jpg"),
        "image_location is not <clip>/%05d.jpg in 1 row(s): row 5 'clip_a/4.jpg'",
    ),
    "frame beyond N": (
        lambda t: t + "clip_b_left/00004.jpg,0,0\n",
        "clip clip_b_left: 1 frame number(s) outside 1..3: 4",
    ),
    "out of order": (
        lambda t: _break(
            _break(t, "clip_a/00001.jpg", "clip_a/TMP.jpg"), "clip_a/00002.jpg", "clip_a/00001.jpg"
        ).replace("clip_a/TMP.jpg", "clip_a/00002.jpg"),
        "clip clip_a: frames not in ascending order from row 3",
    ),
    "two fields": (
        lambda t: "image_location,valence\n" + "\n".join(ln.rsplit(",", 1)[0] for ln in t.splitlines()[1:]) + "\n",
        "Expected 3 columns, got 2: clip_a/00001.jpg,0.100",
    ),
}


def test_the_good_file_passes(tmp_path):
    assert check_submission(write_csv(tmp_path / "ok.csv", good_text()), FRAMES)["ok"]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_files_are_caught_with_a_useful_message(tmp_path, kind):
    breaker, message = BROKEN[kind]
    path = write_csv(tmp_path / "broken.csv", breaker(good_text()))
    verdict = check_submission(path, FRAMES)
    assert not verdict["ok"]
    assert any(message in e for e in verdict["errors"]), verdict["errors"]


def test_many_problems_are_counted_not_all_listed(tmp_path):
    rows = [f"clip_a/{i:05d}.jpg,2,0" for i in range(1, 5)] + [f"clip_b_left/{i:05d}.jpg,2,0" for i in range(1, 4)]
    verdict = check_submission(write_csv(tmp_path / "s.csv", HEADER + "\n" + "\n".join(rows) + "\n"), FRAMES)
    assert verdict["errors"] == [
        "valence is outside [-1, 1] in 7 row(s): row 2 ('2'), row 3 ('2'), row 4 ('2'), "
        "row 5 ('2'), row 6 ('2'), ... (7 in all)"
    ]


def test_missing_or_empty_file(tmp_path):
    assert check_submission(tmp_path / "none.csv", FRAMES)["errors"] == [f"{tmp_path / 'none.csv'} does not exist"]
    verdict = check_submission(write_csv(tmp_path / "e.csv", HEADER + "\n"), FRAMES)
    assert verdict["errors"] == ["2 expected clip(s) have no rows: clip_a, clip_b_left"]


def test_image_locations_pad_to_five_digits_and_grow_beyond():
    got = image_locations(np.array(["a", "b"], dtype=object), np.array([7, 123456]))
    assert list(got) == ["a/00007.jpg", "b/123456.jpg"]


def test_check_submission_command(tmp_path, caplog):
    import json

    from emofusion.cli import main
    from emofusion.io import write_parquet

    manifest = tmp_path / "manifest.parquet"
    write_parquet(
        manifest,
        pd.DataFrame(
            {
                "clip": ["clip_a", "clip_b_left", "train_clip"],
                "video_id": ["a", "b", "t"],
                "video": ["a.mp4"] * 3,
                "audio": ["a.mp4"] * 3,
                "split": ["test", "test", "train"],
                "fold": [-1, -1, 1],
                "annotation": None,
                "crops": None,
                "subject": None,
                "frames": [4, 3, 5],
                "fps": [30.0] * 3,
            }
        ),
    )
    good = write_csv(tmp_path / "good.csv", good_text())
    assert main(["check-submission", "--manifest", str(manifest), str(good), "--out", str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["ok"]
    bad = write_csv(tmp_path / "bad.csv", BROKEN["missing clip"][0](good_text()))
    assert main(["check-submission", "--manifest", str(manifest), str(bad)]) == 1
    assert "is not a valid submission" in caplog.text and "clip_b_left" in caplog.text
    # With a sample file listing clip_a only, the good file has a clip too many.
    rows = "\n".join(f"clip_a/{i:05d}.jpg,0,0" for i in range(1, 5))
    sample = write_csv(tmp_path / "sample.csv", HEADER + "\n" + rows + "\n")
    assert main(["check-submission", "--manifest", str(manifest), str(good), "--sample", str(sample)]) == 1
    assert "not in the sample submission: clip_b_left" in caplog.text


def test_interleaved_clips_are_fine_and_several_faults_are_all_listed(tmp_path):
    lines = good_text().splitlines()
    interleaved = [lines[0], lines[1], lines[5], lines[2], lines[6], lines[3], lines[7], lines[4]]
    assert check_submission(write_csv(tmp_path / "i.csv", "\n".join(interleaved) + "\n"), FRAMES)["ok"]
    faults = [
        lines[0],
        lines[1],
        lines[1],
        "clip_a/00004.jpg,0.4,2",
        "clip_b_left/00003.jpg,x,0",
        "other/00001.jpg,0,0",
    ]
    verdict = check_submission(write_csv(tmp_path / "f.csv", "\n".join(faults) + "\n"), FRAMES)
    assert verdict["errors"] == [
        "valence is not a number in 1 row(s): row 5 ('x')",
        "arousal is outside [-1, 1] in 1 row(s): row 4 ('2')",
        "1 clip(s) not in the manifest's test clips: other (1 rows from row 6)",
        "duplicate image_location in 1 row(s): row 3 clip_a/00001.jpg",
        "clip clip_a: 2 of its 4 frames missing: 2-3",
        "clip clip_b_left: 2 of its 3 frames missing: 1-2",
    ]
    assert verdict["clips"] == 2 and verdict["rows"] == 5
