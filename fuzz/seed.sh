#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the committed fixtures: whole files for pth/scan/safetensors,
# and every pickle (zip *.pkl members, legacy and bare pickles) for the pickle target.
# Usage: fuzz/seed.sh            (run from anywhere; corpus/ is git-ignored)
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../fixtures
mkdir -p corpus/pickle corpus/pth corpus/safetensors corpus/scan corpus/roundtrip corpus/transforms corpus/zip_differential corpus/pickle_differential corpus/dcp
# The pth, safetensors and scan targets take an `Input` enum (arbitrary's derive): four zero
# bytes select its first variant, `Raw`, whose bytes are then the whole file.
raw() { { printf '\0\0\0\0'; cat "$1"; } > "$2"; }
while IFS= read -r -d '' f; do
  base=$(echo "${f#"$fixtures"/}" | tr '/' '_')
  case "$f" in
    *.safetensors) raw "$f" "corpus/safetensors/$base" ;;
    *.pth|*.pt|*.bin|*.tar) raw "$f" "corpus/pth/$base" ;;
  esac
  # The zip differential takes the file's bytes as they are.
  case "$f" in *.pth|*.pt|*.bin) if [ "$(head -c 2 "$f")" = PK ]; then cp "$f" "corpus/zip_differential/$base"; fi ;; esac
  case "$f" in
    *.safetensors|*.pth|*.pt|*.bin|*.tar|*.pkl|*.json) raw "$f" "corpus/scan/$base" ;;
  esac
  case "$f" in *.pkl) cp "$f" "corpus/pickle/$base" ;; esac
  # The dcp target: variant 0 (a whole .metadata), or variant 1 (arbitrary picks it for a
  # discriminant of 0x80000000) with rank byte 0 and a data file.
  case "$f" in
    */.metadata) raw "$f" "corpus/dcp/$base" ;;
    *.distcp) { printf '\0\0\0\200\0'; cat "$f"; } > "corpus/dcp/$base" ;;
  esac
done < <(find "$fixtures" -type f -print0)
# Pickles inside zips (data.pkl, constants.pkl, *.debug_pkl, hidden members) and the legacy
# format's five pickles, split at each STOP by Python's own pickletools.
python3 - "$fixtures" corpus/pickle <<'PY'
import io, os, pickletools, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
count = 0
for root, _, files in os.walk(src):
    for name in files:
        path = os.path.join(root, name)
        data = open(path, "rb").read()
        tag = os.path.relpath(path, src).replace("/", "_")
        if data[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(path) as z:
                    for m in z.namelist():
                        if m.endswith("pkl"):
                            open(os.path.join(out, f"{tag}__{m.replace('/', '_')}"), "wb").write(z.read(m))
                            count += 1
            except zipfile.BadZipFile:
                pass
        elif data[:1] == b"\x80":
            f = io.BytesIO(data)
            for i in range(8):
                start = f.tell()
                try:
                    for op, arg, pos in pickletools.genops(f):
                        pass
                except Exception:
                    break
                open(os.path.join(out, f"{tag}__{i}"), "wb").write(data[start:f.tell()])
                count += 1
                if f.tell() >= len(data):
                    break
print(f"{count} pickles extracted")
PY
# roundtrip and transforms take structured inputs (arbitrary's Unstructured), which no file
# resembles: seed them with fixed pseudo-random bytes of a few sizes so that the first
# inputs already describe several storages, views and nested containers; for transforms,
# one seed per fixture (its first byte picks the fixture) with a few steps' worth of bytes.
python3 - corpus/roundtrip corpus/transforms <<'PY'
import os, random, sys
rt, tr = sys.argv[1], sys.argv[2]
rng = random.Random(0x636b7074)
for i, n in enumerate([16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048]):
    open(os.path.join(rt, f"seed_{i:02}_{n}"), "wb").write(bytes(rng.randrange(256) for _ in range(n)))
for which in range(15):
    for j, n in enumerate([1, 24, 64, 160]):
        body = bytes(rng.randrange(256) for _ in range(n - 1))
        open(os.path.join(tr, f"seed_{which:02}_{j}"), "wb").write(bytes([which]) + body)
PY
# pickle_differential compares plain data only, which torch's pickles are not (they call
# globals): seed it with Python's own pickles of plain values, every protocol.
python3 - corpus/pickle_differential <<'PY'
import os, pickle, sys
out = sys.argv[1]
shared = [1, "x"]
values = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 2**31, -2**31 - 1, 2**63, -2**63 - 1, 2**200,
    0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e300,
    "", "text", "\u00e9\u4e2d\U0001f600", "a\nb\\c", b"", b"\x00\xff", bytearray(b"ab"),
    [], (), {}, (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [1, [2, [3]]], {"a": 1, 2: [3], (4,): None},
    {1, 2, "s"}, frozenset({3, (4,)}), [shared, shared, (shared,)], {"k": shared, "l": [shared]},
]
for proto in range(6):
    for i, v in enumerate(values):
        open(os.path.join(out, f"p{proto}_{i:02}"), "wb").write(pickle.dumps(v, protocol=proto))
    open(os.path.join(out, f"p{proto}_all"), "wb").write(pickle.dumps(values, protocol=proto))
PY
for t in pickle pth safetensors scan roundtrip transforms pickle_differential; do echo "corpus/$t: $(ls corpus/$t | wc -l) files"; done
