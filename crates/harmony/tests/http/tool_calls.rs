//! `tool_choice` "required" and a named function with the real SmolLM2, whose chat template
//! teaches no tool format at all (so nothing but the forced opener and the constraint make it
//! call): the reply is one well-formed call, non-streaming and streaming alike under greedy
//! decoding, and a reply cut by max_tokens is a 400, not prose.

use super::real_model::{start_real, REAL};
use super::*;

fn tools() -> Value {
    json!([
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "The city"}},
                    "required": ["city"]
                }
            }
        },
        {
            "type": "function",
            "function": {
                "name": "get_time",
                "description": "Get the current time in a time zone",
                "parameters": {
                    "type": "object",
                    "properties": {"timezone": {"type": "string"}},
                    "required": ["timezone"]
                }
            }
        }
    ])
}

fn tool_request(tool_choice: Value, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": REAL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant with tools."},
            {"role": "user", "content": "What is the weather like in Paris right now?"}
        ],
        "tools": tools(),
        "tool_choice": tool_choice,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

/// Checks one call's shape and returns (name, arguments).
fn checked_call(call: &Value) -> (String, String) {
    assert_eq!(call["type"], "function", "{call}");
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    let name = call["function"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    assert!(
        ["get_weather", "get_time"].contains(&name.as_str()),
        "{name}"
    );
    let arguments = call["function"]["arguments"]
        .as_str()
        .expect("arguments are a string")
        .to_owned();
    let parsed: Value = serde_json::from_str(&arguments).expect("arguments are JSON");
    assert!(parsed.is_object(), "arguments are an object: {arguments}");
    (name, arguments)
}

/// Streams `body` and assembles the tool calls as OpenAI's docs show (by index: the first
/// chunk's id, type and name, then the argument fragments appended); returns the calls, the
/// content and the finish reason.
async fn streamed(harmony: &TestHarmony, body: &Value) -> (Vec<Value>, String, String) {
    let response = harmony
        .client
        .post(format!("{}/v1/chat/completions", harmony.base_url))
        .json(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    let payloads = sse_payloads(response).await;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let mut calls: Vec<Value> = Vec::new();
    let mut content = String::new();
    let mut finish_reason = String::new();
    for payload in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(payload).expect("json chunk");
        assert!(chunk.get("error").is_none(), "{chunk}");
        let choice = &chunk["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish_reason = reason.to_owned();
        }
        content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().expect("index") as usize;
            let fragment = call["function"]["arguments"].as_str().expect("arguments");
            if index == calls.len() {
                assert_eq!(
                    fragment, "",
                    "the first chunk of a call has empty arguments"
                );
                calls.push(call.clone());
                continue;
            }
            assert!(call.get("id").is_none() && call["function"].get("name").is_none());
            let so_far = calls[index]["function"]["arguments"]
                .as_str()
                .expect("arguments")
                .to_owned();
            calls[index]["function"]["arguments"] = Value::from(so_far + fragment);
        }
    }
    (calls, content, finish_reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_and_named_tool_choice_yield_one_well_formed_call_streamed_or_not() {
    let Some(harmony) = start_real(HarmonyConfig::for_test()).await else {
        return;
    };
    let named = json!({"type": "function", "function": {"name": "get_time"}});
    for tool_choice in [json!("required"), named.clone()] {
        let (status, reply) = harmony
            .post(
                "/v1/chat/completions",
                &tool_request(tool_choice.clone(), 64, false),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        eprintln!("{tool_choice}: {}", reply["choices"][0]["message"]);
        let choice = &reply["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{reply}");
        assert!(choice["message"]["content"].is_null(), "{reply}");
        let calls = choice["message"]["tool_calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 1, "{reply}");
        let (name, arguments) = checked_call(&calls[0]);
        if tool_choice == named {
            assert_eq!(name, "get_time");
        }

        let (streamed_calls, streamed_content, finish_reason) =
            streamed(&harmony, &tool_request(tool_choice.clone(), 64, true)).await;
        assert_eq!(finish_reason, "tool_calls");
        assert_eq!(streamed_content, "");
        assert_eq!(streamed_calls.len(), 1);
        assert_eq!(checked_call(&streamed_calls[0]), (name, arguments));

        // Greedy decoding makes the call complete at exactly `completion_tokens`: one token less
        // leaves its arguments unfinished, which is a clear 400 rather than prose or a bad call.
        let completion_tokens = reply["usage"]["completion_tokens"].as_u64().expect("usage") as u32;
        if completion_tokens > 1 {
            let (status, error) = harmony
                .post(
                    "/v1/chat/completions",
                    &tool_request(tool_choice.clone(), completion_tokens - 1, false),
                )
                .await;
            assert_eq!(status, 400, "{error}");
            assert_eq!(error["error"]["param"], "max_tokens", "{error}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        }
    }

    // Bad tool_choice values are 400s in OpenAI's shape.
    for (tool_choice, param) in [
        (
            json!({"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
        ),
        (json!("sometimes"), "tool_choice"),
    ] {
        let (status, error) = harmony
            .post(
                "/v1/chat/completions",
                &tool_request(tool_choice, 16, false),
            )
            .await;
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (400, Some(param))
        );
    }
    harmony.wait_for_idle_engine(REAL).await;
    harmony.stop().await;
}
