//! `Entity::from_json_text`, the Magento client's first reading of every entity it fetches,
//! against `Entity::from_value`, the reading it replaced (and still falls back to, for the error
//! that names the field): on the workload generator's entities (every event kind, foreign
//! currencies, refunds, catalogues), whole and damaged, an entity it reads is the one
//! `from_value` reads, and it reads nothing `from_value` refuses. The same for whole event lines:
//! `Event::from_json_text` (`Event::parse`'s first reading) against `Event::from_value`.

use byte8_ledger_core::canonical::{Entity, Event, EventKind, EventParseError};
use byte8_ledger_simulators::workload::{Workload, WorkloadConfig};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The workload's entities (kind and JSON), a few hundred of each kind.
fn entities() -> Vec<(EventKind, Value)> {
    let config = WorkloadConfig { seed: 11, events: 1_500, ..WorkloadConfig::default() };
    Workload::generate(&config)
        .lines
        .iter()
        .map(|line| {
            let mut event: Value = serde_json::from_str(line).unwrap();
            let kind: EventKind = serde_json::from_value(event["event"].clone()).unwrap();
            (kind, event["entity"].take())
        })
        .collect()
}

/// Both readings of `text`: `None` from `from_json_text` is a fallback, never a disagreement;
/// an entity from it must be what `from_value` reads.
fn agree(kind: EventKind, text: &[u8]) -> Result<bool, String> {
    let fast = Entity::from_json_text(kind, text);
    let slow = serde_json::from_slice::<Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| Entity::from_value(kind, v).map_err(|e| e.to_string()));
    match (fast, slow) {
        (Some(fast), Ok(slow)) if fast == slow => Ok(true),
        (Some(fast), Ok(slow)) => Err(format!("read differently:\n{fast:?}\n{slow:?}")),
        (Some(fast), Err(e)) => Err(format!("read {fast:?} where from_value refuses: {e}")),
        (None, _) => Ok(false),
    }
}

#[test]
fn every_workload_entity_reads_the_same_straight_from_text() {
    let all = entities();
    let mut kinds = std::collections::BTreeSet::new();
    for (kind, entity) in &all {
        let text = serde_json::to_vec(entity).unwrap();
        assert_eq!(agree(*kind, &text), Ok(true), "{kind}: {entity}");
        kinds.insert(kind.to_string());
    }
    assert_eq!(kinds.len(), 5, "every event kind: {kinds:?}");
}

#[test]
fn a_key_given_twice_falls_back_to_the_reading_that_keeps_the_last() {
    let (kind, entity) = entities().into_iter().find(|(k, _)| *k == EventKind::InvoiceCreated).unwrap();
    let text = serde_json::to_string(&entity).unwrap();
    let twice = format!("{{\"magento_id\":999999,{}", &text[1..]);
    assert_eq!(Entity::from_json_text(kind, twice.as_bytes()), None, "serde refuses a duplicate field");
    let slow = Entity::from_value(kind, serde_json::from_str(&twice).unwrap()).unwrap();
    assert_eq!(slow.magento_id(), entity["magento_id"].as_u64().unwrap(), "a Value keeps the last");
}

/// JSON pointers to every value in `v` (objects and arrays too), and to every object key.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// A damage to an entity: a value replaced, a key removed, or an unknown key added.
#[derive(Debug, Clone)]
enum Damage {
    Replace(usize, Value),
    Remove(usize),
    Add(usize, Value),
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 .:+-]{0,12}".prop_map(Value::from),
        Just(json!("2026-02-30T10:00:00Z")),
        Just(json!("12.345")),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), replacement()).prop_map(|(i, v)| Damage::Replace(i, v)),
        any::<usize>().prop_map(Damage::Remove),
        (any::<usize>(), replacement()).prop_map(|(i, v)| Damage::Add(i, v)),
    ]
}

