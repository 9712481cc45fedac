//! Tokenizers from GGUF metadata, chat templates, incremental detokenization.

use adaptive_engine_models::{
    load_model, ChatMessage, ChatTemplate, ChatTemplateInput, IncrementalDetokenizer, KvCacheSize,
    LoadOptions,
};

use crate::common::smollm_path;

fn small_options() -> LoadOptions {
    LoadOptions {
        kv_cache: KvCacheSize::Blocks(4),
        block_size: 16,
        max_seq_len: Some(64),
        ..LoadOptions::default()
    }
}

const MULTILINGUAL: &str = "Hello, world! Grüße aus München. 東京は晴れです。 Привет, мир! \
     مرحبا 👋🏽🇫🇷 1234567 tabs\tand\nnewlines  double  spaces <|im_start|>";

#[test]
fn gguf_tokenizer_round_trips_multilingual_and_emoji_text() {
    let Some(path) = smollm_path() else { return };
    let model = load_model(&path, &small_options()).expect("load");
    let encoding = model.tokenizer.encode(MULTILINGUAL, false).expect("encode");
    let ids = encoding.get_ids();
    assert!(ids.len() > 20);
    let decoded = model.tokenizer.decode(ids, false).expect("decode");
    assert_eq!(decoded, MULTILINGUAL);
    // The special token is one token, not its characters.
    assert_eq!(*ids.last().expect("ids"), 1, "<|im_start|> is token 1");
}

/// SmolLM2's HF tokenizer.json gives these ids (checked against `transformers`).
#[test]
fn gguf_tokenizer_matches_known_smollm_ids() {
    let Some(path) = smollm_path() else { return };
    let model = load_model(&path, &small_options()).expect("load");
    let ids = model
        .tokenizer
        .encode("<|im_start|>user\nHello", false)
        .expect("encode")
        .get_ids()
        .to_vec();
    assert_eq!(ids[0], 1);
    assert_eq!(
        model.tokenizer.decode(&ids, false).expect("decode"),
        "<|im_start|>user\nHello"
    );
    assert_eq!(model.tokenizer.token_to_id("<|im_end|>"), Some(2));
    // Digits split one by one (SmolLM's pre-tokenizer).
    let digits = model.tokenizer.encode("2024", false).expect("encode");
    assert_eq!(digits.get_ids().len(), 4);
}

