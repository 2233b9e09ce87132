//! Tolerant decoding of Temporal payloads into JSON: whatever arrives (no payload, several, a
//! non-JSON encoding), the answer is a value or a reason, never a failed workflow task.

use serde_json::Value;
use temporalio_common::data_converters::RawValue;
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// Decodes the single JSON argument of a signal, update or workflow input.
pub fn decode(raw: &RawValue) -> Result<Value, String> {
    match raw.payloads.as_slice() {
        [] => Err("no payload: send one JSON argument (e.g. `--input '{...}'`)".into()),
        [p] => decode_one(p),
        many => Err(format!(
            "{} payloads: send exactly one JSON argument",
            many.len()
        )),
    }
}

fn decode_one(p: &Payload) -> Result<Value, String> {
    let encoding = p
        .metadata
        .get("encoding")
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    match encoding.as_str() {
        "json/plain" => serde_json::from_slice(&p.data)
            .map_err(|e| format!("the payload is not valid JSON: {e}")),
        "binary/null" => Ok(Value::Null),
        "" if p.data.is_empty() => Err("an empty payload: send one JSON argument".into()),
        other => Err(format!("payload encoding `{other}` is not JSON")),
    }
}

/// Encodes a JSON value as a `json/plain` payload.
pub fn encode(v: &Value) -> RawValue {
    let mut p = Payload::default();
    p.metadata.insert("encoding".into(), b"json/plain".to_vec());
    p.data = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
    RawValue::new(vec![p])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_json_and_rejects_the_rest() {
        assert_eq!(decode(&encode(&json!({"a": 1}))).unwrap(), json!({"a": 1}));
        assert!(
            decode(&RawValue::new(vec![]))
                .unwrap_err()
                .contains("no payload")
        );
        assert!(decode(&RawValue::empty()).is_err());
        let mut p = Payload::default();
        p.metadata
            .insert("encoding".into(), b"binary/plain".to_vec());
        p.data = b"xx".to_vec();
        assert!(
            decode(&RawValue::new(vec![p.clone()]))
                .unwrap_err()
                .contains("binary/plain")
        );
        p.metadata.insert("encoding".into(), b"json/plain".to_vec());
        assert!(
            decode(&RawValue::new(vec![p.clone()]))
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            decode(&RawValue::new(vec![p.clone(), p]))
                .unwrap_err()
                .contains("2 payloads")
        );
    }
}
