"""Run reports: aligned terminal tables and the files every flow writes at the end."""

from __future__ import annotations

import json

from recsys.pipeline.report import dict_rows_table, text_table, write_report


def test_text_table_aligns_every_column_to_its_widest_entry():
    text = text_table(["method", "ndcg@20", "train_seconds"], [["vae", 0.31234, 12.5], ["tall_train_slice", "0.3", "1"]])
    lines = text.splitlines()
    assert lines[0] == "method            ndcg@20  train_seconds"
    assert lines[1] == "----------------  -------  -------------"
    assert lines[2] == "vae                0.3123           12.5"
    assert lines[3] == "tall_train_slice      0.3              1"
    assert len({len(line) for line in lines}) == 1


def test_text_table_keeps_text_columns_left_aligned_and_empty_cells():
    headers, cells = dict_rows_table([{"model": "ease", "x": None}, {"model": "mostpop", "x": 2}])
    assert headers == ["model", "x"] and cells == [["ease", ""], ["mostpop", "2"]]
    assert text_table(headers, cells).splitlines()[2:] == ["ease", "mostpop  2"]


def test_write_report_writes_html_png_and_json(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 10
    files = write_report(tmp_path / "run", title="t <1>", headers=["a", "b"], cells=[["x", 1.5]],
                         results={"x": {"b": 1.5}}, png=png, intro="intro")
    assert set(files) == {"html", "png", "json"}
    assert json.loads(files["json"].read_text()) == {"x": {"b": 1.5}}
    assert files["png"].read_bytes() == png
    page = files["html"].read_text()
    assert "<td>1.5000</td>" in page and "t &lt;1&gt;" in page and "data:image/png;base64," in page
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["plot.png", "report.html", "results.json"]
