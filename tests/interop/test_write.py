"""What ckpt writes must load in PyTorch / safetensors as what PyTorch saved.

Environment:
  CKPT_BIN        the ckpt binary; conversions run `$CKPT_BIN convert IN OUT [options]`
  CKPT_FIXTURES   folder with expected.json and the fixtures (default: <repo>/fixtures)

Every fixture is converted to .safetensors and to .pth:
* safetensors: `safetensors.torch.load_file` gives PyTorch's tensors (names, dtypes, shapes,
  SHA-256 of the elements from expected.json); the file is byte-identical to
  `safetensors.torch.save_file` of those tensors with the same metadata (save_file writes
  `__metadata__` in hash order, which varies between runs: that one object may be permuted);
  checkpoint metadata is carried as str -> str; dtypes safetensors lacks (complex32, complex128) fail
  with an error naming the tensor and leave no file.
* pth: `torch.load(weights_only=True)` (no map_location for CPU-tagged files) gives PyTorch's
  tensors with layout (stride, offset), requires_grad, Parameter-ness, storage sharing, device
  tags and metadata; the zip has correct CRCs and 64-byte aligned records; libtorch's C++
  unpickler (`torch._C._pickle_load_obj`, what tch uses) loads it too where the content is
  something libtorch reads (no float8/uint16+ dtypes, no bytes, CPU).
* sharded outputs load through their index; --dedupe drops exact duplicates as huggingface's
  convert does. (Forced zip64 archives: test_examples.py.)
"""

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()
EXPECTED_FILE = FIXTURES / "expected.json"
# dtypes libtorch's C++ unpickler cannot rebuild (they need _rebuild_tensor_v3).
V3_DTYPES = {"float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
             "uint16", "uint32", "uint64", "complex32"}
NO_SAFETENSORS = {"complex32", "complex128"}


def _load_expected():
    try:
        with open(EXPECTED_FILE, encoding="utf-8") as fh:
            return json.load(fh)["fixtures"]
    except (OSError, ValueError, KeyError) as e:
        return e


EXPECTED = _load_expected()
CASES = list(EXPECTED) if isinstance(EXPECTED, dict) else ["<expected.json missing>"]


def _expected(case):
    if not isinstance(EXPECTED, dict):
        pytest.fail(f"cannot read {EXPECTED_FILE}: {EXPECTED!r}", pytrace=False)
    return EXPECTED[case]


def _executable(var, hint):
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: {hint}", pytrace=False)
    path = shutil.which(value) or value
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{var}={value!r} is not an executable file", pytrace=False)
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def write_bin():
    """The converter as users run it: `ckpt convert`."""
    return [_executable("CKPT_BIN", "export CKPT_BIN=target/release/ckpt"), "convert"]


def convert(write_bin, src, out, *args, expect_ok=True):
    cmd = [*write_bin, str(src), str(out), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr}", pytrace=False)
    return proc


# --- helpers after fixtures/generate.py ----------------------------------------------------


def tensor_bytes(t):
    t = t.detach().cpu().clone(memory_format=torch.contiguous_format).reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def sha256(t):
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def contains_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(contains_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(contains_tensor(v) for v in obj)
    return False


def flatten(obj, prefix="", tensors=None, meta=None):
    """The naming rule of expected.json: ([(name, tensor)], {name: value})."""
    tensors = [] if tensors is None else tensors
    meta = {} if meta is None else meta

    def join(k):
        return f"{prefix}.{k}" if prefix else str(k)

    if isinstance(obj, torch.Tensor):
        tensors.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, join(k), tensors, meta)
    elif isinstance(obj, (list, tuple)) and contains_tensor(obj):
        for i, v in enumerate(obj):
            flatten(v, join(i), tensors, meta)
    else:
        meta[prefix] = obj
    return tensors, meta


def json_close(got, want):
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-12, abs_tol=0)
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
            json_close(a, b) for a, b in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(json_close(got[k], want[k]) for k in want)
    return got == want


