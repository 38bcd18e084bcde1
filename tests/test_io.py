"""Atomic outputs: a failure or kill mid-write leaves neither a partial file nor a temporary one."""

import json
import os

import pandas as pd
import pytest

from emofusion.errors import InputError
from emofusion.io import atomic_path, read_parquet_metadata, write_json, write_parquet
from emofusion.provenance import config_hash, provenance


def test_success_renames(tmp_path):
    final = tmp_path / "sub" / "x.h5"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.endswith(".h5") and tmp != final
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert [p.name for p in final.parent.iterdir()] == ["x.h5"]


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "x.parquet"
    final.write_text("previous result")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert final.read_text() == "previous result"  # the old output is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_directory_mode(tmp_path):
    final = tmp_path / "d"
    with atomic_path(final, directory=True) as tmp:
        (tmp / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(ValueError), atomic_path(final, directory=True, owned={"a"}.__contains__) as tmp:
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    with atomic_path(final, directory=True, owned={"a"}.__contains__) as tmp:  # its own earlier output: replaced
        (tmp / "a").write_text("2")
    assert (final / "a").read_text() == "2"


def test_a_folder_output_never_replaces_what_the_tool_did_not_write(tmp_path):
    final = tmp_path / "d"
    (final / "sub").mkdir(parents=True)
    (final / "a").write_text("ours")
    (final / "thesis.txt").write_text("mine")
    (final / "sub" / "chapter.txt").write_text("mine too")
    ran = []
    refusal = rf"^{final} holds files emofusion did not write there \(sub, thesis.txt\)"
    with pytest.raises(InputError, match=refusal):
        with atomic_path(final, directory=True, owned={"a"}.__contains__, what="bundle"):
            ran.append(True)
    assert not ran  # refused before the block did any work
    assert (final / "thesis.txt").read_text() == "mine" and (final / "sub" / "chapter.txt").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # and no temporary


def test_a_file_put_into_the_folder_meanwhile_is_kept_too(tmp_path):
    final = tmp_path / "d"
    final.mkdir()
    with pytest.raises(InputError, match="figure1.png"):
        with atomic_path(final, directory=True, owned={"a"}.__contains__) as tmp:
            (tmp / "a").write_text("new")
            (final / "figure1.png").write_text("the user's")  # while the command ran
    assert (final / "figure1.png").read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_file_output_refuses_a_folder_before_the_block(tmp_path):
    (tmp_path / "model.pt" / "mine").mkdir(parents=True)
    ran = []
    with pytest.raises(InputError, match=rf"^{tmp_path / 'model.pt'} is a folder, not a file"):
        with atomic_path(tmp_path / "model.pt"):
            ran.append(True)
    assert not ran and sorted(p.name for p in tmp_path.rglob("*")) == ["mine", "model.pt"]


def test_a_folder_output_refuses_a_file_and_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(InputError, match=r"README.md is a file, not a folder"):
        with atomic_path(tmp_path / "README.md", directory=True):
            pass
    assert (tmp_path / "README.md").read_text() == "mine"
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path.parent)):
        with pytest.raises(InputError, match=rf"^{out} is the current folder or holds it"):
            with atomic_path(out, directory=True):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_parquet_metadata_round_trip(tmp_path):
    meta = provenance(config={"a": 1}, seed=3)
    write_parquet(tmp_path / "t.parquet", pd.DataFrame({"x": [1, 2]}), metadata=meta)
    back = read_parquet_metadata(tmp_path / "t.parquet")
    assert back["seed"] == 3 and back["config_hash"] == config_hash({"a": 1})
    assert back["versions"]["emofusion"] and "torch" in back["versions"]


def test_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 2, "b": 1}
    assert (tmp_path / "a.json").read_text().index('"a"') < (tmp_path / "a.json").read_text().index('"b"')


# A writer that gets SIGKILLed mid-write (no exception handler, no finally block runs) and its rerun.
WRITER = """
import sys, time
from emofusion.io import atomic_path
with atomic_path(sys.argv[1], directory=sys.argv[2] == "dir") as tmp:
    if sys.argv[2] == "dir":
        (tmp / "part").write_text("half")
    else:
        with open(tmp, "w") as f:
            f.write("half")
    print(tmp, flush=True)
    time.sleep(120)
"""


