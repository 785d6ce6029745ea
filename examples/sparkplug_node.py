#!/usr/bin/env python3
"""A Sparkplug B edge node with devices, for trying the bridge's `sparkplug-b` routes.

Payloads are made by pysparkplug (an independent Sparkplug B implementation from PyPI), sent
with paho-mqtt at QoS 1. The node publishes an NBIRTH and a DBIRTH per device that define
each metric's name, alias and datatype, then DDATA that give metrics by alias alone, without
datatypes, as Sparkplug allows. Halfway, one device dies (DDEATH), sends a DDATA anyway (its
aliases are no longer defined) and is born again with its aliases swapped; at the end the
node dies (NDEATH) and a device sends one more DDATA. Every message published is printed as a
JSON line: {"topic", "sensor", "expect", "metrics": [[name, value, event time ms], ...]},
where "expect" is what a bridge must make of it ("measured", "control", "unknown_alias") and
"metrics" are the numeric measurements it carries.

With --births-missed the node behaves as if the bridge had missed its BIRTHs (the bridge
restarted after them): it first sends a DDATA by alias, then waits up to 20 s for the bridge's
rebirth request (an NCMD with Node Control/Rebirth = true, which a route with
ask_rebirth = true sends), answers it with its NBIRTH and DBIRTHs as Sparkplug asks, and goes
on. The request it received is printed with "expect": "rebirth_request".

    pip install pysparkplug==0.6.1
    python3 examples/sparkplug_node.py --port 1883 --rounds 30
"""

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pysparkplug import (
    DataType,
    DBirth,
    DData,
    DDeath,
    Metric,
    MessageType,
    NBirth,
    NCmd,
    NData,
    NDeath,
    Topic,
)

DEVICE_METRICS = [
    # name, datatype, alias
    ("Temperature", DataType.DOUBLE, 1),
    ("Pressure", DataType.FLOAT, 2),
    ("Level", DataType.INT16, 3),
    ("Count", DataType.UINT32, 4),
    ("Running", DataType.BOOLEAN, 5),
    ("Label", DataType.STRING, 6),
]
NUMERIC = {DataType.DOUBLE, DataType.FLOAT, DataType.INT16, DataType.UINT32, DataType.INT64}


