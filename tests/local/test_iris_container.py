from __future__ import annotations

import pytest

from airflow_sagemaker_async.local.iris_container import (
    InputError,
    IrisModel,
    parse_custom_attributes,
    parse_rows,
)


@pytest.fixture(scope="module")
def model():
    return IrisModel()


def test_csv_and_json_rows_parse_to_floats():
    assert parse_rows(b"5.1,3.5,1.4,0.2\n\n6.7, 3.0, 5.2, 2.3\n", "text/csv") == [
        [5.1, 3.5, 1.4, 0.2],
        [6.7, 3.0, 5.2, 2.3],
    ]
    assert parse_rows(b'{"instances": [[1, 2, 3, 4]]}', "application/json; charset=utf-8") == [[1.0, 2.0, 3.0, 4.0]]


def test_untyped_payloads_are_sniffed():
    assert parse_rows(b'{"instances": [[1, 2, 3, 4]]}', "") == [[1.0, 2.0, 3.0, 4.0]]
    assert parse_rows(b"1,2,3,4", "application/octet-stream") == [[1.0, 2.0, 3.0, 4.0]]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"1,2,3", "text/csv", "Row 1 must hold exactly 4 numbers"),
        (b"1,2,x,4", "text/csv", "Row 1 must hold exactly 4 numbers"),
        (b"", "text/csv", "no rows"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"rows": []}', "application/json", '{"instances"'),
    ],
)
def test_malformed_payloads_raise_input_error(body, content_type, message):
    with pytest.raises(InputError, match=message):
        parse_rows(body, content_type)


def test_unsupported_content_type_raises_lookup_error():
    with pytest.raises(LookupError, match="image/png"):
        parse_rows(b"1,2,3,4", "image/png")


def test_model_predicts_each_species(model):
    predictions = model.predict([[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]])["predictions"]
    assert [p["label"] for p in predictions] == ["setosa", "versicolor", "virginica"]
    assert [p["class_index"] for p in predictions] == [0, 1, 2]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in predictions)


def test_custom_attribute_knobs_are_read_from_comma_or_semicolon_pairs():
    assert parse_custom_attributes("sleep=2.5; Status=500,free text") == {"sleep": "2.5", "status": "500"}
    assert parse_custom_attributes(None) == {}
