"""ckpt must read what real PyTorch / safetensors wrote.

Environment:
  CKPT_BIN       path of the ckpt binary (required)
  CKPT_FIXTURES  folder with expected.json and the fixtures (default: <repo>/fixtures);
                 CI regenerates it with `python fixtures/generate.py --out DIR`.

For every fixture in expected.json this runs `$CKPT_BIN inspect --json --hash PATH` and compares
its report with what PyTorch computed: names and their order, dtype, shape, device,
requires_grad, parameter, nbytes, sha256 per tensor; that `storage` ids group tensors exactly
as `storage_group` does; metadata (floats to 1e-12 relative); total_elements, and total_params
(as model.parameters() counts them) where the file holds nn.Parameters. Sharded
checkpoints are read both through their index file and through their folder.
"""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("CKPT_FIXTURES") or REPO / "fixtures").resolve()
EXPECTED_FILE = FIXTURES / "expected.json"
TENSOR_FIELDS = ("dtype", "shape", "device", "requires_grad", "parameter", "nbytes", "sha256")


def _load_expected():
    try:
        with open(EXPECTED_FILE, encoding="utf-8") as fh:
            return json.load(fh)["fixtures"]
    except (OSError, ValueError, KeyError) as e:
        return e


EXPECTED = _load_expected()
if isinstance(EXPECTED, dict):
    CASES = list(EXPECTED)
    SHARDED = [k for k, v in EXPECTED.items() if v["format"] == "sharded"]
else:  # keep collection working; every test then fails with the reason
    CASES, SHARDED = ["<expected.json missing>"], ["<expected.json missing>"]


def _expected(case):
    if not isinstance(EXPECTED, dict):
        pytest.fail(
            f"cannot read {EXPECTED_FILE}: {EXPECTED!r}; run `python fixtures/generate.py` "
            f"or set CKPT_FIXTURES",
            pytrace=False,
        )
    return EXPECTED[case]


def inspect(ckpt_bin, path):
    cmd = [ckpt_bin, "inspect", "--json", "--hash", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(cmd)}` timed out", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` exited with {proc.returncode}\n--- stderr ---\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    try:
        report = json.loads(proc.stdout)
    except ValueError as e:
        pytest.fail(f"`{' '.join(cmd)}` did not print JSON ({e}):\n{proc.stdout[:2000]}", pytrace=False)
    if not isinstance(report, dict) or not isinstance(report.get("tensors"), list):
        pytest.fail(f"`{' '.join(cmd)}`: report has no 'tensors' list:\n{proc.stdout[:2000]}", pytrace=False)
    return report


# ----------------------------------------------------------------------------- comparisons


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metadata_diffs(exp, act, path, out):
    """Append a line to `out` for every difference between expected and actual metadata."""
    where = path or "<root>"
    if isinstance(exp, bool) or exp is None or isinstance(exp, str):
        if type(act) is not type(exp) or act != exp:
            out.append(f"metadata {where}: expected {exp!r}, got {act!r}")
    elif isinstance(exp, int):
        if not (_is_num(act) and isinstance(act, int) and act == exp):
            out.append(f"metadata {where}: expected int {exp!r}, got {act!r}")
    elif isinstance(exp, float):
        if not (_is_num(act) and math.isclose(act, exp, rel_tol=1e-12, abs_tol=0.0)):
            out.append(f"metadata {where}: expected float {exp!r}, got {act!r}")
    elif isinstance(exp, list):
        if not isinstance(act, list) or len(act) != len(exp):
            out.append(f"metadata {where}: expected {json.dumps(exp)}, got {json.dumps(act)}")
        else:
            for i, (e, a) in enumerate(zip(exp, act)):
                metadata_diffs(e, a, f"{path}[{i}]", out)
    elif isinstance(exp, dict):
        if not isinstance(act, dict):
            out.append(f"metadata {where}: expected an object, got {json.dumps(act)}")
            return
        for k in exp:
            if k not in act:
                out.append(f"metadata: missing key {k!r}" + (f" in {path}" if path else ""))
            else:
                metadata_diffs(exp[k], act[k], f"{path}.{k}" if path else k, out)
        for k in act:
            if k not in exp:
                out.append(f"metadata: unexpected key {k!r}={json.dumps(act[k])}" + (f" in {path}" if path else ""))
    else:  # pragma: no cover - expected.json only holds JSON
        out.append(f"metadata {where}: cannot compare {exp!r}")


