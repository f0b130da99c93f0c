//! The HTTP API, driven through the router without sockets: every endpoint,
//! and every class of bad input getting a 4xx with a JSON error naming the
//! problem.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_inference::artifact;
use ferry_inference::server::{AppState, app};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A fresh state (its own metrics and readiness) for the committed model.
fn fresh_state() -> AppState {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/model/placement.json");
    let state = AppState::new(artifact::load(path.as_ref()).unwrap(), 100);
    state.set_ready(true);
    state
}

/// A shared state, for tests that neither read metrics nor change readiness.
fn state() -> AppState {
    static STATE: std::sync::OnceLock<AppState> = std::sync::OnceLock::new();
    STATE.get_or_init(fresh_state).clone()
}

fn candidate() -> Value {
    json!({"gender": "M", "ssc_p": 71.0, "ssc_b": "Central", "hsc_p": 58.66, "hsc_b": "Central",
           "hsc_s": "Science", "degree_p": 58.0, "degree_t": "Sci&Tech", "etest_p": 56.0,
           "mba_p": 61.3, "specialisation": "Mkt&Fin", "workex": "Yes"})
}

async fn call(
    router: Router,
    method: &str,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn post_json(uri: &str, body: &Value) -> (StatusCode, String) {
    call(app(state()), "POST", uri, body.to_string()).await
}

#[tokio::test]
async fn predict_answers_the_original_shape_byte_for_byte() {
    let (status, body) = post_json("/predict", &json!([candidate()])).await;
    assert_eq!(status, StatusCode::OK);
    // Flask's jsonify: sorted keys, compact, final newline.
    let re_probability = body
        .strip_prefix("{\"Placement\":true,\"Placement_Probability\":")
        .and_then(|rest| rest.strip_suffix("}\n"))
        .unwrap_or_else(|| panic!("unexpected body {body:?}"));
    let p: f64 = re_probability.parse().unwrap();
    assert!((0.5..=1.0).contains(&p));
}

#[tokio::test]
async fn predict_answers_a_list_for_several_candidates() {
    let mut other = candidate();
    other["workex"] = json!("No");
    other["etest_p"] = json!(50);
    let (status, body) = post_json("/predict", &json!([candidate(), other])).await;
    assert_eq!(status, StatusCode::OK);
    let answers: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(answers.len(), 2);
    for a in answers {
        let p = a["Placement_Probability"].as_f64().unwrap();
        assert_eq!(a["Placement"].as_bool().unwrap(), p >= 0.5);
    }
}

#[tokio::test]
async fn health_answers_the_original_body() {
    let (status, body) = call(app(state()), "GET", "/health", Body::empty()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "{\"status\":\"healthy\"}\n")
    );
}

/// Each bad input with the status it must get and a fragment its error must hold.
fn bad_predict_inputs() -> Vec<(&'static str, String, StatusCode, &'static str)> {
    let with = |key: &str, value: Value| {
        let mut c = candidate();
        c[key] = value;
        json!([c]).to_string()
    };
    let without = |key: &str| {
        let mut c = candidate();
        c.as_object_mut().unwrap().remove(key);
        json!([c]).to_string()
    };
    let bad = StatusCode::BAD_REQUEST;
    vec![
        (
            "malformed JSON",
            "[{\"gender\": ".into(),
            bad,
            "malformed JSON at line 1",
        ),
        (
            "missing field",
            without("mba_p"),
            bad,
            "missing field `mba_p`",
        ),
        (
            "extra field",
            with("age", json!(21)),
            bad,
            "unknown field `age`",
        ),
        (
            "wrong type",
            with("ssc_p", json!("71")),
            bad,
            "wrong type for field `ssc_p`: expected a number",
        ),
        (
            "unknown category",
            with("gender", json!("X")),
            bad,
            "unknown category \"X\" for field `gender`",
        ),
        (
            "out of range",
            with("hsc_p", json!(101)),
            bad,
            "value 101 for field `hsc_p` is out of range",
        ),
        ("negative", with("hsc_p", json!(-1)), bad, "out of range"),
        (
            "NaN literal",
            "[{\"ssc_p\": NaN}]".into(),
            bad,
            "malformed JSON",
        ),
        ("empty list", "[]".into(), bad, "empty list"),
        ("not a list", "42".into(), bad, "expected a JSON list"),
        (
            "list of non-objects",
            "[1]".into(),
            bad,
            "expected a JSON object of the 12 features",
        ),
        (
            "batch over the limit",
            json!(vec![candidate(); 101]).to_string(),
            bad,
            "101 candidates in one request: expected at most 100",
        ),
        (
            "body over 1 MiB",
            format!("[{}]", " ".repeat(1024 * 1024 + 1)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than the limit",
        ),
    ]
}

#[tokio::test]
async fn predict_refuses_each_bad_input_with_a_4xx_json_error() {
    for (case, body, expected_status, fragment) in bad_predict_inputs() {
        let (status, text) = call(app(state()), "POST", "/predict", body).await;
        assert_eq!(status, expected_status, "{case}: {text}");
        let error: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{case}: not JSON: {text}"));
        let message = error["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: {text}"));
        assert!(message.contains(fragment), "{case}: {message}");
    }
}

