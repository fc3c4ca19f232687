"""`ckpt curves --json` against the Python reference (fixtures/gen_curves.py), on training runs
PyTorch, a Hugging Face Trainer and Lightning really made, and on synthetic histories.

Every expected value comes from fixtures/curves/expected.json, which gen_curves.py computed from
the values torch.load (or json.load, for trainer_state.json) reads back, following the spec of
`ckpt curves`; the option tests recompute with the same reference. ckpt runs from
fixtures/curves/ on the relative path that keys each entry, so the paths it reports (best_path)
are compared after resolving them against that folder.

Where the spec leaves the encoding open the comparison accepts each reasonable one: the report
may be the object itself, a one-element list or an object keyed by input; NaN may be null or
"nan", +-inf "inf"/"infinity"/null; quantities compare with their separators unified; an
hf-trainer input may give best_path as the checkpoint its state file names (the reference gives
null: it is not a series of files). The readings the reference chose are listed in
fixtures/gen_curves.py's docstring.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

CURVES = FIXTURES / "curves"
EXPECTED = json.loads((CURVES / "expected.json").read_text())["fixtures"]

sys.path.insert(0, str(REPO / "fixtures"))
import gen_curves  # noqa: E402  (the reference, for the option tests)


def run(ckpt_bin, *args):
    proc = subprocess.run([ckpt_bin, "curves", *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=CURVES)
    # 0 ok, 1 findings (a verdict other than good fit may count as one); 2 is an error
    assert proc.returncode in (0, 1), f"ckpt curves {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stderr}"
    return proc


def report(ckpt_bin, *args):
    """The JSON report of one input (its paths after its options): the object itself, the one
    element of a list, or the one value of an object keyed by input path."""
    rel = args[-1]
    got = json.loads(run(ckpt_bin, "--json", *args).stdout)
    if isinstance(got, dict) and "verdict" not in got:
        inner = [v for v in got.values() if isinstance(v, (list, dict))]
        assert len(inner) == 1, f"{rel}: cannot find the report of one input in {sorted(got)}"
        got = inner[0]
    if isinstance(got, list):
        assert len(got) == 1, f"{rel}: {len(got)} reports for one input"
        got = got[0]
    return got


def same_path(got, want):
    return got is not None and os.path.realpath(CURVES / got) == os.path.realpath(CURVES / want)


def same_y(got, want):
    if want is None:  # NaN
        return got is None or (isinstance(got, str) and got.lower() == "nan") or (
            isinstance(got, float) and math.isnan(got))
    if isinstance(want, str):  # "inf" / "-inf"
        sign = -1 if want.startswith("-") else 1
        if isinstance(got, str):
            return got.lower().lstrip("+") in (want, want.replace("inf", "infinity"))
        return got is None or (isinstance(got, (int, float)) and math.isinf(got) and got * sign > 0)
    return isinstance(got, (int, float)) and abs(got - want) <= 1e-12 * max(abs(want), 1e-300)


def quantity_key(q):
    return re.sub(r"[_.\-/]+", "_", q.lower())


def compare_series(rel, got, want):
    bad = []
    got_by_name = {s["name"]: s for s in got}
    if sorted(got_by_name) != sorted(s["name"] for s in want):
        return [f"{rel}: series {sorted(got_by_name)}, reference {sorted(s['name'] for s in want)}"]
    for w in want:
        g = got_by_name[w["name"]]
        for key in ("split", "higher_better", "axis"):
            if g.get(key) != w[key]:
                bad.append(f"{rel}: {w['name']}.{key} ckpt {g.get(key)!r} reference {w[key]!r}")
        if quantity_key(g.get("quantity", "")) != quantity_key(w["quantity"]):
            bad.append(f"{rel}: {w['name']}.quantity ckpt {g.get('quantity')!r} reference {w['quantity']!r}")
        if list(map(float, g["x"])) != list(map(float, w["x"])):
            bad.append(f"{rel}: {w['name']}.x ckpt {g['x']} reference {w['x']}")
        elif len(g["y"]) != len(w["y"]):
            bad.append(f"{rel}: {w['name']}.y has {len(g['y'])} values, reference {len(w['y'])}")
        else:
            bad += [f"{rel}: {w['name']}.y[{i}] ckpt {a!r} reference {b!r}"
                    for i, (a, b) in enumerate(zip(g["y"], w["y"])) if not same_y(a, b)][:3]
    return bad


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_curves_agree_with_reference(ckpt_bin, rel):
    want = EXPECTED[rel]
    got = report(ckpt_bin, rel)
    bad = compare_series(rel, got["series"], want["series"])
    for key in ("source", "primary", "verdict"):
        if got.get(key) != want[key]:
            bad.append(f"{rel}: {key} ckpt {got.get(key)!r} reference {want[key]!r}")
    if got.get("best_x") is None or want["best_x"] is None:
        if got.get("best_x") != want["best_x"]:
            bad.append(f"{rel}: best_x ckpt {got.get('best_x')!r} reference {want['best_x']!r}")
    elif float(got["best_x"]) != float(want["best_x"]):
        bad.append(f"{rel}: best_x ckpt {got['best_x']!r} reference {want['best_x']!r}")
    es = got.get("early_stop") or {}
    for key, value in want["early_stop"].items():
        if (es.get(key) if es.get(key) is None else float(es[key])) != (value if value is None else float(value)):
            bad.append(f"{rel}: early_stop.{key} ckpt {es.get(key)!r} reference {value!r}")
    if want["best_path"] is None:
        # the hf-trainer source may name the best checkpoint the state file names
        hf_best = want.get("best_model_checkpoint")
        if got.get("best_path") is not None and not (hf_best and same_path(got["best_path"], hf_best)):
            bad.append(f"{rel}: best_path ckpt {got['best_path']!r} reference None")
    elif not same_path(got.get("best_path"), want["best_path"]):
        bad.append(f"{rel}: best_path ckpt {got.get('best_path')!r} reference {want['best_path']!r}")
    if want["source"] == "hf-trainer":
        for key in ("best_metric", "best_model_checkpoint"):
            if got.get(key) != want[key]:
                bad.append(f"{rel}: {key} ckpt {got.get(key)!r} trainer_state.json {want[key]!r}")
    if "history_file" in want:  # the addendum: the file whose histories were used is reported
        texts = []

        def strings(o):
            if isinstance(o, str):
                texts.append(o)
            elif isinstance(o, dict):
                for v in o.values():
                    strings(v)
            elif isinstance(o, list):
                for v in o:
                    strings(v)

        strings(got)
        if not any(same_path(t, want["history_file"]) for t in texts):
            bad.append(f"{rel}: the report does not name {want['history_file']}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("rel", sorted(r for r, e in EXPECTED.items() if e["best_path"]))
def test_best_prints_the_best_file(ckpt_bin, rel):
    out = run(ckpt_bin, "--best", rel).stdout
    assert out.endswith("\n") and len(out.splitlines()) == 1, out
    assert same_path(out.strip(), EXPECTED[rel]["best_path"]), (out, EXPECTED[rel]["best_path"])


SERIES_DIRS = sorted(r for r, e in EXPECTED.items() if e["source"] in ("series", "lightning"))


@pytest.mark.parametrize("rel", SERIES_DIRS)
def test_several_paths_are_one_series(ckpt_bin, rel):
    """`ckpt curves runs/ckpt_*.pth`: the files of a series directory given one by one (in name
    order, as a shell glob gives them) make the same series as the directory."""
    want = EXPECTED[rel]
    files = sorted(f"{rel}/{f}" for f in os.listdir(CURVES / rel))
    got = report(ckpt_bin, *files)
    bad = compare_series(rel, got["series"], want["series"])
    for key in ("primary", "verdict"):
        if got.get(key) != want[key]:
            bad.append(f"{rel}: {key} ckpt {got.get(key)!r} reference {want[key]!r}")
    if float(got["best_x"]) != float(want["best_x"]) or not same_path(got.get("best_path"), want["best_path"]):
        bad.append(f"{rel}: best ckpt {got['best_x']!r} {got.get('best_path')!r}, "
                   f"reference {want['best_x']!r} {want['best_path']!r}")
    assert not bad, "\n".join(bad)


OPTION_CASES = [  # (input, ckpt options, reference keyword arguments)
    ("synthetic/ties_and_patience.pth", ["--patience", "1"], {"patience": 1}),
    ("synthetic/ties_and_patience.pth", ["--patience", "5"], {"patience": 5}),
    ("overfit.pth", ["--patience", "2", "--min-delta", "0.002"], {"patience": 2, "min_delta": 0.002}),
    ("goodfit_series", ["--min-delta", "0.003"], {"min_delta": 0.003}),
    ("synthetic/acc_only_overfit.pth", ["--min-delta", "0.02"], {"min_delta": 0.02}),
    ("overfit.pth", ["--series", "train_acc,val_acc"], {"choose": ("train_acc", "val_acc")}),
    ("underfit.pth", ["--series", "history.loss,history.val_loss"],
     {"choose": ("history.loss", "history.val_loss")}),
]


@pytest.mark.parametrize("rel,options,kwargs", OPTION_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in OPTION_CASES])
def test_options_agree_with_reference(ckpt_bin, rel, options, kwargs):
    base = EXPECTED[rel]
    series = [gen_curves.series_from_json(s) for s in base["series"]]
    want = gen_curves.analyse(series, base["source"], **kwargs)
    got = report(ckpt_bin, *options, rel)
    assert got["primary"] == want["primary"]
    assert got["verdict"] == want["verdict"], (got["verdict"], want["verdict"], want["numbers"])
    assert float(got["best_x"]) == float(want["best_x"])
    es = got["early_stop"]
    for key, value in want["early_stop"].items():
        assert (es[key] if es[key] is None else float(es[key])) == (value if value is None else float(value)), key
