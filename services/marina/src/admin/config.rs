//! Configuration files as the admin CLI reads and writes them: the top-level `tenants:` map of a
//! Marina configuration file (YAML, or JSON, which is YAML too), each tenant's section being the
//! admin API's tenant document with the same key names.

use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// The tenants of configuration text, by id, in the file's order. `name` is for messages.
pub fn tenants_of(text: &str, name: &str) -> Result<Vec<(String, Value)>, String> {
    let mut yaml: Yaml = serde_yaml_ng::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    yaml.apply_merge().map_err(|e| format!("{name}: {e}"))?;
    let doc = to_json(&yaml, "").map_err(|(path, e)| format!("{name}: {path}: {e}"))?;
    let Some(tenants) = doc.get("tenants") else {
        return Err(format!(
            "{name}: no top-level `tenants:` map (see docs/configuration.md)"
        ));
    };
    let Some(tenants) = tenants.as_object() else {
        return Err(format!(
            "{name}: `tenants` must be a map of tenant id to its section"
        ));
    };
    Ok(tenants.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// YAML as JSON: map keys become strings, merge keys are applied; tags and non-finite numbers
/// have no JSON form (`Err((path, why))`).
fn to_json(y: &Yaml, path: &str) -> Result<Value, (String, String)> {
    let at = |p: &str| {
        if p.is_empty() {
            "(top)".to_owned()
        } else {
            p.to_owned()
        }
    };
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| (at(path), format!("{n} has no JSON form")))?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => return Err((at(path), "map keys must be text".into())),
                };
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let v = to_json(v, &sub)?;
                if out.insert(key, v).is_some() {
                    return Err((sub, "this key appears twice".into()));
                }
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            return Err((at(path), format!("YAML tags ({}) are not supported", t.tag)));
        }
    })
}

/// A configuration file holding `tenants` (id, document, where it is defined), as YAML; a
/// comment marks the tenants of a node's configuration file, which the admin API cannot write.
pub fn export_yaml(tenants: &[(String, Value, Option<String>)], from: &str) -> Result<String, String> {
    let mut out = format!("# Marina tenants exported from {from}\n");
    if tenants.is_empty() {
        out.push_str("tenants: {}\n");
        return Ok(out);
    }
    out.push_str("tenants:\n");
    for (id, doc, source) in tenants {
        if source.as_deref() == Some("file") {
            out.push_str(&format!(
                "  # {id}: defined in the node's configuration file (read-only through the admin API)\n"
            ));
        }
        let mut one = Map::new();
        one.insert(id.clone(), doc.clone());
        let text = serde_yaml_ng::to_string(&Value::Object(one)).map_err(|e| format!("{id}: {e}"))?;
        for line in text.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The same as JSON: `{"tenants": {id: document, …}}`.
pub fn export_json(tenants: &[(String, Value, Option<String>)]) -> Value {
    let map: Map<String, Value> = tenants
        .iter()
        .map(|(id, doc, _)| (id.clone(), doc.clone()))
        .collect();
    serde_json::json!({ "tenants": map })
}

/// The top-level keys of `a` and `b` (objects) whose values differ.
pub fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../../../../docs/examples/marina.yaml");

    #[test]
    fn reads_the_example_configuration() {
        let t = tenants_of(EXAMPLE, "marina.yaml").unwrap();
        let ids: Vec<&str> = t.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["acme", "globex"]);
        let acme = &t[0].1;
        assert_eq!(acme["limits"]["max_body_bytes"], 262_144);
        assert_eq!(acme["auth"]["api_keys"][0]["expires"], "2027-06-30T00:00:00Z");
        assert_eq!(acme["upstreams"][1]["input_schema"]["required"], json!(["city"]));
    }

    #[test]
    fn export_then_read_is_the_same() {
        let tricky = json!({
            "rbac": {"policy": "p, operator, tool:*, call, allow\ng, alice, operator\n"},
            "limits": {"rate": {"tenant": "1000/s"}, "max_body_bytes": 1024, "ratio": 1.5},
            "strings": ["yes", "no", "null", "~", "1", "0x10", "1e3", "", " x ", "#c", "a: b", "- d", "true"],
            "nothing": null,
            "empty": {},
            "none": [],
            "disabled": false,
        });
        let tenants = vec![
            ("acme".to_owned(), tricky, Some("store".to_owned())),
            ("demo".to_owned(), Value::Null, Some("file".to_owned())),
            ("123".to_owned(), json!({}), None),
        ];
        let text = export_yaml(&tenants, "http://x/admin/v1").unwrap();
        let back = tenants_of(&text, "export").unwrap();
        let mut want: Vec<(String, Value)> = tenants.into_iter().map(|(i, d, _)| (i, d)).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let mut back = back;
        back.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want, "{text}");
        assert_eq!(
            tenants_of(&export_json(&[]).to_string(), "j").unwrap(),
            Vec::<(String, Value)>::new()
        );
        assert_eq!(
            tenants_of(&export_yaml(&[], "x").unwrap(), "y").unwrap(),
            Vec::<(String, Value)>::new()
        );
    }

    #[test]
    fn refuses_what_is_not_a_configuration() {
        for (text, why) in [
            ("server: {}\n", "no top-level `tenants:`"),
            ("tenants: [a]\n", "must be a map"),
            ("tenants: {a: !x 1}\n", "tags"),
            ("tenants: {a: {x: 1, x: 2}}\n", "tenants"),
            ("tenants: {a: .inf}\n", "no JSON form"),
            ("[", "export"),
        ] {
            let e = tenants_of(text, "export").unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn names_changed_keys() {
        assert_eq!(
            changed_keys(&json!({"a": 1, "b": 2, "c": 3}), &json!({"a": 1, "b": 3, "d": 4})),
            ["b", "c", "d"]
        );
    }
}