def value(name, device, r):
    """The value of a metric in round r: exact in binary so sums compare exactly."""
    return {
        "Temperature": 20.0 + (r % 7) * 0.5 + device,
        "Pressure": 1.25 * (r % 4),
        "Level": -3 * (r % 5),
        "Count": 10 * r,
        "Running": r % 2 == 0,
        "Label": f"round {r}",
    }[name]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--group", default="plant")
    p.add_argument("--node", default="edge1")
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--start-ms", type=int, default=None, help="event time of round 0 (default: now)")
    p.add_argument("--client-id", default="sparkplug-node")
    p.add_argument("--births-missed", action="store_true",
                   help="send a DDATA before any BIRTH and wait for the bridge's rebirth request")
    a = p.parse_args()
    start = a.start_ms if a.start_ms is not None else int(time.time() * 1000)

    client = mqtt.Client(client_id=a.client_id)
    client.max_inflight_messages_set(100)
    ncmd = f"spBv1.0/{a.group}/NCMD/{a.node}"
    subscribed, rebirth = threading.Event(), threading.Event()

    def on_message(_client, _userdata, msg):
        if msg.topic != ncmd:
            return
        cmd = NCmd.decode(msg.payload)
        if any(m.name == "Node Control/Rebirth" and m.value is True for m in cmd.metrics):
            rebirth.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(a.host, a.port)
    client.loop_start()
    if a.births_missed:
        client.subscribe(ncmd, qos=0)
        if not subscribed.wait(10):
            sys.exit(f"no SUBACK for {ncmd}")
    pending = []
    seq = iter(range(10**9))

    def publish(topic, payload, include_dtypes, expect, sensor, metrics):
        info = client.publish(str(topic), payload.encode(include_dtypes=include_dtypes), qos=1)
        pending.append(info)
        print(json.dumps({"topic": str(topic), "sensor": sensor, "expect": expect, "metrics": metrics}))

    def numeric(ms):
        return [[m.name, m.value, m.timestamp] for m in ms if m.datatype in NUMERIC and not m.name.startswith(("bdSeq", "Node Control/"))]

    node_sensor = f"{a.group}/{a.node}"
    aliases = {d: {name: alias for name, _, alias in DEVICE_METRICS} for d in range(a.devices)}
    datatypes = {name: dt for name, dt, _ in DEVICE_METRICS}

    def ddata(d, ts, r, expect="measured"):
        # By alias only, no datatypes: what the bridge must resolve from the DBIRTH.
        ms = tuple(
            Metric(timestamp=ts, name=None, datatype=datatypes[name], value=value(name, d, r), alias=aliases[d][name])
            for name, _, _ in DEVICE_METRICS
        )
        named = [[name, value(name, d, r), ts] for name, dt, _ in DEVICE_METRICS if dt in NUMERIC]
        publish(
            Topic(group_id=a.group, message_type=MessageType.DDATA, edge_node_id=a.node, device_id=f"dev{d}"),
            DData(timestamp=ts, seq=next(seq) % 256, metrics=ms),
            False, expect, f"{node_sensor}/dev{d}", named if expect == "measured" else [],
        )

    if a.births_missed:
        ddata(0, start, 0, expect="unknown_alias")
        if not rebirth.wait(20):
            sys.exit("no rebirth request (NCMD Node Control/Rebirth) within 20 s: is ask_rebirth on?")
        print(json.dumps({"topic": ncmd, "sensor": node_sensor, "expect": "rebirth_request", "metrics": []}))
    node_metrics = [
        Metric(timestamp=start, name="bdSeq", datatype=DataType.INT64, value=0),
        Metric(timestamp=start, name="Node Control/Rebirth", datatype=DataType.BOOLEAN, value=False),
        Metric(timestamp=start, name="Uptime", datatype=DataType.INT64, value=0, alias=100),
    ]
    publish(
        Topic(group_id=a.group, message_type=MessageType.NBIRTH, edge_node_id=a.node),
        NBirth(timestamp=start, seq=next(seq) % 256, metrics=tuple(node_metrics)),
        True, "measured", node_sensor, [["Uptime", 0, start]],
    )
    def dbirth(d, ts, r):
        ms = tuple(
            Metric(timestamp=ts, name=name, datatype=dt, value=value(name, d, r), alias=aliases[d][name])
            for name, dt, _ in DEVICE_METRICS
        )
        publish(
            Topic(group_id=a.group, message_type=MessageType.DBIRTH, edge_node_id=a.node, device_id=f"dev{d}"),
            DBirth(timestamp=ts, seq=next(seq) % 256, metrics=ms),
            True, "measured", f"{node_sensor}/dev{d}", numeric(ms),
        )

    for d in range(a.devices):
        dbirth(d, start, 0)
    for r in range(1, a.rounds + 1):
        ts = start + r * 1000
        for d in range(a.devices):
            ddata(d, ts, r)
        if r % 10 == 0:
            m = Metric(timestamp=ts, name=None, datatype=DataType.INT64, value=r, alias=100)
            publish(
                Topic(group_id=a.group, message_type=MessageType.NDATA, edge_node_id=a.node),
                NData(timestamp=ts, seq=next(seq) % 256, metrics=(m,)),
                False, "measured", node_sensor, [["Uptime", r, ts]],
            )
        if r == a.rounds // 2 and a.devices > 1:
            d = a.devices - 1
            publish(
                Topic(group_id=a.group, message_type=MessageType.DDEATH, edge_node_id=a.node, device_id=f"dev{d}"),
                DDeath(timestamp=ts, seq=next(seq) % 256),
                True, "control", f"{node_sensor}/dev{d}", [],
            )
            ddata(d, ts + 1, r, expect="unknown_alias")
            # Born again with two aliases swapped: data after it must follow the new table.
            aliases[d]["Temperature"], aliases[d]["Pressure"] = aliases[d]["Pressure"], aliases[d]["Temperature"]
            dbirth(d, ts + 2, r)
    end = start + (a.rounds + 1) * 1000
    publish(
        Topic(group_id=a.group, message_type=MessageType.NDEATH, edge_node_id=a.node),
        NDeath(timestamp=None, bd_seq_metric=Metric(timestamp=None, name="bdSeq", datatype=DataType.INT64, value=0)),
        True, "control", node_sensor, [],
    )
    ddata(0, end, a.rounds + 1, expect="unknown_alias")
    for info in pending:
        info.wait_for_publish(timeout=60)
        if not info.is_published():
            sys.exit(f"a publish was not acknowledged by {a.host}:{a.port}")
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
