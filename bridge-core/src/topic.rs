//! MQTT topic filters: validation, matching, and where the sensor id sits in a topic.
//!
//! The bridge subscribes with one filter (default `sensors/+/temperature`). By default the sensor
//! id is what the `+` wildcards matched, so `sensors/boiler-3/temperature` is sensor `boiler-3`.
//! A filter with several `+` levels (`site/+/line/+/temperature`) joins them with `/`
//! (`north/7`) so that ids stay unique across the levels an operator chose to wildcard.

use std::borrow::Cow;

use thiserror::Error;

/// Why a topic filter cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    #[error("the topic filter is empty")]
    Empty,
    #[error("level {level} of topic filter {filter:?} mixes a wildcard with other characters; `+` and `#` must fill a whole level")]
    PartialWildcard { filter: String, level: usize },
    #[error("`#` may only be the last level of topic filter {0:?}")]
    HashNotLast(String),
    #[error("topic filter {0:?} contains a NUL character")]
    Nul(String),
}

/// One level of a parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(Box<str>),
    /// `+`: exactly one level, any content.
    One,
    /// `#`: zero or more trailing levels.
    Rest,
}

/// A validated MQTT topic filter, matched against the topics of incoming publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Parses and validates a filter by the MQTT rules (wildcards fill whole levels, `#` last).
    pub fn parse(filter: &str) -> Result<Self, FilterError> {
        if filter.is_empty() {
            return Err(FilterError::Empty);
        }
        if filter.contains('\0') {
            return Err(FilterError::Nul(filter.to_owned()));
        }
        let parts: Vec<&str> = filter.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::One,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err(FilterError::HashNotLast(filter.to_owned())),
                p if p.contains('+') || p.contains('#') => {
                    return Err(FilterError::PartialWildcard {
                        filter: filter.to_owned(),
                        level: i,
                    })
                }
                p => Level::Exact(p.into()),
            };
            levels.push(level);
        }
        Ok(Self {
            text: filter.to_owned(),
            levels,
        })
    }

    /// The filter as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of `+` levels; the default sensor id is built from them.
    pub fn single_wildcards(&self) -> usize {
        self.levels.iter().filter(|l| **l == Level::One).count()
    }

    /// Whether the filter ends in `#`.
    pub fn has_rest(&self) -> bool {
        self.levels.last() == Some(&Level::Rest)
    }

    /// The topic a sensor id made of this filter's `+` levels came from: each `+` replaced by
    /// the id's next `/`-separated part. `None` when the filter has a `#` (the levels it
    /// matched are not in the id) or no `+`, or the id has another number of parts. For every
    /// topic `t` with `wildcard_id(t) == Some(id)`, `topic_of(id) == Some(t)`: this is why the
    /// raw stream can leave the topic header out (see [`crate::encode::TopicHeader::Auto`]).
    pub fn topic_of(&self, sensor: &str) -> Option<String> {
        if self.has_rest() || self.single_wildcards() == 0 {
            return None;
        }
        let mut parts = sensor.split('/');
        let mut topic = String::with_capacity(self.text.len() + sensor.len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                topic.push('/');
            }
            match level {
                Level::Exact(text) => topic.push_str(text),
                Level::One => topic.push_str(parts.next()?),
                Level::Rest => unreachable!("checked above"),
            }
        }
        parts.next().is_none().then_some(topic)
    }

    /// Whether `topic` matches this filter (MQTT rules, except that `$`-topics are not special:
    /// the broker already keeps them from wildcard subscriptions).
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Rest => return true,
                Level::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match parts.next() {
                    Some(got) if got == &**want => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }

    /// The sensor id a topic carries by default: the levels matched by `+`, joined with `/`.
    /// `None` when the topic does not match, the filter has no `+`, or a matched level is empty.
    /// Matches and extracts in one pass over the topic: this runs for every publish.
    pub fn wildcard_id<'t>(&self, topic: &'t str) -> Option<Cow<'t, str>> {
        let mut parts = topic.split('/');
        let mut joined: Option<Cow<'t, str>> = None;
        let mut empty_level = false;
        for level in &self.levels {
            match level {
                Level::Rest => {
                    parts.by_ref().for_each(drop);
                    break;
                }
                Level::Exact(want) => {
                    if parts.next()? != &**want {
                        return None;
                    }
                }
                Level::One => {
                    let part = parts.next()?;
                    empty_level |= part.is_empty();
                    joined = Some(match joined {
                        None => Cow::Borrowed(part),
                        Some(prev) => Cow::Owned(format!("{prev}/{part}")),
                    });
                }
            }
        }
        if parts.next().is_some() || empty_level {
            return None;
        }
        joined
    }
}

