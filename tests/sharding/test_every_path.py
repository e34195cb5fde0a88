"""Every path under a source is a sample or a logged failure: links, nested archives, unreadable folders,
non-regular files; a link out of the source root is refused; no file content reaches the logs."""

from __future__ import annotations

import errno
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import trimesh

from sharding.containers import UnsafeMemberError, open_container
from sharding.records import ShapeError
from sharding.shard_corpus import main
from tests.sharding.archives import write_tar, write_tree, write_zip

SECRET = "TOPSECRET-7f3a"
MESH = trimesh.creation.box().export(file_type="obj").encode()


def shard(tmp: Path, source: Path, *extra: str) -> tuple[int, Path]:
    out = tmp / "out"
    code = main(["--source", f"generic:{source}", "--output", str(out), "--in-process", "--no-progress",
                 "--num-points", "2048", "--max-failure-ratio", "1", *extra])
    return code, out


def errors(out: Path) -> dict[str, dict]:
    """errors.jsonl by the path of each failed input inside its container."""
    return {e["path"].split("!")[-1]: e for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}


def counts(out: Path) -> tuple[int, int, int]:
    m = json.loads((out / "manifest.json").read_text())
    return m["total_inputs"], m["total_samples"], m["total_failed"]


def test_link_members_of_a_tar_are_logged_failures(tmp_path):
    tar = write_tar(tmp_path / "links.tar", {"mesh.obj": MESH}, {
        "soft.obj": (tarfile.SYMTYPE, "mesh.obj"),
        "hard.obj": (tarfile.LNKTYPE, "mesh.obj"),
        "passwd.xyz": (tarfile.SYMTYPE, "/etc/passwd"),
    })
    code, out = shard(tmp_path, tar)
    assert code == 0 and counts(out) == (4, 1, 3)
    failed = errors(out)
    assert failed["soft.obj"]["reason"].endswith("is a symbolic link: links are not followed")
    assert failed["hard.obj"]["reason"].endswith("is a hard link: links are not followed")
    assert failed["passwd.xyz"]["reason"].endswith("is a symbolic link: links are not followed")


def test_symbolic_link_members_of_a_zip_are_logged_failures(tmp_path):
    path = tmp_path / "links.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mesh.obj", MESH)
        link = zipfile.ZipInfo("passwd.xyz")
        link.external_attr = 0o120777 << 16  # what `zip --symlinks` stores: the target path as the data
        z.writestr(link, "/etc/passwd")
    code, out = shard(tmp_path, path)
    assert code == 0 and counts(out) == (2, 1, 1)
    assert errors(out)["passwd.xyz"]["reason"].endswith("is a symbolic link: links are not followed")


