"""``restlit prepare`` end to end: counts on the real samples, the written dataset, rejects,
bad input, reconciliation and determinism."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from restlit.cli.main import app
from restlit.data_prep import pipeline
from restlit.data_prep.inputs import InputError
from restlit.data_prep.pipeline import prepare
from restlit.data_prep.samples import COLUMNS, Sample, load_samples
from restlit.prompts import render_target
from restlit.regions import tag
from tests.conftest import HAMMER, TOOLACE, TOOLRL, XLAM, data_file

# Default options (--on-invalid reject). The rejects are real defects of the upstream data:
# ToolACE call strings with mangled JSON inside, required parameters the reference omits,
# strings where the schema says integer, a call to a tool that is not in the list.
EXPECTED = {
    TOOLACE: {"records_read": 186, "records_rejected": 0, "records_with_samples": 116,
              "records_without_samples": 70, "turns": 289, "samples_written": 196, "turns_rejected": 93,
              "rejected": {"call_parse_error": 11, "missing_required": 36, "unparseable_history": 1,
                           "wrong_type": 45}},
    XLAM: {"records_read": 152, "records_rejected": 0, "records_with_samples": 139, "records_without_samples": 13,
           "turns": 152, "samples_written": 139, "turns_rejected": 13, "rejected": {"wrong_type": 13}},
    TOOLRL: {"records_read": 400, "records_rejected": 0, "records_with_samples": 314,
             "records_without_samples": 86, "turns": 400, "samples_written": 314, "turns_rejected": 86,
             "rejected": {"missing_required": 29, "unexpected_param": 8, "unknown_tool": 1, "wrong_type": 48}},
    HAMMER: {"records_read": 10, "records_rejected": 0, "records_with_samples": 9, "records_without_samples": 1,
             "turns": 10, "samples_written": 9, "turns_rejected": 1, "rejected": {"wrong_type": 1}},
}
SOURCE = {TOOLACE: "toolace", XLAM: "xlam", TOOLRL: "toolrl", HAMMER: "hammer"}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def all_four(tmp_path_factory) -> tuple[Path, pipeline.Manifest]:
    out = tmp_path_factory.mktemp("prep") / "out"
    manifest = prepare([data_file(f) for f in (TOOLACE, XLAM, TOOLRL, HAMMER)], out, parquet=True)
    return out, manifest


@pytest.mark.parametrize("relative", list(EXPECTED))
def test_counts_per_real_sample(all_four, relative: str) -> None:
    _, manifest = all_four
    counts = manifest.sources[SOURCE[relative]]
    got = counts.to_dict()
    assert {k: got[k] for k in EXPECTED[relative]} == EXPECTED[relative]
    assert counts.reconciles()


def test_manifest_file_and_inputs(all_four) -> None:
    out, manifest = all_four
    data = json.loads((out / "manifest.json").read_text())
    assert data == json.loads(json.dumps(manifest.to_dict()))
    assert [i["format"] for i in data["inputs"]] == ["toolace", "xlam", "toolrl", "hammer"]
    for info in data["inputs"]:
        assert info["sha256"] == hashlib.sha256(Path(info["path"]).read_bytes()).hexdigest()
    assert data["sources"]["hammer"]["warnings"] == {"duplicate_tool": 2, "no_call_response_added": 2}
    totals = data["totals"]
    assert totals["samples_written"] == sum(data["splits"].values()) == 658
    assert totals["records_read"] == 748


def test_every_reject_is_in_rejects_jsonl(all_four) -> None:
    out, manifest = all_four
    rejects = _rejects(out)
    assert len(rejects) == sum(manifest.totals.rejected.values())
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    assert by_reason == manifest.totals.rejected
    first = rejects[0]
    raw = json.loads(Path(first["file"]).read_text())[first["record_index"]]
    assert first["record"] == raw  # the raw record itself, to inspect or fix
    assert first["detail"] and first["turn_index"] is not None


def test_written_samples_decode_and_are_consistent(all_four) -> None:
    out, _ = all_four
    dd = load_samples(out)
    assert set(dd) == {"train", "validation"}
    assert dd["train"].column_names == [name for name, _ in COLUMNS]
    ids = set()
    for split, ds in dd.items():
        for row in ds:
            s = Sample.from_row(row)
            assert s.split == split
            assert s.id == f"{s.source}-{s.id.split('-')[1]}-{s.record_index}-{s.turn_index}"
            assert s.target_text == render_target(s.target["think"], s.target["calls"], s.target["response"])
            assert s.spans == [(a, b, r.name) for a, b, r in tag(s.target_text)]
            assert row["n_calls"] == len(s.target["calls"]) and row["n_history"] == len(s.history)
            assert s.history and s.history[0]["role"] == "user"
            msgs = s.messages(with_target=True)
            assert msgs[0]["role"] == "system" and msgs[-1]["content"] == s.target_text
            ids.add(s.id)
    assert len(ids) == dd["train"].num_rows + dd["validation"].num_rows


def test_spot_check_toolace_multi_turn_sample(all_four) -> None:
    out, _ = all_four
    ds = load_samples(out)["train"].filter(lambda r: r["source"] == "toolace" and r["record_index"] == 7)
    samples = sorted((Sample.from_row(r) for r in ds), key=lambda s: s.turn_index)
    # turn 0 omits "page", which ToolACE's schema lists as required: that turn is rejected as a
    # sample, yet stays in the later turns' history (it was parsed; it is what happened)
    assert [s.turn_index for s in samples] == [1, 2, 3, 4, 5]
    (reject,) = [r for r in _rejects(out) if r["file"].endswith("demo_toolace.json") and r["record_index"] == 7]
    assert (reject["turn_index"], reject["reason"]) == (0, "missing_required")
    turn4 = samples[3]
    assert [m["role"] for m in turn4.history] == ["user", "assistant", "tool", "assistant", "user", "assistant",
                                                  "tool", "assistant", "user"]
    assert turn4.history[1]["content"] == render_target("", [{"name": "Get Trending TV Shows", "arguments": {}}],
                                                        None)
    assert turn4.history[3]["content"] == samples[0].target_text
    assert samples[0].target["calls"] == [] and samples[0].target["response"].startswith("The currently trending")
    assert turn4.target == {"think": "", "calls": [{"name": "Title Seasons", "arguments": {"ids": "80100172,80189685"}}],
                            "response": None}
    assert len(samples[-1].history) == len(turn4.history) + 2  # + turn 4's call and its observation


def test_records_keep_all_turns_in_one_split(all_four) -> None:
    out, _ = all_four
    dd = load_samples(out)
    seen: dict[tuple, str] = {}
    for split, ds in dd.items():
        for source, rec, file in zip(ds["source"], ds["record_index"], ds["input_file"]):
            assert seen.setdefault((source, file, rec), split) == split


def test_parquet_copy(all_four) -> None:
    import pyarrow.parquet as pq

    out, _ = all_four
    dd = load_samples(out)
    for split in ("train", "validation"):
        table = pq.read_table(out / "parquet" / f"{split}.parquet")
        assert table.to_pylist() == dd[split].to_list()


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    inputs = [data_file(TOOLACE), data_file(HAMMER)]
    prepare(inputs, tmp_path / "a", val_fraction=0.3, seed=3)
    prepare(inputs, tmp_path / "b", val_fraction=0.3, seed=3)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    prepare(inputs, tmp_path / "a", val_fraction=0.3, seed=3, overwrite=True)  # rerun into the same directory
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    prepare(inputs, tmp_path / "c", val_fraction=0.3, seed=4)
    assert _tree_digest(tmp_path / "c")["train/data-00000-of-00001.arrow"] != \
        _tree_digest(tmp_path / "a")["train/data-00000-of-00001.arrow"]


def test_worker_processes_give_the_same_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pipeline, "_CHUNK_RECORDS", 16)
    prepare([data_file(XLAM)], tmp_path / "serial", workers=1)
    prepare([data_file(XLAM)], tmp_path / "parallel", workers=2)
    assert _tree_digest(tmp_path / "serial") == _tree_digest(tmp_path / "parallel")


def test_val_fraction(tmp_path: Path) -> None:
    none = prepare([data_file(XLAM)], tmp_path / "a", val_fraction=0.0)
    assert none.splits == {"train": 139, "validation": 0}
    assert load_samples(tmp_path / "a")["validation"].num_rows == 0
    half = prepare([data_file(XLAM)], tmp_path / "b", val_fraction=0.5)
    assert 40 < half.splits["validation"] < 100


@pytest.mark.parametrize(("mode", "samples", "coerced", "rejected", "warnings"), [
    ("reject", 139, 0, {"wrong_type": 13}, {"duplicate_tool": 1}),
    ("keep", 152, 0, {}, {"duplicate_tool": 1, "kept_wrong_type": 26}),
    ("coerce", 144, 14, {"wrong_type": 8}, {"duplicate_tool": 1}),
])
def test_on_invalid_modes(tmp_path: Path, mode, samples, coerced, rejected, warnings) -> None:
    counts = prepare([data_file(XLAM)], tmp_path / mode, on_invalid=mode).totals
    assert (counts.samples_written, counts.coerced, counts.rejected, counts.warnings) == \
        (samples, coerced, rejected, warnings)
    assert counts.reconciles()


def test_coerce_fixes_string_integers(tmp_path: Path) -> None:
    tools = json.dumps([{"name": "page", "description": "", "parameters": {"n": {"type": "int", "description": ""}}}])
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"id": 0, "query": "q", "tools": tools,
                                "answers": json.dumps([{"name": "page", "arguments": {"n": "2"}}])}) + "\n")
    prepare([path], tmp_path / "o", on_invalid="coerce", val_fraction=0.0)
    row = load_samples(tmp_path / "o")["train"][0]
    assert json.loads(row["target_json"])["calls"] == [{"name": "page", "arguments": {"n": 2}}]
    assert '"parameters": {"n": 2}' in row["target_text"]


# ---------------------------------------------------------------------------------------------
# bad records: rejected with their reason, the run goes on

_TOOLS = json.dumps([{"name": "f", "description": "d", "parameters": {"x": {"type": "int", "description": ""}}}])


def _xlam(answers, tools=_TOOLS, **extra) -> dict:
    return {"id": 0, "query": "q", "tools": tools, "answers": answers, **extra}


def test_bad_records_are_rejected_and_counted(tmp_path: Path) -> None:
    lines = [
        json.dumps(_xlam(json.dumps([{"name": "f", "arguments": {"x": 1}}]))),  # good
        json.dumps({"id": 1, "query": "q", "tools": _TOOLS}),  # missing answers
        json.dumps(_xlam("[]", tools="[{not json")),  # tools not JSON
        "{this line is not json",
        json.dumps(_xlam(json.dumps([{"name": "g", "arguments": {}}]))),  # unknown tool
        json.dumps(_xlam(json.dumps([{"name": "f", "arguments": {"x": "many"}}]))),  # schema violation
        json.dumps(_xlam(json.dumps([{"name": "f", "arguments": {}}]))),  # missing required
        json.dumps(_xlam("[{broken")),  # answers do not parse
        json.dumps([1, 2]),  # not an object
        json.dumps(_xlam(json.dumps([{"name": "f", "arguments": {"x": 2}}]))),  # good
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    manifest = prepare([path], tmp_path / "out", format="xlam", val_fraction=0.0)
    counts = manifest.totals
    assert counts.records_read == 10 and counts.samples_written == 2
    assert counts.rejected == {"missing_field": 1, "tools_not_json": 1, "invalid_json": 1, "unknown_tool": 1,
                               "wrong_type": 1, "missing_required": 1, "call_parse_error": 1,
                               "not_an_object": 1}
    assert counts.reconciles()
    rejects = _rejects(tmp_path / "out")
    assert [(r["record_index"], r["line"], r["reason"]) for r in rejects] == [
        (1, 2, "missing_field"), (2, 3, "tools_not_json"), (3, 4, "invalid_json"), (4, 5, "unknown_tool"),
        (5, 6, "wrong_type"), (6, 7, "missing_required"), (7, 8, "call_parse_error"), (8, 9, "not_an_object")]
    assert rejects[2]["record"] == "{this line is not json"
    assert rejects[1]["turn_index"] is None and rejects[3]["turn_index"] == 0


def test_toolace_call_string_that_does_not_parse(tmp_path: Path) -> None:
    system = 'Functions: [{"name": "f", "description": "", "parameters": {"type": "dict", "properties": ' \
             '{"a": {"type": "string"}}, "required": ["a"]}}]'
    record = {"system": system, "conversations": [
        {"from": "user", "value": "hi"}, {"from": "assistant", "value": '[f(a="ok")]'},
        {"from": "tool", "value": "[]"}, {"from": "assistant", "value": "fine"},
        {"from": "user", "value": "again"}, {"from": "assistant", "value": '[f(a="unterminated)]'},
        {"from": "user", "value": "more"}, {"from": "assistant", "value": "bye"},
    ]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps([record]))
    counts = prepare([path], tmp_path / "out").totals
    assert (counts.turns, counts.samples_written, counts.rejected) == \
        (4, 2, {"call_parse_error": 1, "unparseable_history": 1})
    assert counts.records_with_samples == 1 and counts.reconciles()
    assert [r["turn_index"] for r in _rejects(tmp_path / "out")] == [2, 3]


def test_gzip_and_jsonl_inputs(tmp_path: Path) -> None:
    records = json.loads(data_file(XLAM).read_text())
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    assert prepare([path], tmp_path / "out").totals.samples_written == 139


# ---------------------------------------------------------------------------------------------
# bad input files and options: one line naming the file, exit 2, nothing written


def _cli(*args: str):
    return CliRunner().invoke(app, ["prepare", *args])


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"# not json\n", "not JSON"),
    (b'[{"some": "thing"}]', "unrecognised layout (first record is an object with keys [some])"),
    (b"[]", "contains no records"),
    (b"[1, 2]", "unrecognised layout (first record is a JSON int)"),
])
def test_cli_bad_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "input.json"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    res = _cli(str(path), "-o", str(out))
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and str(path) in res.output and message in res.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == ([path] if content is not None else [])


def test_cli_file_broken_midway_writes_nothing(tmp_path: Path) -> None:
    records = json.loads(data_file(XLAM).read_text())
    text = json.dumps(records)
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) * 3 // 4])  # many good records, then the file ends
    out = tmp_path / "out"
    res = _cli(str(path), "-o", str(out))
    assert res.exit_code == 2 and "cut.json" in res.output and "invalid JSON in record" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.json"]


def test_cli_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.json"
    path.mkdir()
    res = _cli(str(path), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2 and "not a file" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "csv"], "--format 'csv'"),
    (["--on-invalid", "ignore"], "--on-invalid 'ignore'"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5"),
])
def test_cli_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    res = _cli(str(data_file(HAMMER)), "-o", str(tmp_path / "out"), *args)
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "out").exists()


def test_cli_refuses_foreign_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = _cli(str(data_file(HAMMER)), "-o", str(out))
    assert res.exit_code == 2 and "not a prepared dataset" in res.output
    assert (out / "notes.txt").read_text() == "keep me"


def test_cli_forced_format_mismatch_rejects_records(tmp_path: Path) -> None:
    res = _cli(str(data_file(HAMMER)), "-o", str(tmp_path / "out"), "--format", "xlam")
    assert res.exit_code == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["totals"]["rejected"] == {"missing_field": 10}


def test_cli_success_prints_summary(tmp_path: Path) -> None:
    res = _cli(str(data_file(XLAM)), str(data_file(HAMMER)), "-o", str(tmp_path / "out"), "--on-invalid", "coerce",
               "--parquet", "--seed", "1")
    assert res.exit_code == 0, res.output
    for word in ("xlam", "hammer", "total", "wrong_type", "no_call_response_added", "splits: train"):
        assert word in res.output
    assert (tmp_path / "out" / "parquet" / "train.parquet").is_file()


def test_input_given_twice_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="given twice"):
        prepare([data_file(XLAM), data_file(XLAM)], tmp_path / "out")
