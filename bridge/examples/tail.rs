//! Prints the records of a Kafka topic as they arrive: `cargo run --example tail -- BROKERS TOPIC`.
//! Used by `scripts/demo.sh` to show the aggregates; handy on a gateway to see what goes upstream.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic)) = (args.next(), args.next()) else {
        eprintln!("usage: tail BROKERS TOPIC");
        std::process::exit(2);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "edge-bridge-tail")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the consumer");
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("reading topic metadata");
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .expect("assigning partitions");
        }
    }
    consumer.assign(&tpl).expect("assigning partitions");
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => println!(
                "{topic} key={} {}",
                String::from_utf8_lossy(m.key().unwrap_or_default()),
                String::from_utf8_lossy(m.payload().unwrap_or_default())
            ),
            Some(Err(e)) => eprintln!("tail: {e}"),
            None => {}
        }
    }
}