def _killed_writer(final, mode: str = "file"):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), mode], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.exists(), "the writer did not start writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return tmp


@pytest.mark.parametrize("mode", ["file", "dir"])
def test_a_rerun_after_a_kill_leaves_one_output_and_no_temporary(tmp_path, mode):
    final = tmp_path / ("x.h5" if mode == "file" else "x")
    # Neighbours that must survive: another output's temporary, names close to ours, the user's files.
    keep = [
        ".y.h5.tmp-abcd1234.h5",
        ".x.h5.tmp-notes.txt",
        f".{final.name}.tmp-abcd1234.h5.bak",
        f"{final.name}.tmp-abcd1234",
        ".xx.h5.tmp-abcd1234.h5",
        "notes.txt",
    ]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    first = _killed_writer(final, mode)
    assert first.exists() and not final.exists()  # SIGKILL: the writer's own cleanup never ran
    second = _killed_writer(final, mode)  # killed again: it removed the first one's temporary, left its own
    assert second.exists() and not first.exists() and not final.exists()
    with atomic_path(final, directory=mode == "dir") as tmp:  # the rerun
        if mode == "dir":
            (tmp / "part").write_text("complete")
        else:
            tmp.write_text("complete")
    assert (final / "part" if mode == "dir" else final).read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, *keep])
    assert all((tmp_path / name).read_text() == "not ours" for name in keep)


def test_stale_temporaries_are_only_those_of_the_output(tmp_path):
    from emofusion.io import remove_stale_temporaries

    ours = [tmp_path / ".clip.h5.tmp-k2_9zq0a.h5", tmp_path / ".clip.h5.tmp-00000000"]
    others = [
        tmp_path / ".clip.h5.tmp-k2_9zq0a.parquet",
        tmp_path / ".clip2.h5.tmp-k2_9zq0a.h5",
        tmp_path / ".clip.h5.tmp-k2_9zq.h5",
        tmp_path / "clip.h5",
    ]
    for p in ours + others:
        p.write_text("")
    assert sorted(remove_stale_temporaries(tmp_path / "clip.h5")) == sorted(ours)
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert remove_stale_temporaries(tmp_path / "missing" / "clip.h5") == []


def test_a_temporary_is_stale_only_when_its_writer_is_gone(tmp_path):
    import subprocess
    import sys
    import time

    from emofusion.io import FOREIGN_STALE_S, _host, remove_stale_temporaries

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has ended (its pid not reused within this test)
    host = _host()
    stale = [tmp_path / f".clip.h5.tmp-{host}-{dead}-k2_9zq0a.h5", tmp_path / f".clip.h5.tmp-other-{dead}-abcd1234.h5"]
    live = [tmp_path / f".clip.h5.tmp-{host}-{os.getpid()}-k2_9zq0a.h5", tmp_path / ".clip.h5.tmp-other-1-abcd1234.h5"]
    for p in stale + live:
        p.write_text("")
    old = time.time() - FOREIGN_STALE_S - 60  # another host's writer that has not written for over a day
    os.utime(stale[1], (old, old))
    assert sorted(remove_stale_temporaries(tmp_path / "clip.h5")) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(live)


# Writes `final` through atomic_path, then waits (stdin) before it renames: a second writer runs meanwhile.
SLOW_WRITER = """
import sys
from emofusion.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("first")
    print(tmp, flush=True)
    sys.stdin.readline()
"""


def test_two_processes_writing_one_output_at_once_both_succeed(tmp_path):
    """Two predicts sharing a --cache write the same entry at once: the second must not delete the first's
    temporary as a killed writer's (the first then failed to rename it: FileNotFoundError)."""
    import subprocess
    import sys
    from pathlib import Path

    final = tmp_path / "cache" / "audio-abc.wav"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(final)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        tmp = Path(first.stdout.readline().strip())
        assert tmp.is_file(), "the first writer did not start"
        with atomic_path(final) as mine:  # this process: the second writer
            mine.write_text("second")
        assert tmp.is_file()  # the first writer's temporary survived the second's start
        assert final.read_text() == "second"
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
        first.stdin.close()
        first.stdout.close()
    assert final.read_text() == "first"  # the last rename wins, with a complete file
    assert sorted(p.name for p in final.parent.iterdir()) == ["audio-abc.wav"]
