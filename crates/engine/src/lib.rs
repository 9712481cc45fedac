//! HTTP-free inference core: model families, weights, tokenizer and chat templates, paged KV cache, scheduler, sampler
