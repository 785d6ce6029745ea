#!/usr/bin/env python3
"""Reads one of the bridge's topics and drops the copies of records it has already seen.

The bridge delivers at least once: after a crash, an uplink outage or an MQTT redelivery a
record may reach Kafka twice. Every copy of a record is the same bytes (key, value, timestamp),
so each has the same id, which a consumer computes from the record itself (the README's record
contract, "Record ids"):

    XXH3-64, seed 0, over: tag (1 byte) || len(key) (u64, little-endian) || key
                           || timestamp in ms (i64, little-endian) || value

with tag b"r" for raw records, b"a" for aggregates, b"d" for dead letters, and b"l" for a
record carrying a `late.window_start` header. With `kafka.record_id = "header"` the bridge also
sends the id as the `edge.id` header (16 hex digits); --check then verifies every computed id
against it.

    pip install confluent-kafka xxhash
    python3 examples/dedup.py --brokers 127.0.0.1:9092 --topic raw-temperature --stream raw

Prints each first copy as `key<TAB>timestamp<TAB>value`; on exit, one line of counts on
stderr. Copies of a record arrive within minutes of each other (a spool replay or a restart),
so ids are remembered per key for --remember records (the newest), not forever.
"""

import argparse
import collections
import struct
import sys

import xxhash
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, KafkaError, KafkaException

TAGS = {"raw": b"r", "aggregate": b"a", "dead-letter": b"d"}


def record_id(tag, key, timestamp_ms, value):
    """The bridge's record id (see the module documentation)."""
    key = key or b""
    data = tag + struct.pack("<Q", len(key)) + key + struct.pack("<q", timestamp_ms) + (value or b"")
    return xxhash.xxh3_64_intdigest(data)


class Seen:
    """Recent ids per key: a bounded memory of what was already passed on."""

    def __init__(self, per_key):
        self.per_key = per_key
        self.ids = collections.defaultdict(collections.OrderedDict)

    def first_time(self, key, rid):
        ids = self.ids[key]
        if rid in ids:
            return False
        ids[rid] = None
        if len(ids) > self.per_key:
            ids.popitem(last=False)
        return True


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--stream", choices=sorted(TAGS), required=True,
                   help="which of the bridge's streams the topic holds (raw for the late topic: "
                        "late records are told by their late.window_start header)")
    p.add_argument("--remember", type=int, default=10_000,
                   help="ids remembered per key (default 10,000)")
    p.add_argument("--check", action="store_true",
                   help="fail if a record's edge.id header differs from its computed id")
    p.add_argument("--exit-at-end", action="store_true",
                   help="stop at the end of the topic's partitions (default: keep reading)")
    p.add_argument("--quiet", action="store_true", help="print only the counts")
    args = p.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "edge-bridge-dedup-example",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": args.exit_at_end,
    })
    assigned, at_end = set(), set()

    def on_assign(consumer, partitions):
        assigned.update(p.partition for p in partitions)

    consumer.subscribe([args.topic], on_assign=on_assign)
    seen = Seen(args.remember)
    total = unique = checked = 0
    try:
        while True:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    if assigned and at_end >= assigned:
                        break
                    continue
                raise KafkaException(msg.error())
            at_end.discard(msg.partition())
            headers = dict(msg.headers() or [])
            tag = b"l" if "late.window_start" in headers else TAGS[args.stream]
            kind, timestamp_ms = msg.timestamp()
            if kind != TIMESTAMP_CREATE_TIME:
                # The id covers the bridge's timestamp (event time); a topic that stamps
                # records with the broker's append time has replaced it.
                sys.exit(f"{args.topic}: records carry the broker's append time, not the bridge's "
                         "timestamp (message.timestamp.type=LogAppendTime): their ids cannot be computed")
            rid = record_id(tag, msg.key(), timestamp_ms, msg.value())
            total += 1
            if args.check and "edge.id" in headers:
                sent = headers["edge.id"].decode()
                if sent != f"{rid:016x}":
                    sys.exit(f"record at offset {msg.offset()}: edge.id {sent} but computed {rid:016x}")
                checked += 1
            if seen.first_time(msg.key(), rid):
                unique += 1
                if not args.quiet:
                    print(f"{(msg.key() or b'').decode(errors='replace')}\t{timestamp_ms}\t"
                          f"{(msg.value() or b'').decode(errors='replace')}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(f"records={total} unique={unique} duplicates={total - unique} ids_checked={checked}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