def header(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return raw[8:8 + n], raw[8 + n:]


def check_tensor(name, t, want, layout):
    assert str(t.dtype).replace("torch.", "") == want["dtype"], (name, t.dtype, want["dtype"])
    assert list(t.shape) == want["shape"], (name, list(t.shape), want["shape"])
    assert sha256(t) == want["sha256"], f"{name}: elements differ"
    if layout and want.get("storage_offset") is not None:
        assert list(t.stride()) == want["stride"], (name, t.stride(), want["stride"])
        assert t.storage_offset() == want["storage_offset"], (name, t.storage_offset(), want["storage_offset"])


def partition(named):
    ids, out = {}, []
    for _, t in named:
        out.append(ids.setdefault(t.untyped_storage()._cdata, len(ids)))
    return out


def expected_partition(want):
    ids, out = {}, []
    for w in want:
        out.append(ids.setdefault(w["storage_group"], len(ids)))
    return out


def has_cpu_only(want):
    return all(w["device"] == "cpu" for w in want["tensors"])


# --- safetensors ---------------------------------------------------------------------------


def assert_same_as_save_file(path, loaded, meta):
    """The file equals save_file(loaded, metadata=meta), up to the order of __metadata__."""
    ref = path.with_name(path.name + ".ref")
    st.save_file({k: v.contiguous() for k, v in loaded.items()}, str(ref), metadata=meta)
    mine, theirs = path.read_bytes(), ref.read_bytes()
    ref.unlink()
    if mine == theirs:
        return
    assert len(mine) == len(theirs), "file sizes differ from save_file's"
    mh, md = header(mine)
    th, td = header(theirs)
    assert md == td, "tensor data differs from save_file's"
    assert len(mh) == len(th), "header lengths differ from save_file's"
    # Only __metadata__ (first in both) may be ordered differently.
    assert meta, "headers differ from save_file's and there is no metadata to explain it"
    seg = len(b'{"__metadata__":') + len(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode())
    assert mh[seg:] == th[seg:], f"headers differ beyond __metadata__:\n{mh!r}\n{th!r}"
    assert json.loads(mh[:seg] + b"}") == json.loads(th[:seg] + b"}")


@pytest.mark.parametrize("case", CASES)
def test_to_safetensors(write_bin, tmp_path, case):
    want = _expected(case)
    out = tmp_path / "out.safetensors"
    unsupported = [w for w in want["tensors"] if w["dtype"] in NO_SAFETENSORS]
    proc = convert(write_bin, FIXTURES / case, out, expect_ok=not unsupported)
    if unsupported:
        assert proc.returncode == 2, proc
        assert f"'{unsupported[0]['name']}'" in proc.stderr and unsupported[0]["dtype"] in proc.stderr, proc.stderr
        assert list(tmp_path.iterdir()) == [], "a failed conversion left files behind"
        return
    loaded = st.load_file(str(out))
    assert sorted(loaded) == sorted(w["name"] for w in want["tensors"])
    for w in want["tensors"]:
        check_tensor(w["name"], loaded[w["name"]], w, layout=False)
    raw_header, _ = header(out.read_bytes())
    meta = json.loads(raw_header).get("__metadata__")
    # Metadata: safetensors inputs keep theirs exactly; others carry theirs as str -> str.
    if want["format"] == "safetensors":
        with open(FIXTURES / case, "rb") as fh:
            orig = json.loads(header(fh.read())[0]).get("__metadata__")
        assert meta == orig
    else:
        for k, v in (want.get("metadata") or {}).items():
            assert k in meta, f"metadata {k} missing"
            got = meta[k] if isinstance(v, str) else json.loads(meta[k])
            assert json_close(got, v), (k, got, v)
    assert_same_as_save_file(out, loaded, meta)


def test_dedupe_drops_exact_duplicates_only(write_bin, tmp_path):
    case = "tied_state_dict.pth"
    want = _expected(case)["tensors"]
    out = tmp_path / "tied.safetensors"
    convert(write_bin, FIXTURES / case, out, "--dedupe")
    loaded = st.load_file(str(out))
    seen, dropped = {}, {}
    for w in want:
        key = (w["storage_group"], w["dtype"], tuple(w["shape"]), tuple(w["stride"]), w["storage_offset"])
        if key in seen:
            dropped[w["name"]] = seen[key]
        else:
            seen[key] = w["name"]
    assert dropped == {"head.weight": "emb.weight"}
    assert sorted(loaded) == sorted(w["name"] for w in want if w["name"] not in dropped)
    meta = json.loads(header(out.read_bytes())[0])["__metadata__"]
    assert meta == {"format": "pt", **dropped}
    for w in want:
        check_tensor(w["name"], loaded[dropped.get(w["name"], w["name"])], w, layout=False)
    assert_same_as_save_file(out, loaded, meta)
    # Views that differ are all written, each in full.
    out2 = tmp_path / "views.safetensors"
    convert(write_bin, FIXTURES / "views.pth", out2, "--dedupe")
    assert sorted(st.load_file(str(out2))) == sorted(w["name"] for w in _expected("views.pth")["tensors"])


# --- pth -----------------------------------------------------------------------------------


def load_with_locations(path):
    locs = {}

    def restore(storage, location):
        locs[storage._cdata] = location
        return storage

    return torch.load(path, map_location=restore, weights_only=True), locs


def check_zip(path):
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None, "a record's CRC is wrong"
        names = z.namelist()
        prefix = names[0].split("/")[0]
        assert names[0] == f"{prefix}/data.pkl"
        for rec in (".format_version", ".storage_alignment", "byteorder", "version", ".data/serialization_id"):
            assert f"{prefix}/{rec}" in names, rec
        assert z.read(f"{prefix}/version") == b"3\n"
        assert z.read(f"{prefix}/byteorder") == b"little"
        raw = Path(path).read_bytes()
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            h = info.header_offset
            name_len, extra_len = struct.unpack("<HH", raw[h + 26:h + 30])
            assert (h + 30 + name_len + extra_len) % 64 == 0, f"{info.filename} is not 64-byte aligned"


def check_pth(path, want):
    check_zip(path)
    obj, locs = load_with_locations(path)
    named, meta = flatten(obj)
    assert [n for n, _ in named] == [w["name"] for w in want["tensors"]]
    for (name, t), w in zip(named, want["tensors"]):
        check_tensor(name, t, w, layout=True)
        assert t.requires_grad == w["requires_grad"], (name, t.requires_grad)
        assert isinstance(t, torch.nn.Parameter) == w["parameter"], (name, type(t))
        assert locs[t.untyped_storage()._cdata] == w["device"], (name, locs[t.untyped_storage()._cdata])
    if all(w["storage_group"] is not None for w in want["tensors"]):
        assert partition(named) == expected_partition(want["tensors"]), "storage sharing differs"
    else:  # safetensors sources: nothing shared
        assert len(set(partition(named))) == len(named)
    # The structure's non-tensor leaves; a safetensors header's __metadata__ has no place in a
    # .pth (it would become a key of the state dict), so it is not carried.
    if want["format"] not in ("safetensors", "sharded"):
        # Metadata under a tensor's own name notes how that tensor was saved (a DTensor's
        # placements); the .pth holds the plain tensor, so the note has no place in it.
        tensor_names = {w["name"] for w in want["tensors"]}
        want_meta = {k: v for k, v in (want.get("metadata") or {}).items() if k not in tensor_names}
        assert meta == {k: meta[k] for k in want_meta}
        for k, v in want_meta.items():
            assert k in meta and json_close(meta[k], v), (k, meta.get(k), v)
    if has_cpu_only(want):
        plain = torch.load(path, weights_only=True)  # no map_location
        assert [n for n, _ in flatten(plain)[0]] == [n for n, _ in named]
    return obj


@pytest.mark.parametrize("case", CASES)
def test_to_pth(write_bin, tmp_path, case):
    want = _expected(case)
    out = tmp_path / "out.pth"
    convert(write_bin, FIXTURES / case, out)
    check_pth(out, want)
    dtypes = {w["dtype"] for w in want["tensors"]}
    if has_cpu_only(want) and not dtypes & V3_DTYPES:
        # libtorch's unpickler (tch's loadz): it must read what torch.load reads.
        cpp = torch._C._pickle_load_obj(out.read_bytes())
        named = flatten(cpp)[0]
        assert [n for n, _ in named] == [w["name"] for w in want["tensors"]]
        for (name, t), w in zip(named, want["tensors"]):
            assert sha256(t) == w["sha256"], name


def test_training_checkpoint_structure_round_trips(write_bin, tmp_path):
    out = tmp_path / "train.pth"
    convert(write_bin, FIXTURES / "training_checkpoint.pth", out)
    orig = torch.load(FIXTURES / "training_checkpoint.pth", weights_only=True)
    got = torch.load(out, weights_only=True)

    def same(a, b, where="root"):
        if isinstance(a, torch.Tensor):
            assert isinstance(b, torch.Tensor) and tensor_bytes(a) == tensor_bytes(b), where
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), where
        elif isinstance(a, dict):
            assert isinstance(b, dict) and list(a) == list(b), where
            for k in a:
                same(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, (list, tuple)):
            assert type(a) is type(b) and len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}.{i}")
        else:
            assert type(a) is type(b) and a == b, (where, a, b)

    same(orig, got)


