//! Integration tests of adaptive-engine-models (one test binary, per the house style).

mod common;
mod errors;
mod reference;
mod smollm;
mod tokenizer;