fn apply(entity: &mut Value, damage: &Damage) {
    let mut all = Vec::new();
    pointers(entity, String::new(), &mut all);
    let at = |i: usize| all[i % all.len()].clone();
    match damage {
        Damage::Replace(i, v) => *entity.pointer_mut(&at(*i)).unwrap() = v.clone(),
        Damage::Remove(i) => {
            let p = at(*i);
            let (parent, key) = p.rsplit_once('/').unwrap();
            match entity.pointer_mut(parent).unwrap() {
                Value::Object(map) => {
                    map.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    items.remove(key.parse::<usize>().unwrap());
                }
                _ => unreachable!("a pointer's parent holds it"),
            }
        }
        Damage::Add(i, v) => {
            let p = at(*i);
            let (parent, _) = p.rsplit_once('/').unwrap();
            if let Value::Object(map) = entity.pointer_mut(parent).unwrap() {
                map.insert("byte8_unknown_field".to_owned(), v.clone());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// A damaged entity (one to three damages) is read the same by both, or refused by the
    /// straight reading (and then read by `from_value`, as before): never read differently.
    #[test]
    fn a_damaged_entity_is_never_read_differently(
        pick in any::<usize>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        thread_local! {
            static ENTITIES: Vec<(EventKind, Value)> = entities();
        }
        let (kind, text) = ENTITIES.with(|all| damaged_entity(all, pick, &damages));
        prop_assert!(agree(kind, &text).is_ok(), "{:?}", agree(kind, &text));
    }
}

/// A workload entity with one to three damages, as JSON text.
fn damaged_entity(all: &[(EventKind, Value)], pick: usize, damages: &[Damage]) -> (EventKind, Vec<u8>) {
    let (kind, mut entity) = all[pick % all.len()].clone();
    for d in damages {
        apply(&mut entity, d);
    }
    (kind, serde_json::to_vec(&entity).unwrap())
}

/// Of 400 damages drawn as the properties draw them, how many `agree` reads straight
/// (`Ok(true)`) and how many fall back (`Ok(false)`); a disagreement fails the test.
fn readings_of_damages(agree: impl Fn(usize, &[Damage]) -> Result<bool, String>) -> (u32, u32) {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let strategy = (any::<usize>(), proptest::collection::vec(damage(), 1..4));
    let (mut straight, mut fallback) = (0, 0);
    for _ in 0..400 {
        let (pick, damages) = strategy.new_tree(&mut runner).unwrap().current();
        match agree(pick, &damages) {
            Ok(true) => straight += 1,
            Ok(false) => fallback += 1,
            Err(e) => panic!("{e}"),
        }
    }
    (straight, fallback)
}

/// The damages above are not all refused by the straight reading (which would make the property
/// hold trivially): of 400 damaged entities drawn as the property draws them, a good share is
/// read straight and a good share falls back.
#[test]
fn the_damages_exercise_both_readings() {
    let all = entities();
    let (straight, fallback) = readings_of_damages(|pick, damages| {
        let (kind, text) = damaged_entity(&all, pick, damages);
        agree(kind, &text)
    });
    assert!(straight >= 40 && fallback >= 40, "read straight {straight}, fell back {fallback}");
}

// `Event::from_json_text`, `Event::parse`'s first reading of every event line (the envelope and
// its entity straight from the text), against `Event::from_value`, the reading it replaced and
// still falls back to: on the workload generator's lines, whole and damaged (the envelope as well
// as the entity), an event it reads is the one `from_value` reads, and `Event::parse` always
// answers what `from_value` answers, event or error.

/// The workload's event lines, every kind.
fn event_lines() -> Vec<String> {
    let config = WorkloadConfig { seed: 12, events: 1_500, ..WorkloadConfig::default() };
    Workload::generate(&config).lines
}

/// `Event::parse`'s answer or error (its text and the envelope it could read), comparable.
type Answer = Result<Event, (String, Option<String>, Option<String>, Option<u64>)>;

fn answer(read: Result<Event, EventParseError>) -> Answer {
    read.map_err(|e| (e.to_string(), e.idempotency_key, e.event, e.magento_entity_id))
}

/// Both readings of a line that is JSON: `None` from `Event::from_json_text` is a fallback, never
/// a disagreement; an event from it must be what `Event::from_value` reads; and `Event::parse`
/// must answer exactly what `Event::from_value` answers.
fn event_agree(line: &str) -> Result<bool, String> {
    let slow = answer(Event::from_value(serde_json::from_str(line).map_err(|e| e.to_string())?));
    let parsed = answer(Event::parse(line));
    if parsed != slow {
        return Err(format!("parse answered differently:\n{parsed:?}\n{slow:?}"));
    }
    match (Event::from_json_text(line), slow) {
        (Some(fast), Ok(slow)) if fast == slow => Ok(true),
        (Some(fast), Ok(slow)) => Err(format!("read differently:\n{fast:?}\n{slow:?}")),
        (Some(fast), Err(e)) => Err(format!("read {fast:?} where from_value refuses: {e:?}")),
        (None, _) => Ok(false),
    }
}

#[test]
fn every_workload_event_line_reads_the_same_straight_from_text() {
    let mut kinds = std::collections::BTreeSet::new();
    for line in event_lines() {
        assert_eq!(event_agree(&line), Ok(true), "{line}");
        kinds.insert(Event::parse(&line).unwrap().event);
    }
    assert_eq!(kinds.len(), 5, "every event kind: {kinds:?}");
}

#[test]
fn an_envelope_key_given_twice_is_read_as_a_value_reads_it() {
    let line = event_lines().into_iter().find(|l| l.contains("\"invoice.created\"")).unwrap();
    let event = Event::parse(&line).unwrap();
    let twice = format!("{{\"website_id\":99,{}", &line[1..]);
    assert_eq!(Event::from_json_text(&twice), None, "serde refuses a duplicate field");
    assert_eq!(Event::parse(&twice).unwrap(), event, "a Value keeps the last website_id");
    assert_eq!(event_agree(&twice), Ok(false));
}

/// A workload line with one to three damages anywhere in it.
fn damaged_line(lines: &[String], pick: usize, damages: &[Damage]) -> String {
    let mut event: Value = serde_json::from_str(&lines[pick % lines.len()]).unwrap();
    for d in damages {
        apply(&mut event, d);
    }
    serde_json::to_string(&event).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A damaged line is read the same by both, or refused by the straight reading (and then
    /// read by `from_value`, as before): never read differently, and `Event::parse` answers what
    /// `from_value` answers.
    #[test]
    fn a_damaged_event_line_is_never_read_differently(
        pick in any::<usize>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        thread_local! {
            static LINES: Vec<String> = event_lines();
        }
        let line = LINES.with(|lines| damaged_line(lines, pick, &damages));
        prop_assert!(event_agree(&line).is_ok(), "{:?}", event_agree(&line));
    }
}

/// The damages are not all refused by the straight reading (which would make the property hold
/// trivially): of 400 damaged lines drawn as the property draws them, a good share is read
/// straight and a good share falls back.
#[test]
fn the_line_damages_exercise_both_readings() {
    let lines = event_lines();
    let (straight, fallback) = readings_of_damages(|pick, damages| event_agree(&damaged_line(&lines, pick, damages)));
    assert!(straight >= 40 && fallback >= 40, "read straight {straight}, fell back {fallback}");
}