# --- sharded -------------------------------------------------------------------------------


def load_index(index):
    index = Path(index)
    data = json.loads(index.read_text())
    out = {}
    for shard in dict.fromkeys(data["weight_map"].values()):
        p = index.parent / shard
        part = st.load_file(str(p)) if p.suffix == ".safetensors" else torch.load(p, weights_only=True)
        out.update(part)
    assert set(out) == set(data["weight_map"])
    return out, data


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize("case", ["cnn_state_dict.pth", "sharded_st/model.safetensors.index.json",
                                  "sharded_bin/pytorch_model.bin.index.json", "tied_state_dict.pth"])
def test_sharded(write_bin, tmp_path, case, fmt):
    want = _expected(case)
    out = tmp_path / "shards"
    convert(write_bin, FIXTURES / case, out, "--to", fmt, "--max-shard-size", "1KB")
    index_name = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    index = out / index_name
    loaded, data = load_index(index)
    shards = sorted(set(data["weight_map"].values()))
    assert len(shards) > 1
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    assert shards == [f"{stem}-{i:05d}-of-{len(shards):05d}.{ext}" for i in range(1, len(shards) + 1)]
    assert sorted(p.name for p in out.iterdir()) == sorted(shards + [index_name])
    assert sorted(loaded) == sorted(w["name"] for w in want["tensors"])
    for w in want["tensors"]:
        check_tensor(w["name"], loaded[w["name"]], w, layout=False)
    sizes = {}
    for name, shard in data["weight_map"].items():
        sizes[shard] = sizes.get(shard, 0) + loaded[name].numel() * loaded[name].element_size()
    if fmt == "safetensors":
        assert data["metadata"]["total_size"] == sum(sizes.values())
        # Shards stay within the limit unless one tensor alone exceeds it.
        for shard in shards:
            names = [n for n, s in data["weight_map"].items() if s == shard]
            assert sizes[shard] <= 1000 or len(names) == 1, (shard, sizes[shard])
    if fmt == "pth" and case == "tied_state_dict.pth":
        assert data["weight_map"]["emb.weight"] == data["weight_map"]["head.weight"]
        assert loaded["emb.weight"].untyped_storage()._cdata == loaded["head.weight"].untyped_storage()._cdata