def storage_diffs(exp_tensors, act_by_name):
    """Storage ids must split the tensors into the same groups as storage_group."""
    out = []
    exp_groups, act_groups = {}, {}
    for t in exp_tensors:
        name = t["name"]
        if name not in act_by_name:
            continue
        act = act_by_name[name].get("storage")
        if t["storage_group"] is None:
            if act is not None:
                out.append(f"{name}: storage should be null, got {json.dumps(act)}")
            continue
        if act is None:
            out.append(f"{name}: storage is null, expected a storage id")
            continue
        exp_groups.setdefault(t["storage_group"], []).append(name)
        act_groups.setdefault(json.dumps(act, sort_keys=True), []).append(name)
    exp_part = {frozenset(v) for v in exp_groups.values()}
    act_part = {frozenset(v) for v in act_groups.values()}
    if exp_part != act_part:
        want = sorted(sorted(g) for g in exp_part - act_part)
        got = sorted(sorted(g) for g in act_part - exp_part)
        out.append(f"storage sharing differs: expected groups {want}, got groups {got}")
    return out


def compare(report, exp, label):
    problems = []
    if report.get("format") != exp["format"]:
        problems.append(f"format: expected {exp['format']!r}, got {report.get('format')!r}")

    exp_names = [t["name"] for t in exp["tensors"]]
    act_list = report["tensors"]
    act_names = [t.get("name") for t in act_list]
    if act_names != exp_names:
        missing = [n for n in exp_names if n not in act_names]
        extra = [n for n in act_names if n not in exp_names]
        if missing or extra:
            problems.append(f"tensor names differ: missing {missing}, unexpected {extra}")
        else:
            i = next(i for i, (e, a) in enumerate(zip(exp_names, act_names)) if e != a)
            problems.append(
                f"tensor order differs from position {i}: expected {exp_names[i:i + 5]} ..., "
                f"got {act_names[i:i + 5]} ..."
            )
    if len(set(act_names)) != len(act_names):
        problems.append("duplicate tensor names in report")
    act_by_name = {t.get("name"): t for t in act_list}

    for t in exp["tensors"]:
        a = act_by_name.get(t["name"])
        if a is None:
            continue
        for field in TENSOR_FIELDS:
            want, got = t[field], a.get(field)
            if field == "sha256" and isinstance(got, str):
                got = got.lower()
            if field in ("requires_grad", "parameter"):
                same = isinstance(got, bool) and got == want
            else:
                same = got == want
            if not same:
                problems.append(f"{t['name']}: {field}: expected {want!r}, got {got!r}")

    problems += storage_diffs(exp["tensors"], act_by_name)

    if "metadata" in exp:
        metadata_diffs(exp["metadata"], report.get("metadata"), "", problems)

    want_elements = sum(math.prod(t["shape"]) for t in exp["tensors"])
    if report.get("total_elements") != want_elements:
        problems.append(f"total_elements: expected {want_elements}, got {report.get('total_elements')!r}")
    # Each nn.Parameter once: tied names share a storage group, offset and shape.
    params = {
        (t["storage_group"], t["storage_offset"], tuple(t["shape"])): math.prod(t["shape"])
        for t in exp["tensors"]
        if t["parameter"]
    }
    if params and report.get("total_params") != sum(params.values()):
        problems.append(f"total_params: expected {sum(params.values())}, got {report.get('total_params')!r}")

    if problems:
        shown = problems[:60]
        more = f"\n... and {len(problems) - 60} more" if len(problems) > 60 else ""
        pytest.fail(f"{label}: {len(problems)} mismatch(es)\n" + "\n".join(shown) + more, pytrace=False)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("case", CASES)
def test_read(ckpt_bin, case):
    exp = _expected(case)
    path = FIXTURES / case
    assert path.exists(), f"fixture {path} is missing; regenerate with fixtures/generate.py"
    compare(inspect(ckpt_bin, path), exp, case)


@pytest.mark.parametrize("case", SHARDED)
def test_read_sharded_directory(ckpt_bin, case):
    exp = _expected(case)
    folder = (FIXTURES / case).parent
    assert folder.is_dir(), f"fixture folder {folder} is missing"
    compare(inspect(ckpt_bin, folder), exp, f"{Path(case).parent}/ (folder)")
