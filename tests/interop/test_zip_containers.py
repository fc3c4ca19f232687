"""Zip archives as torch.load reads them, proved with real torch.

  CKPT_BIN  the ckpt binary

- torch.save files of every stem length (the record folder) read in ckpt as torch reads them;
- harmless twins: archives whose two readings hold different data.pkl records, one of which
  prints a marker when unpickled. Real torch.load(weights_only=False) in a subprocess shows
  which one torch runs; ckpt inspect refuses the archive, and ckpt scan judges it dangerous and
  attributes the marker pickle to torch's own reading exactly when torch printed the marker;
- archives torch reads in ways other readers do not (upper-case DATA.PKL, a deflated data.pkl):
  ckpt inspect shows exactly the tensors torch returns.
The twins only ever call print(); nothing here runs ckpt on a real payload.
"""

import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib

import pytest
import torch

MARKER = "ckpt-twin-marker"


class Marker:
    """Unpickles as print(MARKER): proof that a pickle was run."""

    def __reduce__(self):
        return (print, (MARKER,))


def saved_records(obj):
    """The records torch.save writes for obj, names without their folder."""
    import zipfile

    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(n.split("/", 1)[1], z.read(n)) for n in z.namelist()]


def local_and_central(out, members):
    """Appends local headers and data; returns the central directory entries."""
    centrals = []
    for name, data, method, local_name in members:
        offset = len(out)
        stored = data if method == 0 else zlib.compress(data)[2:-4]
        crc = zlib.crc32(data)
        lname = local_name if local_name is not None else name
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(stored), len(data), len(lname), 0)
        out += lname + stored
        centrals.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(stored), len(data), len(name), 0, 0, 0, 0, 0, offset
            )
            + name
        )
    return centrals


def eocd(count, size, offset, comment=b""):
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, size, offset, len(comment)) + comment


def members_of(records, folder=b"archive", rename=None, method_of=None):
    out = []
    for rel, data in records:
        name = folder + b"/" + rel.encode()
        if rename and rel in rename:
            name = folder + b"/" + rename[rel]
        out.append((name, data, (method_of or {}).get(rel, 0), None))
    return out


def plain_archive(members):
    out = bytearray()
    cd = b"".join(local_and_central(out, members))
    at = len(out)
    return bytes(out + cd + eocd(len(members), len(cd), at))


def two_readings(torch_records, other_records, layout):
    """One file, two central directories: miniz reads `torch_records`, another reader the other."""
    out = bytearray()
    t_members, o_members = members_of(torch_records), members_of(other_records)
    t_cd = b"".join(local_and_central(out, t_members))
    o_cd = b"".join(local_and_central(out, o_members))
    n = len(t_members)
    t_at = len(out)
    if layout == "stated-offset":
        out += t_cd + o_cd + eocd(n, len(o_cd), t_at)
    elif layout == "comment-eocd":
        out += t_cd
        o_at = len(out)
        out += o_cd + eocd(n, len(o_cd), o_at, eocd(n, len(t_cd), t_at))
    elif layout == "zip64-override":
        out += t_cd
        o_at = len(out)
        out += o_cd
        z = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(t_cd), t_at)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z, 1)
        out += eocd(n, len(o_cd), o_at)
    elif layout == "duplicate-name":
        members = t_members + [m for m in o_members if m[0].endswith(b"data.pkl")]
        return plain_archive(members)
    elif layout == "case-name":
        members = t_members + [
            (m[0].replace(b"data.pkl", b"DATA.pkl"), m[1], 0, None) for m in o_members if m[0].endswith(b"data.pkl")
        ]
        return plain_archive(members)
    else:
        raise ValueError(layout)
    return bytes(out)


def torch_reads(path):
    """torch.load(weights_only=False) in a fresh process: (marker printed, sha256 of 'w')."""
    code = (
        "import sys, hashlib, torch\n"
        "d = torch.load(sys.argv[1], weights_only=False)\n"
        "print('SHA', hashlib.sha256(d['w'].contiguous().numpy().tobytes()).hexdigest())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sha = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("SHA ")][0]
    return MARKER in proc.stdout, sha


def ckpt_json(ckpt_bin, *args):
    proc = subprocess.run([ckpt_bin, *map(str, args)], capture_output=True, text=True, timeout=120)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None), proc.stderr


def sha(t):
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("n", list(range(1, 201)) + ["pytorch_model_epoch_5", "checkpoint_epoch_0010"])
def test_every_stem_length_reads_as_torch_reads_it(ckpt_bin, tmp_path, n):
    stem = "s" * n if isinstance(n, int) else n
    w = torch.arange(7, dtype=torch.float32) * (len(stem) + 1)
    path = tmp_path / f"{stem}.pth"
    torch.save({"w": w}, path)
    back = torch.load(path, weights_only=True)["w"]
    code, report, err = ckpt_json(ckpt_bin, "inspect", "--json", "--hash", path)
    assert code == 0, err
    assert [(t["name"], t["sha256"]) for t in report["tensors"]] == [("w", sha(back))]


LAYOUTS = ["stated-offset", "comment-eocd", "zip64-override", "duplicate-name", "case-name"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("marker_in", ["first", "second"])
def test_twins_show_which_bytes_torch_reads(ckpt_bin, tmp_path, layout, marker_in):
    a = saved_records({"w": torch.ones(3), "m": Marker()} if marker_in == "first" else {"w": torch.ones(3)})
    b = saved_records({"w": torch.zeros(3)} if marker_in == "first" else {"w": torch.zeros(3), "m": Marker()})
    path = tmp_path / "twin.pth"
    path.write_bytes(two_readings(a, b, layout))
    marker, torch_sha = torch_reads(path)
    if layout not in ("duplicate-name", "case-name"):
        # Which directory torch read, told by the tensor; the marker must travel with it.
        read_first = torch_sha == sha(torch.ones(3))
        assert marker == (read_first == (marker_in == "first"))
    code, _, err = ckpt_json(ckpt_bin, "inspect", "--json", path)
    assert code == 2, f"ckpt read an archive whose readings differ:\n{err}"
    code, report, err = ckpt_json(ckpt_bin, "scan", "--json", path)
    assert report is not None, err
    file = report["files"][0] if "files" in report else report
    assert file["verdict"] == "dangerous"
    if layout in ("duplicate-name", "case-name"):
        return  # one directory: both copies are torch's candidates, and both are judged
    torch_pickles = [p for p in file["pickles"] if "(in " not in p["record"]]
    printed = any(g["name"] == "builtins.print" for p in torch_pickles for g in p["globals"])
    assert printed == marker, json.dumps(file["pickles"], indent=1)


@pytest.mark.parametrize("variant", ["upper-case", "deflated", "deflated-upper-case"])
def test_archives_only_torch_reads_this_way(ckpt_bin, tmp_path, variant):
    w = torch.linspace(-1, 1, 11)
    records = saved_records({"w": w})
    rename = {"data.pkl": b"DATA.PKL"} if "upper" in variant else None
    method_of = {"data.pkl": 8} if "deflated" in variant else None
    path = tmp_path / "odd.pth"
    path.write_bytes(plain_archive(members_of(records, rename=rename, method_of=method_of)))
    back = torch.load(path, weights_only=True)["w"]
    code, report, err = ckpt_json(ckpt_bin, "inspect", "--json", "--hash", path)
    assert code == 0, err
    assert [(t["name"], t["sha256"]) for t in report["tensors"]] == [("w", sha(back))]
