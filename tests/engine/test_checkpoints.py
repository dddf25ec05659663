"""The file a pipe's checkpoint is kept in (``FileCheckpointStore``).

- later saves rewrite the file made by the first one in place (same inode, same length: the JSON
  padded with spaces), and what is read back is the last position saved;
- a position that outgrows that room, one longer than a page, and a file removed or replaced
  meanwhile each take a rename again, and are read back whole;
- a data dir made read-only (a read-only mount, ``chattr +i``) stops the saves until it is
  writable again, as it stopped the renames;
- a process killed while it saves, again and again, leaves a checkpoint that is one it saved
  (whole, with the padding, or renamed in whole);
- the engine lets go of the file when its run ends.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import pipenb
from pipenb.engine.checkpoints import FileCheckpointStore, checkpoint_path

from support import REPO_ROOT
from support.faultkit import ReadOnly
from support.waiting import wait_until


def position(offset: int, files: int = 1) -> dict:
    """A ``files`` input's position, ``files`` entries long (each about 120 bytes)."""
    return {
        "files": {
            f"2049:{1000 + i}": {
                "path": f"/var/log/app-{i}.log",
                "offset": offset,
                "fp": "0eb0679fd653f46e",
                "fp_len": 256,
            }
            for i in range(files)
        }
    }


def replaced(path: Path, store: FileCheckpointStore, pos: dict) -> bool:
    """Did ``store.save(pos)`` put another file at ``path`` (the one there before is unlinked), rather
    than rewrite it? (Inode numbers alone cannot tell: a freed one is soon given out again.)"""
    fd = os.open(path, os.O_RDONLY)
    try:
        store.save(pos)
        return os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


def read_back(path: Path) -> dict:
    """The file as any JSON reader sees it (the padding is JSON whitespace)."""
    data = path.read_bytes()
    assert json.loads(data) == orjson.loads(data)
    return orjson.loads(data)


def test_later_saves_rewrite_the_file_in_place(tmp_path: Path):
    path = tmp_path / "checkpoints" / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(10))
    assert path.stat().st_size == FileCheckpointStore.ROOM
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for offset in (20, 30, 7):  # shorter JSON than before too: the rest is padding
        assert not replaced(path, store, position(offset))
        assert path.stat().st_size == FileCheckpointStore.ROOM
        assert read_back(path) == {"version": 1, "position": position(offset)}
    assert FileCheckpointStore(str(path)).load() == position(7)
    store.close()
    assert sorted(os.listdir(path.parent)) == ["p.json"]  # no temporary file left


def test_a_position_that_outgrows_its_room_is_renamed_in(tmp_path: Path):
    path = tmp_path / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(1))
    big = position(2, files=6)  # ~750 bytes: more than the 512 the file was made with
    assert replaced(path, store, big)
    assert read_back(path)["position"] == big
    doc = orjson.dumps({"version": 1, "position": big})
    assert path.stat().st_size == min(FileCheckpointStore.IN_PLACE, 2 * len(doc))
    # what fits the new room is written in place again
    assert not replaced(path, store, position(3, files=6))
    assert FileCheckpointStore(str(path)).load() == position(3, files=6)
    store.close()


def test_a_position_longer_than_a_page_is_always_renamed_in(tmp_path: Path):
    path = tmp_path / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(0, files=60))
    assert len(orjson.dumps(position(0, files=60))) > FileCheckpointStore.IN_PLACE
    for offset in (1, 2):
        assert replaced(path, store, position(offset, files=60))
        assert read_back(path)["position"] == position(offset, files=60)
    store.close()


def test_a_checkpoint_removed_or_replaced_meanwhile_is_made_again(tmp_path: Path):
    path = tmp_path / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(1))
    path.unlink()  # e.g. by hand, or `pipenb run --reset` elsewhere
    store.save(position(2))
    assert FileCheckpointStore(str(path)).load() == position(2)
    other = tmp_path / "other.json"
    other.write_bytes(orjson.dumps({"version": 1, "position": position(99)}))
    other.replace(path)
    store.save(position(3))
    assert FileCheckpointStore(str(path)).load() == position(3)
    store.close()


def test_a_data_dir_made_read_only_stops_the_saves_until_it_is_writable(tmp_path: Path):
    """As the renames did: the open file is not written through while a new open would fail."""
    data = tmp_path / "data"
    path = data / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(1))
    ro = ReadOnly(data)
    if ro.on() is None:
        pytest.skip(f"cannot make a directory read-only here: {ro.why}")
    try:
        with pytest.raises(OSError):
            store.save(position(2))
        assert read_back(path)["position"] == position(1)
    finally:
        ro.off()
    store.save(position(3))
    assert FileCheckpointStore(str(path)).load() == position(3)
    store.close()


def test_reset_removes_the_file_and_the_next_save_makes_it(tmp_path: Path):
    path = tmp_path / "p.json"
    store = FileCheckpointStore(str(path))
    store.save(position(1))
    store.reset()
    assert not path.exists()
    store.save(position(2))
    assert FileCheckpointStore(str(path)).load() == position(2)
    store.close()


SAVER = r"""
import sys
from pipenb.engine.checkpoints import FileCheckpointStore
store = FileCheckpointStore(sys.argv[1])
n = 0
while True:
    n += 1
    # now and then a position that outgrows the room (a rename), most often one that fits
    files = 1 + (n % 50 == 0) * 5
    store.save({"files": {f"1:{i}": {"path": "/x", "offset": n} for i in range(files)}})
    if n == 1:
        print("saving", flush=True)
"""


def saves(path: Path) -> int:
    """How many times the saver saved, by its file; 0 while a read finds the file mid-write
    (a reader is not kept from seeing a page being rewritten: only a writer killed is)."""
    try:
        (entry, *_) = orjson.loads(path.read_bytes())["position"]["files"].values()
    except (orjson.JSONDecodeError, FileNotFoundError):
        return 0
    return int(entry["offset"])


@pytest.mark.parametrize("round_", range(12))
def test_a_process_killed_while_it_saves_leaves_a_checkpoint_it_saved(tmp_path: Path, round_):
    path = tmp_path / "p.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"saving\n"
    # killed once it has saved some hundreds of times, more each round, mid-loop
    wait_until(lambda: saves(path) >= 1 + round_ * 300, 20, "the saver to get on")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    saved = read_back(path)
    assert saved["version"] == 1
    entries = saved["position"]["files"]
    offsets = {e["offset"] for e in entries.values()}
    assert len(offsets) == 1 and min(offsets) >= 1, saved
    assert len(entries) in (1, 6), saved


def test_the_engine_lets_go_of_its_checkpoint_file(tmp_path: Path):
    log = tmp_path / "in.log"
    log.write_text("a\nb\n")
    pipe = pipenb.Pipe.from_yaml(
        f"""
name: let-go
input:
  files: {{path: "{log}", follow: false, format: lines}}
output:
  file: {{path: "{tmp_path / "out.ndjson"}"}}
"""
    )
    data = tmp_path / "data"
    pipe.run(data_dir=str(data))
    ckpt = Path(checkpoint_path(str(data), "let-go")).resolve()
    assert FileCheckpointStore(str(ckpt)).load() is not None
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(ckpt)):
            held.append(target)
    assert held == []
