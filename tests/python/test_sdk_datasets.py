"""Datasets through the real adaptive-sdk 0.14.2 client, on SQLite and PostgreSQL:
datasets.upload of a small file (a GraphQL multipart request) and of a file above the SDK's
MIN_CHUNK_SIZE_BYTES (a chunked upload, then createDatasetFromMultipartUpload polled to the
end), list, get, download (original and recipe formats), delete, and malformed files on both
paths.
"""

import json
import uuid

import pytest
from adaptive_sdk.resources.datasets import MIN_CHUNK_SIZE_BYTES


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def record(index: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "answer briefly"},
            {"role": "user", "content": f"what is {index} + {index}? " + "pad " * 20},
        ],
        "completion": str(2 * index),
    }


def write_jsonl(path, records) -> bytes:
    data = "".join(json.dumps(item) + "\n" for item in records).encode()
    path.write_bytes(data)
    return data


@pytest.fixture(scope="module")
def project(client):
    key = unique("ds")
    client.projects.create(key=key)
    return key


def test_small_upload_get_list_download_delete(client, project, tmp_path):
    source = tmp_path / "small.jsonl"
    data = write_jsonl(source, [record(i) for i in range(25)])
    assert len(data) < MIN_CHUNK_SIZE_BYTES
    key = unique("small")
    dataset = client.datasets.upload(str(source), dataset_key=key, name="Small set", project=project)
    assert (dataset.key, dataset.name, dataset.records) == (key, "Small set", 25)
    assert dataset.kind.value == "PROMPT_COMPLETION"
    assert dataset.metrics_usage == []

    assert client.datasets.get(key, project=project).id == dataset.id
    assert client.datasets.get(str(dataset.id), project=project).key == key
    assert client.datasets.get(unique("missing"), project=project) is None
    assert key in [listed.key for listed in client.datasets.list(project=project)]

    original = tmp_path / "original.jsonl"
    client.datasets.download(key, str(original), project=project)
    assert original.read_bytes() == data
    recipe = tmp_path / "recipe.jsonl"
    client.datasets.download(key, str(recipe), format="recipe", project=project)
    samples = [json.loads(line) for line in recipe.read_text().splitlines()]
    assert len(samples) == 25
    assert samples[3]["completion"] == ["assistant", "6"]
    assert samples[3]["prompt"][0] == ["system", "answer briefly"]

    assert client.datasets.delete(key, project=project) is True
    assert client.datasets.get(key, project=project) is None
    assert key not in [listed.key for listed in client.datasets.list(project=project)]
    with pytest.raises(Exception, match="not found"):
        client.datasets.delete(key, project=project)


def test_chunked_upload_above_the_sdk_threshold(client, project, tmp_path):
    source = tmp_path / "large.jsonl"
    count = (MIN_CHUNK_SIZE_BYTES * 3 // 2) // len(json.dumps(record(0)))
    data = write_jsonl(source, [record(i) for i in range(count)])
    # More than one 5 MB part: the SDK cuts records across parts.
    assert len(data) > MIN_CHUNK_SIZE_BYTES + 1024 * 1024
    key = unique("large")
    dataset = client.datasets.upload(str(source), dataset_key=key, project=project)
    assert (dataset.key, dataset.name, dataset.records) == (key, key, count)
    downloaded = tmp_path / "downloaded.jsonl"
    client.datasets.download(str(dataset.id), str(downloaded), project=project)
    assert downloaded.read_bytes() == data
    assert client.datasets.delete(str(dataset.id), project=project) is True


def test_malformed_files_are_refused_with_the_line(client, project, tmp_path):
    small = tmp_path / "bad.jsonl"
    small.write_text(json.dumps(record(0)) + "\n" + '{"messages": "nope"}\n')
    key = unique("bad")
    with pytest.raises(Exception, match="line 2"):
        client.datasets.upload(str(small), dataset_key=key, project=project)
    assert client.datasets.get(key, project=project) is None

    large = tmp_path / "bad-large.jsonl"
    count = MIN_CHUNK_SIZE_BYTES // len(json.dumps(record(0))) + 100
    write_jsonl(large, [record(i) for i in range(count)])
    with large.open("a") as file:
        file.write("this is not json\n")
    large_key = unique("bad-large")
    with pytest.raises(Exception, match=f"line {count + 1}"):
        client.datasets.upload(str(large), dataset_key=large_key, project=project)
    # The failed dataset gives its key up: a good file may take it.
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [record(i) for i in range(3)])
    retried = client.datasets.upload(str(good), dataset_key=large_key, project=project)
    assert retried.records == 3
