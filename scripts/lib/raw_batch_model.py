#!/usr/bin/env python3
"""What the raw stream costs on the wire, under the record contract: a model.

Builds the Kafka record batches (format v2) a producer sends for the tutorial's dataset
(1,000 sensors, 4 readings/s, payload {"ts": "<iso>", "value": v}, key = sensor id,
timestamp = event time, one record per reading, no header) and compresses each batch's
records with zstd as librdkafka does with compression.type = zstd (a streaming context begun
without the input's size: librdkafka as rdkafka-sys builds it calls ZSTD_initCStream). Prints
bytes per reading: the batch's 61-byte header plus the compressed records. The produce
request's own framing (a few dozen bytes per request) is left out; the dataset is edge-sim's
in shape, not byte for byte (its own random walk). For comparison, the last column is the
same keys and payloads compressed alone, concatenated, without the record format.

The batch holds what the linger collects: `--linger` seconds of readings. Each batch is
counted in arrival order and sorted by key (stable, so each sensor's order is kept: what a
producer that grouped records by sensor before handing them on would send).

Needs the `zstandard` package (PyPI). Example:
    python3 scripts/lib/raw_batch_model.py --linger 0.5 2 5 --level 6 12 19
A linger over 2.5 s at 4,000 readings/s needs batch.num.messages (librdkafka's default 10,000)
raised as well: --max-records.
"""
import argparse
import datetime
import random

import zstandard

BATCH_HEADER = 61  # baseOffset .. recordCount, RecordBatch v2


def varint(n: int) -> bytes:
    """Kafka's signed varint: zigzag, then 7 bits per byte."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record(offset_delta: int, ts_delta: int, key: bytes, value: bytes) -> bytes:
    body = (
        b"\x00"  # attributes
        + varint(ts_delta)
        + varint(offset_delta)
        + varint(len(key))
        + key
        + varint(len(value))
        + value
        + varint(0)  # no header
    )
    return varint(len(body)) + body


def payload(ts_ms: int, value: float) -> bytes:
    """The simulator's tutorial payload (Python's isoformat: microseconds only when not 0)."""
    ts = datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.timezone.utc)
    fmt = "%Y-%m-%dT%H:%M:%S" if ts_ms % 1000 == 0 else "%Y-%m-%dT%H:%M:%S.%f"
    iso = ts.strftime(fmt)
    v = str(int(value)) if value == int(value) else repr(value)
    return f'{{"ts": "{iso}", "value": {v}}}'.encode()


def dataset(sensors: int, rate: float, seconds: int, seed: int):
    """Round robin over the sensors, each spread over the period, values a random walk in
    steps under 0.5 rounded to 0.01 (edge-sim's defaults)."""
    rng = random.Random(seed)
    last = [rng.uniform(18.0, 30.0) for _ in range(sensors)]
    start, period = 1_718_000_000_000, 1000.0 / rate
    out = []
    for n in range(int(sensors * rate * seconds)):
        k, rnd = n % sensors, n // sensors
        ts = start + int(rnd * period) + int(k * period / sensors)
        v = round(min(35.0, max(15.0, last[k] + rng.uniform(-0.5, 0.5))) * 100) / 100
        last[k] = v
        out.append((ts, f"Sensor{k + 1}".encode(), payload(ts, v)))
    return out


def compressed_size(cctx, data: bytes) -> int:
    """zstd's frame for `data`, its size not told in advance (as ZSTD_initCStream)."""
    obj = cctx.compressobj()
    return len(obj.compress(data) + obj.flush())


def record_batch(batch) -> bytes:
    """The batch's records as a producer writes them, before compression."""
    first = batch[0][0]
    return b"".join(record(i, ts - first, key, value) for i, (ts, key, value) in enumerate(batch))


def bare(batch) -> bytes:
    """The same keys and payloads without the record format."""
    return b"".join(key + value for _, key, value in batch)


def by_key(batch) -> bytes:
    return record_batch(sorted(batch, key=lambda m: m[1]))


def bytes_per_reading(msgs, per_batch: int, level: int, encode, header: int) -> float:
    """Compressed bytes per reading when `encode` writes each batch of `per_batch` readings,
    plus `header` bytes per batch."""
    cctx = zstandard.ZstdCompressor(level=level, write_content_size=False)
    total = 0
    for b in range(0, len(msgs), per_batch):
        total += header + compressed_size(cctx, encode(msgs[b : b + per_batch]))
    return total / len(msgs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=4.0, help="readings/s per sensor")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--linger", type=float, nargs="+", default=[0.5, 2.0, 2.5])
    ap.add_argument("--level", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--max-records", type=int, default=10_000, help="batch.num.messages")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    msgs = dataset(a.sensors, a.rate, a.seconds, a.seed)
    mean = sum(len(k) + len(v) for _, k, v in msgs) / len(msgs)
    print(f"{len(msgs)} readings, key + payload {mean:.1f} bytes each")
    print("linger s | records/batch | zstd level | arrival order | sorted by key | keys+payloads alone")
    for linger in a.linger:
        per_batch = max(1, min(a.max_records, int(a.sensors * a.rate * linger)))
        for level in a.level:
            arrival, sorted_, alone = (
                bytes_per_reading(msgs, per_batch, level, encode, header)
                for encode, header in ((record_batch, BATCH_HEADER), (by_key, BATCH_HEADER), (bare, 0))
            )
            print(
                f"{linger:8} | {per_batch:13} | {level:10} | {arrival:13.2f} | {sorted_:13.2f}"
                f" | {alone:19.2f}"
            )


if __name__ == "__main__":
    main()