impl TopicFilter {
    /// The levels `topic` matched with `+` and `#`, joined with `/` (for `zigbee2mqtt/#`,
    /// `zigbee2mqtt/living room/thermo` gives `living room/thermo`). `None` when the topic does
    /// not match, nothing matched a wildcard, or a matched level is empty.
    pub fn wildcard_levels<'t>(&self, topic: &'t str) -> Option<Cow<'t, str>> {
        if !self.matches(topic) {
            return None;
        }
        let parts: Vec<&'t str> = topic.split('/').collect();
        let mut picked: Vec<&'t str> = Vec::new();
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                Level::Exact(_) => {}
                Level::One => picked.push(parts[i]),
                Level::Rest => picked.extend(&parts[i.min(parts.len())..]),
            }
        }
        if picked.is_empty() || picked.iter().any(|p| p.is_empty()) {
            return None;
        }
        if picked.len() == 1 {
            return Some(Cow::Borrowed(picked[0]));
        }
        // Contiguous levels are a slice of the topic: borrow it.
        let first = picked[0].as_ptr() as usize - topic.as_ptr() as usize;
        let last = picked[picked.len() - 1];
        let end = last.as_ptr() as usize - topic.as_ptr() as usize + last.len();
        let joined = picked.join("/");
        if topic[first..end] == joined {
            Some(Cow::Borrowed(&topic[first..end]))
        } else {
            Some(Cow::Owned(joined))
        }
    }

    /// The narrowest filter that matches every topic either filter matches: levels that agree
    /// are kept, levels that differ become `+`, and from where the two differ in length (or
    /// either has `#`) on, `#`.
    pub fn join(&self, other: &TopicFilter) -> TopicFilter {
        let (a, b) = (&self.levels, &other.levels);
        let mut levels = Vec::new();
        for i in 0..a.len().max(b.len()) {
            let level = match (a.get(i), b.get(i)) {
                (Some(x), Some(y)) if x == y && *x != Level::Rest => x.clone(),
                (Some(Level::Rest), _) | (_, Some(Level::Rest)) | (None, _) | (_, None) => {
                    levels.push(Level::Rest);
                    break;
                }
                _ => Level::One,
            };
            levels.push(level);
        }
        let text = levels
            .iter()
            .map(|l| match l {
                Level::Exact(t) => t.as_ref(),
                Level::One => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/");
        TopicFilter { text, levels }
    }

    /// Subscriptions that receive every topic of `filters`, each message once: overlapping
    /// filters are replaced by their [`TopicFilter::join`] until none overlap. A broker may
    /// send a copy of a message per matching subscription (Mosquitto does with MQTT 5), so
    /// overlapping subscriptions would deliver, and count, a reading twice.
    pub fn disjoint_cover(filters: &[TopicFilter]) -> Vec<TopicFilter> {
        let mut set: Vec<TopicFilter> = Vec::new();
        for f in filters {
            let mut f = f.clone();
            // Absorb every member that overlaps the growing filter; a join can overlap members
            // that the parts did not, hence the loop.
            while let Some(i) = set.iter().position(|g| g.overlap(&f).is_some()) {
                f = set.remove(i).join(&f);
            }
            set.push(f);
        }
        set
    }

    /// A topic that both filters match, if there is one: two routes whose filters overlap
    /// would both be sent such a topic's messages.
    pub fn overlap(&self, other: &TopicFilter) -> Option<String> {
        let mut topic: Vec<&str> = Vec::new();
        let (a, b) = (&self.levels, &other.levels);
        let mut i = 0;
        loop {
            match (a.get(i), b.get(i)) {
                (None, None) => break,
                (Some(Level::Rest), _) | (_, Some(Level::Rest)) => {
                    // `#` also matches the parent level; the other filter decides the rest.
                    let rest = if a.get(i) == Some(&Level::Rest) {
                        &b[i..]
                    } else {
                        &a[i..]
                    };
                    for l in rest {
                        match l {
                            Level::Exact(t) => topic.push(t),
                            Level::One => topic.push("x"),
                            Level::Rest => {}
                        }
                    }
                    break;
                }
                (None, Some(_)) | (Some(_), None) => return None,
                (Some(Level::Exact(x)), Some(Level::Exact(y))) if x != y => return None,
                (Some(Level::Exact(x)), _) | (_, Some(Level::Exact(x))) => topic.push(x),
                (Some(Level::One), Some(Level::One)) => topic.push("x"),
            }
            i += 1;
        }
        if topic.is_empty() {
            topic.push("x");
        }
        Some(topic.join("/"))
    }
}

/// The topic level at `index` (0-based), if present and non-empty.
pub fn level(topic: &str, index: usize) -> Option<&str> {
    topic.split('/').nth(index).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_levels_include_the_rest() {
        let f = TopicFilter::parse("zigbee2mqtt/#").unwrap();
        assert_eq!(
            f.wildcard_levels("zigbee2mqtt/living room/thermo")
                .as_deref(),
            Some("living room/thermo")
        );
        assert_eq!(f.wildcard_levels("zigbee2mqtt/a").as_deref(), Some("a"));
        assert_eq!(f.wildcard_levels("zigbee2mqtt"), None);
        assert_eq!(f.wildcard_levels("zigbee2mqtt/a//b"), None);
        assert_eq!(f.wildcard_levels("other/a"), None);
        let f = TopicFilter::parse("tele/+/SENSOR").unwrap();
        assert_eq!(
            f.wildcard_levels("tele/kitchen/SENSOR").as_deref(),
            Some("kitchen")
        );
        let f = TopicFilter::parse("site/+/line/+/#").unwrap();
        assert_eq!(
            f.wildcard_levels("site/n/line/7/a/b").as_deref(),
            Some("n/7/a/b")
        );
        assert!(matches!(
            f.wildcard_levels("site/n/line/7/a"),
            Some(Cow::Owned(_))
        ));
        let f = TopicFilter::parse("a/b").unwrap();
        assert_eq!(f.wildcard_levels("a/b"), None);
    }

    #[test]
    fn overlapping_filters_give_a_topic_both_match() {
        let check = |a: &str, b: &str| {
            let (fa, fb) = (
                TopicFilter::parse(a).unwrap(),
                TopicFilter::parse(b).unwrap(),
            );
            let got = fa.overlap(&fb);
            assert_eq!(got, fb.overlap(&fa), "{a} {b}: symmetric");
            if let Some(t) = &got {
                assert!(fa.matches(t) && fb.matches(t), "{a} {b}: {t}");
            }
            got.is_some()
        };
        assert!(check("a/+", "+/b"));
        assert!(check("zigbee2mqtt/#", "zigbee2mqtt/bridge/state"));
        assert!(check("a/#", "a"));
        assert!(check("#", "x/y/z"));
        assert!(check("+/sensor/+/state", "kitchen/#"));
        assert!(check("a/b", "a/b"));
        assert!(!check("a/+", "b/+"));
        assert!(!check("tele/+/SENSOR", "tele/+/STATE"));
        assert!(!check("a/+", "a/+/c"));
        assert!(!check("a/b/#", "a/c/#"));
        assert!(!check("zigbee2mqtt/#", "tele/+/SENSOR"));
    }

    #[test]
    fn joins_cover_both_filters() {
        let join = |a: &str, b: &str| {
            let j = TopicFilter::parse(a)
                .unwrap()
                .join(&TopicFilter::parse(b).unwrap());
            assert!(TopicFilter::parse(j.as_str()).is_ok());
            j.as_str().to_owned()
        };
        assert_eq!(join("zigbee2mqtt/#", "+/events/rpc"), "+/#");
        assert_eq!(join("a/b/c", "a/x/c"), "a/+/c");
        assert_eq!(join("a/b", "a/b/c"), "a/b/#");
        assert_eq!(join("a/#", "a/b/+"), "a/#");
        assert_eq!(join("a/+", "a/+"), "a/+");
        assert_eq!(join("#", "a"), "#");
    }

    #[test]
    fn a_disjoint_cover_receives_every_topic_once() {
        let parse = |fs: &[&str]| -> Vec<TopicFilter> {
            fs.iter().map(|f| TopicFilter::parse(f).unwrap()).collect()
        };
        let cases: [(&[&str], &[&str]); 4] = [
            (
                &["tele/+/SENSOR", "zigbee2mqtt/#"],
                &["tele/+/SENSOR", "zigbee2mqtt/#"],
            ),
            (
                &["zigbee2mqtt/#", "+/events/rpc", "tele/+/SENSOR"],
                &["+/#"],
            ),
            (&["a/+/c", "a/b/+", "x/y"], &["a/+/+", "x/y"]),
            (&["a/b", "a/#", "b/c"], &["a/#", "b/c"]),
        ];
        let topics = [
            "tele/k/SENSOR",
            "zigbee2mqtt/x/y",
            "d/events/rpc",
            "a/b/c",
            "a/q/c",
            "a/b/z",
            "x/y",
            "a/b",
            "a",
            "b/c",
            "zigbee2mqtt",
        ];
        for (input, want) in cases {
            let filters = parse(input);
            let cover = TopicFilter::disjoint_cover(&filters);
            let names: Vec<&str> = cover.iter().map(|f| f.as_str()).collect();
            assert_eq!(names, want, "{input:?}");
            for (i, a) in cover.iter().enumerate() {
                for b in &cover[i + 1..] {
                    assert_eq!(a.overlap(b), None, "{input:?}: {a:?} {b:?}");
                }
            }
            for t in topics {
                if filters.iter().any(|f| f.matches(t)) {
                    assert_eq!(cover.iter().filter(|f| f.matches(t)).count(), 1, "{t}");
                }
            }
        }
    }

    #[test]
    fn parses_and_rejects_filters() {
        assert!(TopicFilter::parse("sensors/+/temperature").is_ok());
        assert!(TopicFilter::parse("sensors/#").is_ok());
        assert!(TopicFilter::parse("#").is_ok());
        assert_eq!(TopicFilter::parse(""), Err(FilterError::Empty));
        assert!(matches!(
            TopicFilter::parse("sensors/a+/t"),
            Err(FilterError::PartialWildcard { level: 1, .. })
        ));
        assert!(matches!(
            TopicFilter::parse("sensors/#/t"),
            Err(FilterError::HashNotLast(_))
        ));
        assert!(matches!(
            TopicFilter::parse("a/\0"),
            Err(FilterError::Nul(_))
        ));
    }

    #[test]
    fn matches_by_mqtt_rules() {
        let f = TopicFilter::parse("sensors/+/temperature").unwrap();
        assert!(f.matches("sensors/s1/temperature"));
        assert!(f.matches("sensors//temperature"));
        assert!(!f.matches("sensors/s1/humidity"));
        assert!(!f.matches("sensors/s1/temperature/x"));
        assert!(!f.matches("sensors/s1"));
        let h = TopicFilter::parse("sensors/#").unwrap();
        assert!(h.matches("sensors"));
        assert!(h.matches("sensors/a/b/c"));
        assert!(!h.matches("other/a"));
    }

    #[test]
    fn wildcard_id_joins_plus_levels() {
        let f = TopicFilter::parse("sensors/+/temperature").unwrap();
        assert_eq!(f.wildcard_id("sensors/s1/temperature").unwrap(), "s1");
        assert_eq!(f.wildcard_id("sensors//temperature"), None);
        assert_eq!(f.wildcard_id("other/s1/temperature"), None);
        let two = TopicFilter::parse("site/+/line/+/t").unwrap();
        assert_eq!(two.single_wildcards(), 2);
        assert_eq!(two.wildcard_id("site/north/line/7/t").unwrap(), "north/7");
        let none = TopicFilter::parse("sensors/#").unwrap();
        assert_eq!(none.wildcard_id("sensors/a"), None);
    }

    #[test]
    fn topic_of_gives_back_the_topic_of_a_wildcard_id() {
        for (filter, topic) in [
            ("sensors/+/temperature", "sensors/s1/temperature"),
            ("site/+/line/+/t", "site/north/line/7/t"),
            ("+", "s1"),
            ("+/+", "a/b"),
            ("/+/", "/x/"),
        ] {
            let f = TopicFilter::parse(filter).unwrap();
            let id = f.wildcard_id(topic).unwrap();
            assert_eq!(f.topic_of(&id).as_deref(), Some(topic), "{filter}");
        }
        let f = TopicFilter::parse("site/+/line/+/t").unwrap();
        assert_eq!(f.topic_of("north"), None);
        assert_eq!(f.topic_of("a/b/c"), None);
        assert_eq!(
            TopicFilter::parse("sensors/+/#").unwrap().topic_of("s1"),
            None
        );
        assert_eq!(
            TopicFilter::parse("sensors/t").unwrap().topic_of("s1"),
            None
        );
    }

    #[test]
    fn level_by_index() {
        assert_eq!(level("a/b/c", 1), Some("b"));
        assert_eq!(level("a//c", 1), None);
        assert_eq!(level("a/b", 5), None);
    }
}