def test_archives_inside_a_directory_are_read_and_archives_inside_archives_refused(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("deep.obj", MESH)
    root = write_tree(tmp_path / "tree", {"plain.obj": MESH})
    write_zip(root / "sub" / "models.zip", {"chairs/a.obj": MESH, "b.obj": MESH})
    write_tar(root / "more.tar", {"c.obj": MESH})
    write_zip(root / "nested.zip", {"d.obj": MESH, "inner.zip": inner.getvalue()})
    code, out = shard(tmp_path, root)
    assert code == 0 and counts(out) == (6, 5, 1)
    failed = errors(out)
    assert list(failed) == ["inner.zip"]
    assert failed["inner.zip"]["reason"].endswith("an archive inside an archive is not read: extract it first")
    assert failed["inner.zip"]["path"] == f"{root}/nested.zip!inner.zip"


def test_generic_labels_members_of_nested_archives_by_their_folder(tmp_path):
    from sharding.sources import SourceSpec, make_reader

    root = write_tree(tmp_path / "tree", {"chairs/plain.obj": MESH})
    write_zip(root / "chairs" / "more.zip", {"a.obj": MESH, "tables/b.obj": MESH})
    reader = make_reader(SourceSpec("generic", str(root), options={"label_from_parent": True}))
    refs = {(r.container, r.member): (r.uid, r.label) for r in reader.list_inputs()}
    assert refs == {
        (str(root), "chairs/plain.obj"): ("chairs/plain.obj", "chairs"),
        (f"{root}/chairs/more.zip", "a.obj"): ("chairs/more.zip/a.obj", "chairs"),
        (f"{root}/chairs/more.zip", "tables/b.obj"): ("chairs/more.zip/tables/b.obj", "tables"),
    }


def lock(monkeypatch, folder: Path) -> None:
    """Listing `folder` raises the PermissionError a non-root user gets for a folder without read permission.

    Root reads every folder whatever its mode, so chmod cannot make one unreadable where tests run as root;
    os.scandir (which fsspec's local listing calls) raises instead, exactly as the kernel would.
    """
    scandir = os.scandir

    def denied(path=".", *args):
        if isinstance(path, (str, os.PathLike)) and Path(path) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", denied)


def test_an_unreadable_folder_stops_the_listing(tmp_path, monkeypatch, capsys):
    root = write_tree(tmp_path / "tree", {"a/one.obj": MESH, "locked/two.obj": MESH, "z/three.obj": MESH})
    lock(monkeypatch, root / "locked")
    code, out = shard(tmp_path, root)
    assert code == 1
    err = capsys.readouterr().err
    assert "error: cannot list the sources: PermissionError" in err and f"{root}/locked" in err
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tar"))


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_link_out_of_the_source_root_stops_the_listing(tmp_path, capsys, kind):
    outside = write_tree(tmp_path / "outside", {"secret.xyz": f"{SECRET} 1 2\n".encode()})
    root = write_tree(tmp_path / "tree", {"good.obj": MESH})
    if kind == "file":
        (root / "evil.xyz").symlink_to(outside / "secret.xyz")
    else:
        (root / "evil").symlink_to(outside)
    code, out = shard(tmp_path, root)
    assert code == 1
    captured = capsys.readouterr()
    refusal = "error: cannot list the sources: UnsafeMemberError: symbolic link leaves the source root: evil"
    assert refusal in captured.err
    assert SECRET not in captured.out + captured.err
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tar"))


def test_links_inside_the_root_read_their_file_and_never_loop(tmp_path):
    root = write_tree(tmp_path / "tree", {"real/a.obj": MESH})
    (root / "alias.obj").symlink_to(root / "real" / "a.obj")
    (root / "loop").symlink_to(root)  # a folder link inside the root: its files are listed under their own path
    with open_container(str(root)) as c:
        assert sorted(c.members()) == ["alias.obj", "real/a.obj"]
        assert c.read("alias.obj") == MESH


def test_reading_through_a_link_out_of_the_root_is_refused(tmp_path):
    """What a decoder asks for by name (a glTF buffer, an OBJ's material) cannot leave the root either."""
    outside = write_tree(tmp_path / "outside", {"secret.bin": SECRET.encode()})
    root = write_tree(tmp_path / "tree", {"model.gltf": b"{}"})
    with open_container(str(root)) as c:
        (root / "buffers").symlink_to(outside)  # after listing
        with pytest.raises(UnsafeMemberError, match="leaves the source root: buffers/secret.bin"):
            c.read("buffers/secret.bin")


def test_a_special_file_is_a_logged_failure_and_never_opened(tmp_path):
    root = write_tree(tmp_path / "tree", {"good.obj": MESH})
    fifo = root / "pipe.xyz"
    os.mkfifo(fifo)

    def feed() -> None:  # were the fifo opened for reading, this would give it content (and unblock it)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.01)
                continue
            os.write(fd, f"{SECRET} 1 2\n".encode())
            os.close(fd)
            return

    threading.Thread(target=feed, daemon=True).start()
    with open_container(str(root)) as c:
        assert sorted(c.members()) == ["good.obj", "pipe.xyz"]
        with pytest.raises(ShapeError, match="pipe.xyz is not a regular file"):
            c.read("pipe.xyz")


def h5_bytes(text: str) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["points"] = np.array([[text]], dtype=h5py.string_dtype())
    return buf.getvalue()


# A file of each decoded suffix whose content is a secret: every one fails, and the reason never quotes it.
SECRET_FILES = {
    "a.xyz": f"{SECRET} 1 2\n".encode(),
    "a.pts": f"1 2 {SECRET}\n".encode(),
    "a.txt": f"{SECRET}\n".encode() + "é".encode("latin-1"),
    "a.obj": f"{SECRET}\nv 1 2\n".encode(),
    "a.off": f"{SECRET} OFF\n".encode(),
    "b.off": f"OFF\n{SECRET}\n".encode(),
    "a.ply": f"ply\nformat ascii 1.0\nelement {SECRET} 3\nproperty float x\nend_header\n1\n2\n3\n".encode(),
    "a.stl": f"solid {SECRET}\nfacet normal {SECRET}\n".encode(),
    "a.glb": f"glTF{SECRET}".encode() * 4,
    "a.gltf": f'{{"{SECRET}": 1, "buffers": [{{"uri": "{SECRET}.bin"}}]}}'.encode(),
    "a.npy": f"\x93NUMPY{SECRET}".encode(),
    "a.npz": f"PK{SECRET}".encode(),
    "a.h5": h5_bytes(SECRET),
}


def test_no_file_content_is_quoted_in_errors_or_logs(tmp_path, capsys):
    root = write_tree(tmp_path / "tree", SECRET_FILES)
    code, out = shard(tmp_path, root)
    assert code == 0 and counts(out) == (len(SECRET_FILES), 0, len(SECRET_FILES))
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    for name, error in errors(out).items():
        assert SECRET not in json.dumps(error), error
        assert error["reason"], name