#[tokio::test]
async fn v2_server_and_health_endpoints() {
    let (status, body) = call(app(state()), "GET", "/v2", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["name"],
        "ferry-inference"
    );
    let (status, body) = call(app(state()), "GET", "/v2/health/live", Body::empty()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"live\":true}"));
    let (status, body) = call(app(state()), "GET", "/v2/health/ready", Body::empty()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "{\"ready\":true}")
    );
    let (status, body) = call(
        app(state()),
        "GET",
        "/v2/models/placement/ready",
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn readiness_is_false_until_set_and_while_draining() {
    let state = fresh_state();
    state.set_ready(false);
    for uri in ["/v2/health/ready", "/v2/models/placement/ready"] {
        let (status, body) = call(app(state.clone()), "GET", uri, Body::empty()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(body.contains("\"ready\":false"), "{body}");
    }
    // Liveness does not follow readiness: a draining pod must not be killed.
    let (status, _) = call(app(state), "GET", "/v2/health/live", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn v2_model_metadata_describes_inputs_outputs_and_artifact() {
    let state = state();
    let version = state.model.version.clone();
    for uri in [
        "/v2/models/placement".to_owned(),
        format!("/v2/models/placement/versions/{version}"),
    ] {
        let (status, body) = call(app(state.clone()), "GET", &uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let m: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(m["name"], "placement");
        assert_eq!(m["versions"], json!([version]));
        assert_eq!(m["inputs"].as_array().unwrap().len(), 12);
        assert_eq!(
            m["inputs"][0],
            json!({"name": "gender", "datatype": "BYTES", "shape": [-1]})
        );
        assert_eq!(
            m["inputs"][1],
            json!({"name": "ssc_p", "datatype": "FP32", "shape": [-1]})
        );
        assert_eq!(
            m["outputs"][1],
            json!({"name": "placed", "datatype": "BOOL", "shape": [-1]})
        );
        assert_eq!(m["parameters"]["sha256"], json!(&*state.sha256));
        assert!(
            m["parameters"]["metrics"]["cv_unshuffled_accuracy"]
                .as_f64()
                .unwrap()
                >= 0.95
        );
    }
    let (status, body) = call(app(state.clone()), "GET", "/v2/models/other", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("unknown model \\\"other\\\""), "{body}");
    let (status, _) = call(
        app(state),
        "GET",
        "/v2/models/placement/versions/nope",
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An infer request for `candidates` (all inputs, in schema order).
fn infer_request(candidates: &[Value]) -> Value {
    let names = [
        "gender",
        "ssc_p",
        "ssc_b",
        "hsc_p",
        "hsc_b",
        "hsc_s",
        "degree_p",
        "degree_t",
        "etest_p",
        "mba_p",
        "specialisation",
        "workex",
    ];
    let inputs: Vec<Value> = names
        .iter()
        .map(|name| {
            let data: Vec<Value> = candidates.iter().map(|c| c[name].clone()).collect();
            let datatype = if data[0].is_string() { "BYTES" } else { "FP32" };
            json!({"name": name, "shape": [data.len()], "datatype": datatype, "data": data})
        })
        .collect();
    json!({"id": "req-1", "inputs": inputs})
}

#[tokio::test]
async fn v2_infer_agrees_with_predict() {
    let mut other = candidate();
    other["workex"] = json!("No");
    other["mba_p"] = json!(52.0);
    let (status, body) = post_json(
        "/v2/models/placement/infer",
        &infer_request(&[candidate(), other.clone()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["model_name"], "placement");
    assert_eq!(r["id"], "req-1");
    assert_eq!(r["outputs"][0]["name"], "probability");
    assert_eq!(r["outputs"][0]["datatype"], "FP32");
    assert_eq!(r["outputs"][0]["shape"], json!([2]));
    assert_eq!(r["outputs"][1]["datatype"], "BOOL");
    for (i, c) in [candidate(), other].iter().enumerate() {
        let (_, legacy) = post_json("/predict", &json!([c])).await;
        let legacy: Value = serde_json::from_str(&legacy).unwrap();
        let p = legacy["Placement_Probability"].as_f64().unwrap();
        assert_eq!(
            r["outputs"][0]["data"][i].as_f64().unwrap(),
            f64::from(p as f32)
        );
        assert_eq!(r["outputs"][1]["data"][i], legacy["Placement"]);
    }
}

#[tokio::test]
async fn v2_infer_returns_only_requested_outputs() {
    let mut request = infer_request(&[candidate()]);
    request["outputs"] = json!([{"name": "placed"}]);
    let (status, body) = post_json("/v2/models/placement/infer", &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(r["outputs"][0]["name"], "placed");
}

#[tokio::test]
async fn v2_infer_refuses_each_bad_input_with_a_4xx_json_error() {
    let good = infer_request(&[candidate()]);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut r = good.clone();
        f(&mut r);
        r.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"inputs\": [".into(), "malformed JSON"),
        (
            "not an infer request",
            "[]".into(),
            "invalid inference request",
        ),
        (
            "extra request field",
            edit(&|r| r["extra"] = json!(1)),
            "unknown field `extra`",
        ),
        (
            "missing input",
            edit(&|r| {
                r["inputs"].as_array_mut().unwrap().remove(3);
            }),
            "missing input \"hsc_p\"",
        ),
        (
            "unknown input",
            edit(&|r| r["inputs"][0]["name"] = json!("age")),
            "unknown input \"age\"",
        ),
        (
            "duplicate input",
            edit(&|r| r["inputs"][1]["name"] = json!("gender")),
            "given twice",
        ),
        (
            "wrong datatype",
            edit(&|r| r["inputs"][1]["datatype"] = json!("BYTES")),
            "datatype \"BYTES\": expected FP32",
        ),
        (
            "wrong element type",
            edit(&|r| r["inputs"][1]["data"] = json!(["71"])),
            "input \"ssc_p\" element 0: wrong type",
        ),
        (
            "unknown category",
            edit(&|r| r["inputs"][0]["data"] = json!(["X"])),
            "unknown category \"X\"",
        ),
        (
            "out of range",
            edit(&|r| r["inputs"][1]["data"] = json!([1000])),
            "out of range",
        ),
        (
            "shape mismatch",
            edit(&|r| r["inputs"][1]["shape"] = json!([2])),
            "has 1 values but shape [2]",
        ),
        (
            "bad shape",
            edit(&|r| r["inputs"][1]["shape"] = json!([1, 2])),
            "expected [N] or [N, 1]",
        ),
        (
            "empty",
            edit(&|r| {
                r["inputs"][0]["shape"] = json!([0]);
                r["inputs"][0]["data"] = json!([]);
            }),
            "is empty",
        ),
        (
            "lengths differ",
            edit(&|r| {
                r["inputs"][1]["shape"] = json!([2]);
                r["inputs"][1]["data"] = json!([60, 61]);
            }),
            "all inputs must have the same length",
        ),
        (
            "batch over the limit",
            edit(&|r| r["inputs"][0]["shape"] = json!([101])),
            "expected at most 100",
        ),
        (
            "unknown output",
            edit(&|r| r["outputs"] = json!([{"name": "score"}])),
            "unknown output \"score\"",
        ),
    ];
    for (case, body, fragment) in cases {
        let (status, text) = call(app(state()), "POST", "/v2/models/placement/infer", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(fragment), "{case}: {message}");
    }
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let (status, body) = call(app(state()), "GET", "/nope", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("\"error\":\"no route for GET /nope"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_count_requests_predictions_and_name_the_model() {
    let state = fresh_state();
    call(
        app(state.clone()),
        "POST",
        "/predict",
        json!([candidate(), candidate()]).to_string(),
    )
    .await;
    call(app(state.clone()), "POST", "/predict", "[]").await;
    let (status, text) = call(app(state.clone()), "GET", "/metrics", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "ferry_inference_requests_total{route=\"/predict\",method=\"POST\",status=\"200\"} 1",
        "ferry_inference_requests_total{route=\"/predict\",method=\"POST\",status=\"400\"} 1",
        "ferry_inference_predictions_total{class=\"placed\"} 2",
        "ferry_inference_request_duration_seconds_count{route=\"/predict\"} 2",
        "ferry_inference_ready 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let info = format!(
        "ferry_inference_model_info{{name=\"placement\",version=\"{}\",sha256=\"{}\"}} 1",
        state.model.version, state.sha256
    );
    assert!(text.contains(&info), "missing {info:?}");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        (0.0..100.0f64).prop_map(Value::from),
        prop::sample::select(vec![
            "M", "F", "Central", "Others", "Science", "Yes", "", "Mkt&HR"
        ])
        .prop_map(Value::from),
        ".*".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "gender", "ssc_p", "hsc_b", "workex", "inputs", "name", "data", "shape",
                    "datatype", "x"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the body, both prediction endpoints answer 200 or a 4xx with
    /// a JSON error; never a panic, never a 5xx.
    #[test]
    fn any_body_gets_200_or_a_json_4xx(value in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for body in [value.to_string().into_bytes(), raw.clone()] {
                for uri in ["/predict", "/v2/models/placement/infer"] {
                    let (status, text) = call(app(state()), "POST", uri, body.clone()).await;
                    prop_assert!(status == StatusCode::OK || status.is_client_error(), "{uri} {status} {text}");
                    if status != StatusCode::OK {
                        let error: Value = serde_json::from_str(&text).unwrap();
                        prop_assert!(error["error"].is_string());
                    }
                }
            }
            Ok(())
        })?;
    }
}

async fn post_form(body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = app(state()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The candidate as a posted form.
fn candidate_form() -> String {
    candidate()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={}", text.replace('&', "%26"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn the_page_offers_a_form_of_every_feature_and_the_model_card() {
    let (status, page) = call(app(state()), "GET", "/", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let model = state().model.clone();
    assert_eq!(model.schema.features.len(), 12);
    for feature in &model.schema.features {
        assert!(
            page.contains(&format!("name=\"{}\"", feature.name)),
            "{}",
            feature.name
        );
    }
    assert!(page.contains("<option value=\"Sci&amp;Tech\">Sci&amp;Tech</option>"));
    assert!(
        page.contains("type=\"number\" step=\"any\" min=\"0\" max=\"100\""),
        "{page}"
    );
    assert!(page.contains(&model.version) && page.contains(&*state().sha256));
    assert!(page.contains("<form method=\"post\" action=\"/\">"));
    assert!(!page.contains("<script"));
}

#[tokio::test]
async fn posting_the_form_answers_as_predict_does() {
    let (status, page) = post_form(&candidate_form()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (_, api) = post_json("/predict", &json!([candidate()])).await;
    let api: Value = serde_json::from_str(&api).unwrap();
    let probability = api["Placement_Probability"].as_f64().unwrap();
    assert!(page.contains(&format!("({probability})")), "{page}");
    let verdict = if api["Placement"] == true {
        "<h2>Placed</h2>"
    } else {
        "<h2>Not placed</h2>"
    };
    assert!(page.contains(verdict), "{page}");
    // What was typed stays in the form.
    assert!(page.contains("value=\"61.3\""), "{page}");
    assert!(
        page.contains("<option value=\"Mkt&amp;Fin\" selected>"),
        "{page}"
    );
}

#[tokio::test]
async fn a_bad_form_is_refused_with_the_reason_escaped() {
    let form = candidate_form();
    let cases = [
        (form.replace("ssc_p=71.0", "ssc_p=170"), "out of range"),
        (
            form.replace("ssc_p=71.0", "ssc_p=seventy"),
            "wrong type for field `ssc_p`",
        ),
        (
            form.replace("ssc_p=71.0", "ssc_p="),
            "field `ssc_p` is empty",
        ),
        (
            form.replace("gender=M", "gender=%3Cscript%3Ealert(1)%3C/script%3E"),
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ),
        (format!("{form}&gender=F"), "sent twice"),
        (format!("{form}&admin=1"), "unknown field `admin`"),
        (form.replace("&workex=Yes", ""), "missing field `workex`"),
        ("%%%".to_owned(), "Not a valid candidate"),
    ];
    for (body, fragment) in cases {
        let (status, page) = post_form(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(page.contains(fragment), "{body}: {page}");
        assert!(!page.contains("<script>"), "{body}");
    }
}

#[tokio::test]
async fn every_route_has_its_own_metric_label() {
    let state = fresh_state();
    let version = state.model.version.clone();
    for uri in [
        "/".to_owned(),
        "/health".to_owned(),
        "/v2".to_owned(),
        "/v2/health/live".to_owned(),
        "/v2/health/ready".to_owned(),
        "/v2/models/placement".to_owned(),
        "/v2/models/placement/ready".to_owned(),
        format!("/v2/models/placement/versions/{version}"),
        format!("/v2/models/placement/versions/{version}/ready"),
        "/metrics".to_owned(),
    ] {
        let (status, _) = call(app(state.clone()), "GET", &uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    for uri in [
        "/predict".to_owned(),
        "/v2/models/placement/infer".to_owned(),
        format!("/v2/models/placement/versions/{version}/infer"),
    ] {
        call(app(state.clone()), "POST", &uri, "{}").await;
    }
    let (_, metrics) = call(app(state.clone()), "GET", "/metrics", Body::empty()).await;
    assert!(!metrics.contains("route=\"other\""), "{metrics}");
    assert!(
        metrics.contains("route=\"/v2/models/{name}/versions/{version}/infer\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/\",method=\"GET\",status=\"200\""),
        "{metrics}"
    );
}