def test_sharded_to_named_index(write_bin, tmp_path):
    index = tmp_path / "my.safetensors.index.json"
    convert(write_bin, FIXTURES / "cnn_state_dict.pth", index, "--max-shard-size", "2KB")
    loaded, data = load_index(index)
    assert all(s.startswith("my-") and s.endswith(".safetensors") for s in data["weight_map"].values())
    assert len(loaded) == len(_expected("cnn_state_dict.pth")["tensors"])


# --- never lose data -----------------------------------------------------------------------


def test_existing_output_needs_force(write_bin, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    proc = convert(write_bin, FIXTURES / "model.safetensors", out, expect_ok=False)
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert out.read_bytes() == b"precious"
    convert(write_bin, FIXTURES / "model.safetensors", out, "--force")
    assert len(st.load_file(str(out))) == len(_expected("model.safetensors")["tensors"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


def test_output_equal_to_input_is_refused(write_bin, tmp_path):
    src = tmp_path / "model.safetensors"
    shutil.copy(FIXTURES / "model.safetensors", src)
    before = src.read_bytes()
    for args in ([], ["--force"]):
        proc = convert(write_bin, src, src, *args, expect_ok=False)
        assert proc.returncode == 2 and "input" in proc.stderr, proc.stderr
    link = tmp_path / "alias.safetensors"
    os.link(src, link)
    proc = convert(write_bin, src, link, "--force", expect_ok=False)
    assert proc.returncode == 2
    assert src.read_bytes() == before


# --- pending casts, applied while streaming ------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", ["views.pth", "bigendian.pth", "tied_state_dict.pth", "legacy_views.pth"])
def test_cast_while_writing(write_bin, tmp_path, case, dtype):
    """`--dtype` records a cast; the writer converts while streaming: the result equals
    torch's `.to(dtype)` bit for bit, views and sharing kept (.pth)."""
    want = _expected(case)
    orig = dict(flatten(torch.load(FIXTURES / case, weights_only=True))[0])
    target = getattr(torch, dtype)

    def cast(t):
        return t.to(target) if t.dtype.is_floating_point else t

    out = tmp_path / "cast.pth"
    convert(write_bin, FIXTURES / case, out, "--dtype", dtype)
    named = flatten(torch.load(out, weights_only=True))[0]
    for name, t in named:
        ref = cast(orig[name])
        assert t.dtype == ref.dtype and t.shape == ref.shape, name
        assert t.stride() == orig[name].stride() and t.storage_offset() == orig[name].storage_offset(), name
        assert tensor_bytes(t) == tensor_bytes(ref), f"{name}: differs from torch's .to({dtype})"
    assert partition(named) == expected_partition(want["tensors"])
    if any(w["dtype"] in NO_SAFETENSORS for w in want["tensors"]):
        return
    out = tmp_path / "cast.safetensors"
    convert(write_bin, FIXTURES / case, out, "--dtype", dtype)
    loaded = st.load_file(str(out))
    for name, t in loaded.items():
        assert tensor_bytes(t) == tensor_bytes(cast(orig[name])), name
    meta = json.loads(header(out.read_bytes())[0]).get("__metadata__")
    assert_same_as_save_file(out, loaded, meta)


def test_plain_values_round_trip(write_bin, tmp_path):
    """Scalars, strings, bytes, nested containers with int keys, big integers, NaN/inf: what
    torch.save wrote loads back equal from ckpt's .pth (weights_only=True and libtorch)."""
    base = torch.arange(12.0).reshape(3, 4)
    obj = {
        "b": b"\x00\x7f\x80\xff bytes",
        "b_empty_text": "",
        "ints": [0, 1, 255, 256, 65535, 65536, -1, -129, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**62, -2**63, 2**63 - 1],
        "floats": [0.0, -0.0, 1e-300, 1.5, float("inf"), float("-inf")],
        "nan": float("nan"),
        "text": "héllo ✓ \n\t\"quoted\" \\ 🙂",
        "nested": {1: (None, True, False, [], {}, ()), -5: [(1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)]},
        "tensors": [base, base.t(), base[1:, ::2], torch.zeros(0, 3), torch.tensor(7)],
        "param": torch.nn.Parameter(torch.ones(2, 2)),
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "grad": torch.ones(3).requires_grad_(),
        "long_list": list(range(2500)),
        "wide": {f"k{i}": i for i in range(1200)},
    }
    src = tmp_path / "values.pth"
    torch.save(obj, src)
    out = tmp_path / "out.pth"
    convert(write_bin, src, out)
    got = torch.load(out, weights_only=True)

    def same(a, b, where):
        if isinstance(a, torch.Tensor):
            assert type(a) is type(b), where
            assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), where
            assert a.storage_offset() == b.storage_offset() and a.requires_grad == b.requires_grad, where
            assert tensor_bytes(a) == tensor_bytes(b), where
        elif isinstance(a, float) and math.isnan(a):
            assert isinstance(b, float) and math.isnan(b), where
        elif isinstance(a, float):
            assert type(b) is float and struct.pack("<d", a) == struct.pack("<d", b), where
        elif isinstance(a, dict):
            assert type(b) is dict and list(a) == list(b), where
            for k in a:
                same(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, (list, tuple)):
            assert type(a) is type(b) and len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{where}.{i}")
        else:
            assert type(a) is type(b) and a == b, (where, a, b)

    same(obj, got, "root")
    # Views of one storage stay views of one storage.
    ts = got["tensors"]
    assert ts[0].untyped_storage()._cdata == ts[1].untyped_storage()._cdata == ts[2].untyped_storage()._cdata
    # libtorch reads it too, except bytes (torch writes them as _codecs.encode, which
    # libtorch's unpickler does not know): check a copy without them.
    del obj["b"]
    src2 = tmp_path / "nobytes.pth"
    torch.save(obj, src2)
    out2 = tmp_path / "nobytes_out.pth"
    convert(write_bin, src2, out2)
    cpp = torch._C._pickle_load_obj(out2.read_bytes())
    assert cpp["ints"] == obj["ints"] and cpp["text"] == obj["text"]
    assert torch.equal(cpp["tensors"][1], obj["tensors"][1])
