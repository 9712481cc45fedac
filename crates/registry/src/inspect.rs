//! Reads what the manifest says about a model from the model's own files, without loading
//! weights: the GGUF header (metadata key/values and tensor descriptors), or `config.json` plus
//! the safetensors JSON headers of an HF-layout directory.
//!
//! GGUF (v2/v3) is little-endian: magic `GGUF`, version u32, tensor count u64, metadata count
//! u64, then `key: string, type: u32, value` entries, then per tensor `name, n_dims: u32,
//! dims: [u64], type: u32, offset: u64`. Strings are `len: u64` + UTF-8. We read sequentially
//! through a buffer and skip values we do not need (the tokenizer arrays are most of the
//! header), so this costs a few megabytes of reads, never the tensor data.
//!
//! Everything found is best effort: a field that is absent or unreadable stays `None`, because
//! an unusual file should still import. Only a file that is not GGUF at all is an error.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::error::{RegistryError, Result};

/// What the manifest records about a model beyond its files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelFacts {
    pub architecture: Option<String>,
    pub parameters: Option<u64>,
    pub context_length: Option<u64>,
    pub quantization: Option<String>,
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Guards against a corrupt header asking us to allocate gigabytes for one string.
const MAX_GGUF_STRING: u64 = 16 << 20;

pub fn inspect_gguf(path: &Path) -> Result<ModelFacts> {
    let file = File::open(path).map_err(RegistryError::io(format!("open {}", path.display())))?;
    let mut reader = GgufReader {
        inner: BufReader::with_capacity(1 << 20, file),
    };
    let not_gguf = |reason: String| RegistryError::UnsupportedSource {
        path: path.display().to_string(),
        reason,
    };
    let mut magic = [0u8; 4];
    reader
        .inner
        .read_exact(&mut magic)
        .map_err(|error| not_gguf(format!("not a gguf file: {error}")))?;
    if &magic != GGUF_MAGIC {
        return Err(not_gguf("not a gguf file: bad magic".to_owned()));
    }
    let header = reader
        .read_header()
        .map_err(|error| not_gguf(format!("unreadable gguf header: {error}")))?;
    Ok(header)
}

struct GgufReader<R> {
    inner: R,
}

#[derive(Debug)]
enum GgufScalar {
    Unsigned(u64),
    Text(String),
    Other,
}

impl<R: Read> GgufReader<R> {
    fn read_header(&mut self) -> std::io::Result<ModelFacts> {
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(invalid_data(format!("unsupported gguf version {version}")));
        }
        let tensor_count = self.u64()?;
        let metadata_count = self.u64()?;
        let mut architecture = None;
        let mut file_type = None;
        let mut context_lengths = Vec::new();
        for _ in 0..metadata_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type)?;
            match (key.as_str(), value) {
                ("general.architecture", GgufScalar::Text(text)) => architecture = Some(text),
                ("general.file_type", GgufScalar::Unsigned(number)) => file_type = Some(number),
                (key, GgufScalar::Unsigned(number)) if key.ends_with(".context_length") => {
                    context_lengths.push((key.to_owned(), number))
                }
                _ => {}
            }
        }
        let mut parameters: u64 = 0;
        for _ in 0..tensor_count {
            self.string()?;
            let dimension_count = self.u32()?;
            let mut elements: u64 = 1;
            for _ in 0..dimension_count {
                elements = elements.saturating_mul(self.u64()?);
            }
            self.u32()?;
            self.u64()?;
            parameters = parameters.saturating_add(elements);
        }
        let context_length = architecture.as_ref().and_then(|arch| {
            let wanted = format!("{arch}.context_length");
            context_lengths
                .iter()
                .find(|(key, _)| *key == wanted)
                .map(|(_, value)| *value)
        });
        Ok(ModelFacts {
            architecture,
            parameters: (tensor_count > 0).then_some(parameters),
            context_length,
            quantization: file_type.map(gguf_file_type_name),
        })
    }

    fn value(&mut self, value_type: u32) -> std::io::Result<GgufScalar> {
        Ok(match value_type {
            0 | 1 | 7 => GgufScalar::Unsigned(u64::from(self.bytes::<1>()?[0])),
            2 | 3 => GgufScalar::Unsigned(u64::from(u16::from_le_bytes(self.bytes::<2>()?))),
            4 | 5 => GgufScalar::Unsigned(u64::from(self.u32()?)),
            6 => {
                self.bytes::<4>()?;
                GgufScalar::Other
            }
            8 => GgufScalar::Text(self.string()?),
            9 => {
                let element_type = self.u32()?;
                let count = self.u64()?;
                for _ in 0..count {
                    self.value(element_type)?;
                }
                GgufScalar::Other
            }
            10 | 11 => GgufScalar::Unsigned(self.u64()?),
            12 => {
                self.bytes::<8>()?;
                GgufScalar::Other
            }
            other => return Err(invalid_data(format!("unknown gguf value type {other}"))),
        })
    }

    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut buffer = [0u8; N];
        self.inner.read_exact(&mut buffer)?;
        Ok(buffer)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }

    fn u64(&mut self) -> std::io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }

    fn string(&mut self) -> std::io::Result<String> {
        let length = self.u64()?;
        if length > MAX_GGUF_STRING {
            return Err(invalid_data(format!("gguf string of {length} bytes")));
        }
        let mut buffer = Vec::with_capacity(length as usize);
        (&mut self.inner).take(length).read_to_end(&mut buffer)?;
        if buffer.len() as u64 != length {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        String::from_utf8(buffer).map_err(|error| invalid_data(error.to_string()))
    }
}

