#!/usr/bin/env python3
"""Streaming load against any OpenAI-compatible server, the same way for every server.

Used by benches/llama-cpp-baseline.sh to measure `adaptive harmony` and llama-server with one
client. Standard library only (http.client and threads), so nothing to install.

Every request is POST /v1/completions with a raw prompt (no chat template, so both servers see
the same tokens), greedy (temperature 0), `ignore_eos` (both servers accept it, so every request
generates exactly max_tokens), streamed with `stream_options.include_usage`. Each SSE chunk's
arrival time is recorded; a chunk carries one token on both servers (checked: the script prints
chunks per request against usage.completion_tokens).

Benchmarks (--bench):
  single   one stream at a time, --runs times: decode tok/s = (tokens - 1) / (last - first chunk)
  parallel --streams concurrent requests: aggregate decode tok/s over the window in which all
           streams are decoding (latest first chunk to earliest last chunk), and end to end
           (all completion tokens / wall time from the first submit to the last finish)
  ttft     one long prompt (--ttft-words) at a time, --runs times, distinct prompts (no prefix
           reuse): time to the first chunk
  ttft-load --streams concurrent long prompts at once: TTFT p50/p90/max

Prints one JSON object per benchmark on stdout.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = (
    "the river carried small boats past the old mill while children watched from the bridge "
    "and their parents talked about the harvest the weather and the price of bread in town "
).split()


def prompt_text(tag, words):
    """A distinct prompt of about `words` words; the tag comes first so no two prompts share a
    prefix block."""
    body = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    return f"Story {tag}: {body}"


class Result:
    def __init__(self):
        self.submitted = 0.0
        self.chunk_times = []
        self.completion_tokens = None
        self.prompt_tokens = None
        self.error = None


def stream_completion(url, model, prompt, max_tokens, result):
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    body = json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    result.submitted = time.perf_counter()
    try:
        connection.request(
            "POST", "/v1/completions", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        if response.status != 200:
            result.error = f"status {response.status}: {response.read()[:300]!r}"
            return
        while True:
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            payload = line[len(b"data: ") :]
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            choices = event.get("choices") or []
            if any(choice.get("text") for choice in choices):
                result.chunk_times.append(time.perf_counter())
            usage = event.get("usage")
            if usage:
                result.completion_tokens = usage.get("completion_tokens")
                result.prompt_tokens = usage.get("prompt_tokens")
    except Exception as error:  # noqa: BLE001 - reported, not raised, per request
        result.error = repr(error)
    finally:
        connection.close()


def run_concurrent(args, prompts, max_tokens):
    results = [Result() for _ in prompts]
    threads = [
        threading.Thread(
            target=stream_completion,
            args=(args.url, args.model, prompt, max_tokens, result),
        )
        for prompt, result in zip(prompts, results)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [result.error for result in results if result.error]
    if errors:
        sys.exit(f"{len(errors)} request(s) failed, first: {errors[0]}")
    return results


def token_check(results):
    return {
        "chunks_per_request": sorted({len(r.chunk_times) for r in results}),
        "usage_completion_tokens": sorted({r.completion_tokens for r in results}),
        "usage_prompt_tokens": sorted({r.prompt_tokens for r in results}),
    }


def distinct_prompts(counter, count, words):
    prompts = []
    for _ in range(count):
        counter[0] += 1
        prompts.append(prompt_text(counter[0], words))
    return prompts


def bench_single(args, counter):
    rates = []
    checks = []
    for prompt in distinct_prompts(counter, args.runs, args.short_words):
        (result,) = run_concurrent(args, [prompt], args.max_tokens)
        span = result.chunk_times[-1] - result.chunk_times[0]
        rates.append((len(result.chunk_times) - 1) / span)
        checks.append(result)
    return {
        "bench": "single",
        "max_tokens": args.max_tokens,
        "decode_tok_s_runs": [round(rate, 2) for rate in rates],
        "decode_tok_s_median": round(statistics.median(rates), 2),
        **token_check(checks),
    }


def bench_parallel(args, counter):
    prompts = distinct_prompts(counter, args.streams, args.short_words)
    started = time.perf_counter()
    results = run_concurrent(args, prompts, args.max_tokens)
    finished = time.perf_counter()
    window_start = max(r.chunk_times[0] for r in results)
    window_end = min(r.chunk_times[-1] for r in results)
    in_window = sum(
        sum(1 for at in r.chunk_times if window_start < at <= window_end)
        for r in results
    )
    window = window_end - window_start
    total_tokens = sum(len(r.chunk_times) for r in results)
    return {
        "bench": "parallel",
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "window_s": round(window, 2),
        "aggregate_decode_tok_s": round(in_window / window, 2) if window > 0 else None,
        "end_to_end_tok_s": round(total_tokens / (finished - started), 2),
        "wall_s": round(finished - started, 2),
        **token_check(results),
    }


def bench_ttft(args, counter):
    ttfts = []
    checks = []
    for prompt in distinct_prompts(counter, args.runs, args.ttft_words):
        (result,) = run_concurrent(args, [prompt], args.ttft_max_tokens)
        ttfts.append(result.chunk_times[0] - result.submitted)
        checks.append(result)
    return {
        "bench": "ttft",
        "ttft_s_runs": [round(t, 3) for t in ttfts],
        "ttft_s_median": round(statistics.median(ttfts), 3),
        **token_check(checks),
    }


def bench_ttft_load(args, counter):
    prompts = distinct_prompts(counter, args.streams, args.load_words)
    results = run_concurrent(args, prompts, args.ttft_max_tokens)
    ttfts = sorted(r.chunk_times[0] - r.submitted for r in results)

    def percentile(p):
        return ttfts[min(len(ttfts) - 1, round((len(ttfts) - 1) * p))]

    return {
        "bench": "ttft-load",
        "streams": args.streams,
        "ttft_s_p50": round(percentile(0.5), 2),
        "ttft_s_p90": round(percentile(0.9), 2),
        "ttft_s_max": round(ttfts[-1], 2),
        **token_check(results),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="server root, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--bench",
        default="single,parallel,ttft,ttft-load",
        help="comma-separated: single, parallel, ttft, ttft-load",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--short-words", type=int, default=24)
    parser.add_argument("--ttft-words", type=int, default=995, help="1000 tokens with SmolLM2")
    parser.add_argument("--load-words", type=int, default=507, help="512 tokens with SmolLM2")
    parser.add_argument("--ttft-max-tokens", type=int, default=8)
    args = parser.parse_args()
    benches = {
        "single": bench_single,
        "parallel": bench_parallel,
        "ttft": bench_ttft,
        "ttft-load": bench_ttft_load,
    }
    counter = [0]
    # One untimed request first: lazy allocations, thread pools, first-touch of the weights.
    run_concurrent(args, [prompt_text("warmup", args.short_words)], 8)
    for name in args.bench.split(","):
        outcome = benches[name](args, counter)
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
