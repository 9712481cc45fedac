"""Tool calls through `adaptive serve` (gateway → harmony) with the official `openai` client.

SmolLM2-135M's chat template teaches no tool format, so with `tool_choice` "required" or a named
function only harmony's forced opener and constrained decoding make it call: the reply must be
one call to a listed function with JSON-object arguments, and under greedy decoding the
streamed deltas, assembled the way OpenAI's docs show, must give the same call.
"""

import json

import pytest

from conftest import BOOTSTRAP_API_KEY
from test_inference import MODEL_NAME, Serve

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Get the current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]
TOOL_NAMES = {tool["function"]["name"] for tool in TOOLS}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant with tools."},
    {"role": "user", "content": "What is the weather like in Paris right now?"},
]


@pytest.fixture(scope="module")
def tools_client(tmp_path_factory):
    import openai

    server = Serve(tmp_path_factory.mktemp("serve-tools"))
    server.start()
    yield openai.OpenAI(base_url=f"{server.url}/api/v1", api_key=BOOTSTRAP_API_KEY, timeout=120)
    if server.process.poll() is None:
        server.stop()


def assemble_streamed_tool_calls(stream):
    """OpenAI's documented way: keep each call's first delta, append the argument fragments."""
    final_tool_calls = {}
    finish_reason = None
    content = ""
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        finish_reason = choice.finish_reason or finish_reason
        for tool_call in choice.delta.tool_calls or []:
            index = tool_call.index
            if index not in final_tool_calls:
                final_tool_calls[index] = tool_call
            else:
                final_tool_calls[index].function.arguments += tool_call.function.arguments
    return [final_tool_calls[index] for index in sorted(final_tool_calls)], content, finish_reason


def check_call(call):
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name in TOOL_NAMES
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict), call.function.arguments
    return call.function.name, call.function.arguments


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_time"}}],
    ids=["required", "named"],
)
def test_forced_tool_call_is_well_formed_and_the_same_streamed(tools_client, tool_choice):
    reply = tools_client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, tools=TOOLS, tool_choice=tool_choice,
        temperature=0, max_tokens=64,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert not choice.message.content
    assert len(choice.message.tool_calls) == 1, choice.message
    name, arguments = check_call(choice.message.tool_calls[0])
    if isinstance(tool_choice, dict):
        assert name == "get_time"

    stream = tools_client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, tools=TOOLS, tool_choice=tool_choice,
        temperature=0, max_tokens=64, stream=True,
    )
    calls, content, finish_reason = assemble_streamed_tool_calls(stream)
    assert finish_reason == "tool_calls"
    assert content == ""
    assert len(calls) == 1
    assert check_call(calls[0]) == (name, arguments)


def test_tool_choice_naming_an_unknown_function_is_a_400(tools_client):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        tools_client.chat.completions.create(
            model=MODEL_NAME, messages=MESSAGES, tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}}, max_tokens=8,
        )
    assert "nope" in str(error.value)
