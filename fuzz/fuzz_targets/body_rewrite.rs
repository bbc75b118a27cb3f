//! The request-body probe and splices: on valid JSON, replacing the model
//! and inserting a first member give valid JSON whose other members are
//! unchanged; on anything else the probe errors without panicking.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate::body::{insert_first_member, probe, replace_string};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let Ok(found) = probe(&body) else {
        return;
    };
    let original = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        // Valid JSON grammar that serde_json's DOM refuses: numbers beyond
        // f64 and lone surrogate escapes (RFC 8259 leaves both to the
        // implementation). Routing skips such fields; the provider decides.
        Err(e)
            if ["number out of range", "surrogate", "end of hex escape"]
                .iter()
                .any(|m| e.to_string().contains(m)) =>
        {
            return
        }
        _ => panic!("probe accepted a body that is not a JSON object"),
    };
    if let Some(span) = found.model_span {
        let new_model = "mapped-\"model\"\\\u{e9}";
        let rewritten = replace_string(&body, span, new_model);
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&rewritten) else {
            panic!("replace_string broke the JSON");
        };
        assert_eq!(doc.get("model"), Some(&Value::from(new_model)));
        assert_eq!(probe(&rewritten).unwrap().model.as_deref(), Some(new_model));
        let mut expected = original.clone();
        expected.insert("model".into(), Value::from(new_model));
        assert_eq!(doc, expected);
    }
    if !original.contains_key("stream_options") {
        let inserted = insert_first_member(&body, r#""stream_options":{"include_usage":true}"#);
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&inserted) else {
            panic!("insert_first_member broke the JSON");
        };
        let mut expected = original;
        expected.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        assert_eq!(doc, expected);
        assert!(probe(&inserted).unwrap().include_usage);
    }
});
