"""The inference path end to end: `adaptive serve` with the real SmolLM2 model, driven by the
official `openai` client and by the `adaptive-sdk` client.

One server per module (loading the model takes a while on two cores). The last test restarts
it on the same data directory to check that every acknowledged interaction survived.
"""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import BOOTSTRAP_API_KEY, free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "default/smol"


class Serve:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.process = None
        # Fixed for the server's life, so that clients keep working across a restart.
        self.ports = (free_port(), free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        binary = os.environ.get("ADAPTIVE_BIN")
        if not binary:
            pytest.fail("set ADAPTIVE_BIN to the adaptive binary (scripts/test.sh does)")
        if not MODEL.is_file():
            pytest.fail(f"{MODEL} is missing: run scripts/fetch-model.sh")
        public, internal, harmony = self.ports
        env = {
            "PATH": os.environ.get("PATH", ""),
            "RUST_LOG": "warn",
            "ADAPTIVE_AUTH__BOOTSTRAP_API_KEY": BOOTSTRAP_API_KEY,
        }
        self.log_path = self.data_dir / "serve.log"
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [binary, "serve", "--data-dir", str(self.data_dir), "--model", f"smol={MODEL}",
             "--bind", f"127.0.0.1:{public}", "--bind-internal", f"127.0.0.1:{internal}",
             "--harmony-bind", f"127.0.0.1:{harmony}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.wait_until_model_answers()

    def wait_until_model_answers(self) -> None:
        deadline = time.monotonic() + 300
        body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "store": false}' % MODEL_NAME.encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"adaptive serve exited with {self.process.returncode}: {self.log_path.read_text()}")
            request = urllib.request.Request(
                f"{self.url}/api/v1/chat/completions", data=body, method="POST",
                headers={"Authorization": f"Bearer {BOOTSTRAP_API_KEY}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the model never answered: {self.log_path.read_text()}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    server = Serve(tmp_path_factory.mktemp("serve-data"))
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def openai_client(serve):
    import openai

    return openai.OpenAI(base_url=f"{serve.url}/api/v1", api_key=BOOTSTRAP_API_KEY, timeout=120)


@pytest.fixture(scope="module")
def sdk(serve):
    from adaptive_sdk import Adaptive

    return Adaptive(base_url=serve.url, api_key=BOOTSTRAP_API_KEY)


# Without a system message SmolLM2's template adds its own, with which this 4-bit model
# tends to answer in French; the tests ask for English explicitly.
QUESTION = [
    {"role": "system", "content": "You are a helpful AI assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_openai_chat_answers_in_english_and_greedy_is_deterministic(openai_client):
    first = openai_client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=24)
    second = openai_client.chat.completions.create(model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=24)
    text = first.choices[0].message.content
    assert "Paris" in text, text
    assert text == second.choices[0].message.content
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert first.choices[0].finish_reason in ("stop", "length")


def test_openai_streaming_with_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=24, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Paris" in text, text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_completions_and_models_list(openai_client):
    completion = openai_client.completions.create(model=MODEL_NAME, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip(), completion
    models = [model.id for model in openai_client.models.list()]
    assert MODEL_NAME in models


def test_openai_errors(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="no-such-project/x", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model=MODEL_NAME, messages=[])


def test_sdk_chat_with_and_without_stream_is_recorded_as_interactions(sdk):
    session = str(uuid.uuid4())
    response = sdk.chat.create(messages=QUESTION, model="smol", project="default", max_tokens=16, temperature=0, session_id=session)
    completion_id = str(response.choices[0].completion_id)
    assert str(response.session_id) == session
    streamed = list(sdk.chat.create(messages=QUESTION, model="smol", project="default", max_tokens=16, stream=True, session_id=session))
    assert streamed and all(str(chunk.session_id) == session for chunk in streamed)

    def recorded():
        page = sdk.interactions.list(project="default")
        return {str(node.id) for node in page.nodes}

    deadline = time.monotonic() + 10
    while completion_id not in recorded() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert completion_id in recorded()
    interaction = sdk.interactions.get(completion_id, project="default")
    assert interaction is not None and interaction.completion == response.choices[0].message.content
    assert [message.content for message in interaction.chat_messages] == [message["content"] for message in QUESTION]


def global_usage(sdk) -> dict:
    """Totals of `globalUsage`, built and sent by the SDK's own query builder."""
    from adaptive_sdk.graphql_client.custom_fields import GlobalUsageFields, UsageStatsFields
    from adaptive_sdk.graphql_client.custom_queries import Query
    from adaptive_sdk.graphql_client.enums import DateBucketUnit
    from adaptive_sdk.graphql_client.input_types import GlobalUsageFilterInput

    field = Query.global_usage(filter=GlobalUsageFilterInput(interval=DateBucketUnit.NO_GROUP_BY_DATE)).fields(
        GlobalUsageFields.total().fields(
            UsageStatsFields.prompt_tokens, UsageStatsFields.completion_tokens, UsageStatsFields.interactions
        )
    )
    return sdk._gql_client.query(field, operation_name="usageTotals")["globalUsage"]["total"]


def test_usage_counts_every_call_stored_or_not(openai_client, sdk):
    # Earlier tests' last calls may still be in the recorder's queue: wait until totals settle.
    before = global_usage(sdk)
    for _ in range(50):
        time.sleep(0.2)
        settled = global_usage(sdk)
        if settled == before:
            break
        before = settled
    prompt = completion = 0
    for store in (True, False):
        response = openai_client.chat.completions.create(
            model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=8, extra_body={"store": store}
        )
        prompt += response.usage.prompt_tokens
        completion += response.usage.completion_tokens
    stream = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=QUESTION, temperature=0, max_tokens=8, stream=True,
        stream_options={"include_usage": True}, extra_body={"store": False},
    )
    usage = list(stream)[-1].usage
    prompt += usage.prompt_tokens
    completion += usage.completion_tokens
    expected = {
        "promptTokens": before["promptTokens"] + prompt,
        "completionTokens": before["completionTokens"] + completion,
        "interactions": before["interactions"] + 3,
    }
    # Recording is batched off the request path: wait for the batch, then check it exactly.
    deadline = time.monotonic() + 10
    while global_usage(sdk) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert global_usage(sdk) == expected


def test_acknowledged_interactions_survive_a_graceful_restart(serve, openai_client, sdk):
    marker = uuid.uuid4().hex
    acknowledged = set()
    for index in range(6):
        messages = [{"role": "user", "content": f"Say hello ({marker} {index})"}]
        if index % 2:
            stream = openai_client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=8, stream=True)
            chunks = list(stream)
            acknowledged.add(chunks[0].choices[0].model_extra["completion_id"])
        else:
            response = openai_client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=8)
            acknowledged.add(response.choices[0].model_extra["completion_id"])
    # A stream the client abandons after its first chunk is not a completed interaction.
    abandoned = openai_client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": f"Count to fifty ({marker})"}], max_tokens=200, stream=True)
    next(iter(abandoned))
    abandoned.close()

    assert serve.stop() == 0
    serve.start()
    page = sdk.interactions.list(project="default", page={"first": 1000})
    stored = [str(node.id) for node in page.nodes if any(marker in message.content for message in node.chat_messages)]
    assert sorted(stored) == sorted(acknowledged), "exactly the completed interactions, each once"