fn invalid_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// llama.cpp's `LLAMA_FTYPE_*` names for `general.file_type`.
fn gguf_file_type_name(file_type: u64) -> String {
    let name = match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        other => return format!("file_type_{other}"),
    };
    name.to_owned()
}

/// Reads `config.json` and the safetensors headers of an HF-layout directory.
pub fn inspect_hf_directory(directory: &Path, safetensors_files: &[&Path]) -> ModelFacts {
    let config: Option<Value> = std::fs::read(directory.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let config = config.unwrap_or(Value::Null);
    let architecture = config["architectures"][0]
        .as_str()
        .or_else(|| config["model_type"].as_str())
        .map(str::to_owned);
    let context_length = ["max_position_embeddings", "n_positions", "seq_length"]
        .iter()
        .find_map(|field| config[field].as_u64());
    let quantization = config["quantization_config"]["quant_method"]
        .as_str()
        .or_else(|| config["torch_dtype"].as_str())
        .or_else(|| config["dtype"].as_str())
        .map(str::to_owned);
    let mut parameters: Option<u64> = None;
    for file in safetensors_files {
        if let Some(count) = safetensors_parameter_count(file) {
            parameters = Some(parameters.unwrap_or(0).saturating_add(count));
        }
    }
    ModelFacts {
        architecture,
        parameters,
        context_length,
        quantization,
    }
}

/// A safetensors file starts with `header_len: u64` and a JSON map of tensor name to
/// `{dtype, shape, data_offsets}` (plus an optional `__metadata__`).
fn safetensors_parameter_count(path: &Path) -> Option<u64> {
    let mut file = File::open(path).ok()?;
    let mut length_bytes = [0u8; 8];
    file.read_exact(&mut length_bytes).ok()?;
    let header_length = u64::from_le_bytes(length_bytes);
    if header_length > 100 << 20 {
        return None;
    }
    let mut header = Vec::with_capacity(header_length as usize);
    file.take(header_length).read_to_end(&mut header).ok()?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&header).ok()?;
    let count = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, tensor)| {
            tensor["shape"]
                .as_array()
                .map(|shape| shape.iter().filter_map(Value::as_u64).product::<u64>())
        })
        .sum();
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gguf_string(buffer: &mut Vec<u8>, text: &str) {
        buffer.extend((text.len() as u64).to_le_bytes());
        buffer.extend(text.as_bytes());
    }

    #[test]
    fn reads_a_handmade_gguf_header() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(2u64.to_le_bytes()); // tensors
        bytes.extend(4u64.to_le_bytes()); // metadata entries
        gguf_string(&mut bytes, "general.architecture");
        bytes.extend(8u32.to_le_bytes());
        gguf_string(&mut bytes, "llama");
        gguf_string(&mut bytes, "tokenizer.ggml.tokens");
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(8u32.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        gguf_string(&mut bytes, "a");
        gguf_string(&mut bytes, "b");
        gguf_string(&mut bytes, "llama.context_length");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(2048u32.to_le_bytes());
        gguf_string(&mut bytes, "general.file_type");
        bytes.extend(4u32.to_le_bytes());
        bytes.extend(15u32.to_le_bytes());
        for (name, dims) in [("w", vec![4u64, 8]), ("b", vec![8u64])] {
            gguf_string(&mut bytes, name);
            bytes.extend((dims.len() as u32).to_le_bytes());
            for dim in dims {
                bytes.extend(dim.to_le_bytes());
            }
            bytes.extend(0u32.to_le_bytes());
            bytes.extend(0u64.to_le_bytes());
        }
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        file.write_all(&bytes).expect("write");
        let facts = inspect_gguf(file.path()).expect("parses");
        assert_eq!(
            facts,
            ModelFacts {
                architecture: Some("llama".into()),
                parameters: Some(40),
                context_length: Some(2048),
                quantization: Some("Q4_K_M".into()),
            }
        );
    }

    #[test]
    fn rejects_files_that_are_not_gguf() {
        let mut file = tempfile::NamedTempFile::new().expect("tempfile");
        file.write_all(b"PK\x03\x04 definitely a zip")
            .expect("write");
        let error = inspect_gguf(file.path()).expect_err("not gguf");
        assert!(
            matches!(error, RegistryError::UnsupportedSource { .. }),
            "{error}"
        );
    }

    #[test]
    fn reads_hf_config_and_safetensors_headers() {
        let directory = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            directory.path().join("config.json"),
            r#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":8192,"torch_dtype":"bfloat16"}"#,
        )
        .expect("config");
        let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,30]},"b":{"dtype":"BF16","shape":[7],"data_offsets":[30,44]}}"#;
        let mut weights = (header.len() as u64).to_le_bytes().to_vec();
        weights.extend(header);
        weights.extend([0u8; 44]);
        let weights_path = directory.path().join("model.safetensors");
        std::fs::write(&weights_path, weights).expect("weights");
        let facts = inspect_hf_directory(directory.path(), &[weights_path.as_path()]);
        assert_eq!(facts.architecture.as_deref(), Some("LlamaForCausalLM"));
        assert_eq!(facts.parameters, Some(22));
        assert_eq!(facts.context_length, Some(8192));
        assert_eq!(facts.quantization.as_deref(), Some("bfloat16"));
    }
}