#[test]
fn smollm_chat_template_renders_chatml() {
    let Some(path) = smollm_path() else { return };
    let model = load_model(&path, &small_options()).expect("load");
    let template = model.chat_template.as_ref().expect("template");
    let rendered = template
        .render::<_, serde_json::Value>(&ChatTemplateInput {
            messages: &[
                ChatMessage::new("system", "You are terse."),
                ChatMessage::new("user", "Hi"),
            ],
            add_generation_prompt: true,
            tools: None,
        })
        .expect("render");
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let default_system = template
        .render::<_, serde_json::Value>(&ChatTemplateInput {
            messages: &[ChatMessage::new("user", "Hi")],
            add_generation_prompt: false,
            tools: None,
        })
        .expect("render");
    assert_eq!(
        default_system,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn chat_template_supports_hf_conventions() {
    let source = "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}\
        [{{ m.role | upper }}] {{ m.content.strip() }}{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}\
        {% if tools is defined %} tools={{ tools | length }}{% endif %}\
        {% if add_generation_prompt %}{{ eos_token }}{% endif %}";
    let template = ChatTemplate::new(source, Some("<s>"), Some("</s>")).expect("parse");
    let tools = vec![serde_json::json!({"type": "function", "function": {"name": "f"}})];
    let rendered = template
        .render(&ChatTemplateInput {
            messages: &[
                ChatMessage::new("user", "  hi  "),
                ChatMessage::new("assistant", "yo"),
            ],
            add_generation_prompt: true,
            tools: Some(&tools),
        })
        .expect("render");
    assert_eq!(rendered, "<s>[USER] hi\n[ASSISTANT] yo tools=1</s>");
    let error = template
        .render::<_, serde_json::Value>(&ChatTemplateInput {
            messages: &[ChatMessage::new("tool", "x")],
            add_generation_prompt: false,
            tools: None,
        })
        .expect_err("raise_exception fails the render");
    assert!(error.to_string().contains("no tools here"), "{error}");
}

#[test]
fn incremental_detokenizer_never_emits_broken_utf8() {
    let Some(path) = smollm_path() else { return };
    let model = load_model(&path, &small_options()).expect("load");
    let ids = model
        .tokenizer
        .encode(MULTILINGUAL, false)
        .expect("encode")
        .get_ids()
        .to_vec();
    let mut detokenizer = IncrementalDetokenizer::new(false);
    let mut streamed = String::new();
    let mut pieces = 0;
    for &id in &ids {
        if let Some(piece) = detokenizer.push(&model.tokenizer, id).expect("push") {
            assert!(!piece.contains('\u{FFFD}'), "broken piece {piece:?}");
            streamed.push_str(&piece);
            pieces += 1;
        }
    }
    if let Some(rest) = detokenizer.flush(&model.tokenizer).expect("flush") {
        streamed.push_str(&rest);
    }
    assert_eq!(streamed, MULTILINGUAL);
    // Emoji and CJK span several byte-level tokens: some pushes must have been held back.
    assert!(
        pieces < ids.len(),
        "{pieces} pieces for {} tokens",
        ids.len()
    );
}

/// A SentencePiece-style ("llama") vocabulary in GGUF metadata: merges come from the scores,
/// spaces are `▁`, and characters outside the vocabulary fall back to `<0xNN>` byte tokens.
#[test]
fn gguf_sentencepiece_tokenizer_round_trips_with_byte_fallback() {
    use candle_core::quantized::gguf_file::{self, Value};
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<Value> = vec![Value::I32(2), Value::I32(3), Value::I32(3)];
    for byte in 0..=255u8 {
        tokens.push(format!("<0x{byte:02X}>"));
        types.push(Value::I32(6));
    }
    let pieces = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "é", "▁h", "he", "ll", "llo", "▁he", "▁hello",
        "▁w", "or", "▁wor", "ld", "▁world",
    ];
    for piece in pieces {
        tokens.push(piece.into());
        types.push(Value::I32(1));
    }
    // Longer pieces score higher, so they merge first (as SentencePiece ranks them).
    let scores: Vec<Value> = tokens
        .iter()
        .map(|t| Value::F32(t.chars().count() as f32 - 10.))
        .collect();
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        ("tokenizer.ggml.scores", Value::Array(scores)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spm.gguf");
    let mut file = std::fs::File::create(&path).expect("create");
    let metadata_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &metadata_refs, &[]).expect("write gguf");
    drop(file);

    let (tokenizer, special) = adaptive_engine_models::gguf_tokenizer(&path).expect("tokenizer");
    assert_eq!(special.bos_token_id, Some(1));
    assert_eq!(special.eos_token_ids, vec![2]);
    assert!(
        special.add_bos_token,
        "llama vocabularies default to a bos token"
    );
    let text = "hello world hé 👋";
    let ids = tokenizer
        .encode(text, false)
        .expect("encode")
        .get_ids()
        .to_vec();
    let id = |piece: &str| tokenizer.token_to_id(piece).expect("piece in vocab");
    assert_eq!(&ids[..2], &[id("▁hello"), id("▁world")]);
    // 👋 is not in the vocabulary: its four UTF-8 bytes.
    assert_eq!(
        &ids[ids.len() - 4..],
        &[id("<0xF0>"), id("<0x9F>"), id("<0x91>"), id("<0x8B>")]
    );
    assert_eq!(tokenizer.decode(&ids, false).expect("decode"), text);

    // Streaming holds the byte-fallback pieces of 👋 back until the character is complete.
    let mut detokenizer = IncrementalDetokenizer::new(false);
    let mut streamed = String::new();
    for (index, &token) in ids.iter().enumerate() {
        let piece = detokenizer.push(&tokenizer, token).expect("push");
        let inside_emoji = index >= ids.len() - 4 && index < ids.len() - 1;
        assert!(
            !(inside_emoji && piece.is_some()),
            "emitted {piece:?} mid-character"
        );
        streamed.push_str(&piece.unwrap_or_default());
    }
    streamed.push_str(
        &detokenizer
            .flush(&tokenizer)
            .expect("flush")
            .unwrap_or_default(),
    );
    assert_eq!(streamed, text);
}
