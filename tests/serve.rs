//! `chameleon serve` end to end: the real binary on a free loopback port, the real model, a real HTTP
//! client (ureq). A request answered through a user's profile says what `chameleon generate --user`
//! says for the same message (greedy decoding), and one without a user what the plain model says.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::ok;
use serde_json::{Value, json};

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
    /// What it has written to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `chameleon serve` on a free port and wait for its ready line.
fn serve(db: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(db)
        .args([
            "serve",
            "--port",
            "0",
            "--threads",
            common::THREADS,
            "--ctx",
            "2048",
        ])
        .arg("--model")
        .arg(common::smollm())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the server exited before it was ready")
            .unwrap();
        if let Some(rest) = line.split("ready on ").nth(1) {
            // the line names the API's base URL (`http://ADDR/v1`), what clients are given
            let base = rest.split_whitespace().next().unwrap();
            break base.trim_end_matches("/v1").to_string();
        }
    };
    // keep draining the log so the server never blocks on a full pipe
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = kept.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server { child, url, log }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// POST `body` to `path`; the status, the `x-chameleon-profile` header and the body.
fn post(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    post_to(&server.url, path, headers, body)
}

fn post_to(url: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut req = agent()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let profile = resp
        .headers()
        .get("x-chameleon-profile")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, profile, resp.body_mut().read_to_string().unwrap())
}

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(format!("{}{path}", server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

/// A POST announcing a `len`-byte body, of which only the headers are sent: the status and body.
fn oversized(server: &Server, key: &str, len: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let host = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    // read the head, then exactly the body it announces (the connection may stay open)
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body_len) = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed the connection without an answer");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            break (end + 4, len);
        }
    };
    while raw.len() < head + body_len {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = text[head..head + body_len].to_string();
    (status, body)
}

fn chameleon(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    ok(out)
}

const PROMPT: &str = "Name a film for a rainy evening.";

/// Import `name` into `db` with one synthetic SmolLM2 profile: `p` and `n` per layer (30 layers of
/// 576), edits at layers 10-12, fitted with `params`.
fn import_profiled(
    db: &Path,
    dir: &Path,
    name: &str,
    direction: impl Fn(usize) -> (Value, Value),
    params: Value,
) {
    let info: Value = serde_json::from_str(&chameleon(
        db,
        &[
            "info",
            "--json",
            "--model",
            common::smollm().to_str().unwrap(),
        ],
    ))
    .unwrap();
    let (n_layer, hidden) = (30usize, 576usize);
    let layers: Vec<Value> = (0..n_layer)
        .map(|l| {
            let (p, n) = direction(l);
            json!({"layer": l, "p": p, "n": n, "ccs_loss": 0.0})
        })
        .collect();
    let export = json!({
        "format": "chameleon-user", "version": 1,
        "user": {"name": name, "created": 1},
        "history": [{"input": "a film", "output": "Solaris"}],
        "profiles": [{
            "model": {"fingerprint": info["fingerprint"], "n_layer": n_layer, "hidden": hidden},
            "selected_layers": [10, 11, 12],
            "layers": layers,
            "params": params,
            "created": 2,
        }],
    });
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, export.to_string()).unwrap();
    chameleon(db, &["import", file.to_str().unwrap()]);
}

/// A store with `alice` (a strong profile for SmolLM2, written as an export: unit directions at
/// three middle layers) and `bob` (no profile).
fn store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("c.db");
    import_profiled(
        &db,
        dir,
        "alice",
        |l| {
            (
                json!(common::unit(576, l as u64 + 1)),
                json!(common::unit(576, l as u64 + 101)),
            )
        },
        json!({"fit": {"alpha": 8.0, "beta": 0.0}}),
    );
    chameleon(&db, &["user", "add", "bob"]);
    db
}

fn generate(db: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "generate",
        "--prompt",
        PROMPT,
        "--max-tokens",
        "24",
        "--threads",
        common::THREADS,
        "--model",
    ];
    let model = common::smollm();
    args.push(model.to_str().unwrap());
    args.extend_from_slice(extra);
    chameleon(db, &args).trim_end_matches('\n').to_string()
}

fn chat_body(extra: Value) -> String {
    let mut body = json!({
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 24,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

/// The text of a chat completion's first choice.
fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn each_request_is_answered_through_its_own_users_profile() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let personal = generate(&db, &["--user", "alice"]);
    let plain = generate(&db, &[]);
    assert_ne!(personal, plain, "the test profile must change the answer");

    let server = serve(&db, &[]);
    let (status, health) = get(&server, "/health", &[]);
    assert_eq!((status, health.contains("ok")), (200, true), "{health}");
    let (status, models) = get(&server, "/v1/models", &[]);
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["smollm2-135m", "smollm2-135m:alice", "smollm2-135m:bob"]
    );

    // alice, named three ways, and interleaved with plain requests: always her answer
    for (extra, headers) in [
        (json!({"user": "alice"}), vec![]),
        (json!({}), vec![("x-chameleon-user", "alice")]),
        (json!({"model": "smollm2-135m:alice"}), vec![]),
    ] {
        let (status, header, body) =
            post(&server, "/v1/chat/completions", &headers, &chat_body(extra));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            personal.as_str(),
            "{body}"
        );
        assert_eq!(v["chameleon"]["user"], "alice");
        assert_eq!(v["chameleon"]["profile"], true);
        assert_eq!(header, "user=alice; edit=yes");
        assert_eq!(v["object"], "chat.completion");
        let usage = &v["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );

        let (status, header, body) =
            post(&server, "/v1/chat/completions", &[], &chat_body(json!({})));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            plain.as_str(),
            "{body}"
        );
        assert_eq!(header, "none");
    }

    // bob has no profile: the plain answer, and the response says why
    let (_, header, body) = post(
        &server,
        "/v1/chat/completions",
        &[],
        &chat_body(json!({"user": "bob"})),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], plain.as_str());
    assert_eq!(header, "none");
    assert!(
        v["chameleon"]["note"]
            .as_str()
            .unwrap()
            .contains("no profile"),
        "{body}"
    );
    // an unknown `user` field (a client's own id) is answered plainly and reported
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &[],
        &chat_body(json!({"user": "u-8f2a"})),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], plain.as_str());
    assert!(
        v["chameleon"]["note"].as_str().unwrap().contains("u-8f2a"),
        "{body}"
    );

    // streaming: the deltas join to the same answer, then the finish, the usage and [DONE]
    let (status, header, body) = post(
        &server,
        "/v1/chat/completions",
        &[],
        &chat_body(
            json!({"user": "alice", "stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(header, "user=alice; edit=yes");
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, personal);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string())
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // several users at once: their requests share batches. Their answers need not be the solo
    // answers token for token: llama.cpp rounds a batch of several sequences differently from one
    // sequence (measured in tests/batch.rs: up to about one logit on SmolLM2, even unedited), which
    // can flip a greedy token. That each row is edited by its own user's plan, within that rounding,
    // is tests/batch.rs's check; here every request is answered for the right user, in one batch.
    let asks = [
        (json!({"user": "alice"}), Some("alice"), true),
        (json!({"user": "bob"}), Some("bob"), false),
        (json!({}), None, false),
        (json!({"model": "smollm2-135m:alice"}), Some("alice"), true),
    ];
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(asks.len()));
    let threads: Vec<_> = asks
        .into_iter()
        .map(|(extra, user, profile)| {
            let (barrier, url, body) = (barrier.clone(), server.url.clone(), chat_body(extra));
            std::thread::spawn(move || {
                barrier.wait();
                let (status, _, body) = post_to(&url, "/v1/chat/completions", &[], &body);
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["chameleon"]["user"].as_str(), user, "{body}");
                assert_eq!(v["chameleon"]["profile"], profile, "{body}");
                assert!(
                    v["usage"]["completion_tokens"].as_u64().unwrap() > 0,
                    "{body}"
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, health) = get(&server, "/health", &[]);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert!(
        health["max_sequences_in_a_batch"].as_u64().unwrap() >= 2,
        "no batch carried two requests: {health}"
    );

    // text completions take the prompt as is
    let (status, _, body) = post(
        &server,
        "/v1/completions",
        &[],
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
            .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty());
}

#[test]
fn bad_requests_get_openai_errors_and_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    chameleon(&db, &["user", "add", "carol"]);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "# keys\ns3cret\nk-carol carol\n").unwrap();
    let server = serve(&db, &["--api-key-file", key_file.to_str().unwrap()]);
    let auth = [("authorization", "Bearer s3cret")];

    // the key: none or a wrong one is 401 on /v1, /health needs none
    assert_eq!(get(&server, "/v1/models", &[]).0, 401);
    assert_eq!(
        get(&server, "/v1/models", &[("authorization", "Bearer s3cres")]).0,
        401
    );
    assert_eq!(get(&server, "/v1/models", &auth).0, 200);
    assert_eq!(get(&server, "/health", &[]).0, 200);

    let error = |status: u16, body: &str, want: u16, needle: &str| {
        assert_eq!(status, want, "{body}");
        let v: Value = serde_json::from_str(body).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
        assert!(v["error"]["type"].is_string());
    };
    let (s, _, b) = post(&server, "/v1/chat/completions", &auth, "{not json");
    error(s, &b, 400, "not valid");
    let (s, _, b) = post(
        &server,
        "/v1/chat/completions",
        &auth,
        &chat_body(json!({"max_tokens": -1})),
    );
    error(s, &b, 400, "`max_tokens` must be 0 or more");
    let (s, _, b) = post(
        &server,
        "/v1/chat/completions",
        &auth,
        &json!({"messages": []}).to_string(),
    );
    error(s, &b, 400, "`messages` is empty");
    let (s, _, b) = post(
        &server,
        "/v1/chat/completions",
        &[auth[0], ("x-chameleon-user", "dave")],
        &chat_body(json!({})),
    );
    error(s, &b, 404, "no user `dave`");
    let (s, _, b) = post(
        &server,
        "/v1/chat/completions",
        &auth,
        &chat_body(json!({"model": "smollm2-135m:erin"})),
    );
    error(s, &b, 404, "no user `erin`");
    // a body over the limit is refused from its Content-Length, before it is read (the server then
    // closes the connection, so the client sends the headers only and reads the answer)
    let (s, b) = oversized(&server, "s3cret", 5 << 20);
    error(s, &b, 413, "limit");
    // a key bound to a user: that user answers whatever the request claims, and only they are listed
    chameleon(&db, &["user", "add", "frank"]);
    let carol = [("authorization", "Bearer k-carol")];
    let (s, models) = get(&server, "/v1/models", &carol);
    assert_eq!(s, 200);
    assert!(
        models.contains("smollm2-135m:carol") && !models.contains("frank"),
        "{models}"
    );
    let (s, _, b) = post(
        &server,
        "/v1/chat/completions",
        &[carol[0], ("x-chameleon-user", "frank")],
        &chat_body(json!({"user": "frank", "max_tokens": 2})),
    );
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["chameleon"]["user"], "carol", "{b}");
    // a known user without a profile is answered
    let (s, header, b) = post(
        &server,
        "/v1/chat/completions",
        &auth,
        &chat_body(json!({"user": "carol", "max_tokens": 2})),
    );
    assert_eq!((s, header.as_str()), (200, "none"), "{b}");
}

#[test]
fn a_public_address_without_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chameleon"))
        .arg("--db")
        .arg(dir.path().join("c.db"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("CHAMELEON_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API key"), "{stderr}");
}

/// The official `openai` Python package as the client: models, chat, streaming with usage,
/// completions, and its own exceptions for our errors. `make test` installs the package into
/// `target/pydeps`; without Python the test says so loudly and skips.
#[test]
fn the_official_openai_package_works_against_it() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!(
            "\n!!! SKIPPED: python3 is missing, so the `openai` package cannot be tried !!!\n"
        );
        return;
    }
    let pydeps = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps");
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let personal = generate(&db, &["--user", "alice"]);
    let plain = generate(&db, &[]);
    let server = serve(&db, &["--api-key", "k-123"]);
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py"))
        .args([&format!("{}/v1", server.url), "k-123", &personal, &plain])
        .env("PYTHONPATH", &pydeps)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the `openai` package is missing: run `make test`, or \
         `python3 -m pip install --target target/pydeps openai`"
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// Resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 8 clients x 20 requests against `--parallel 4 --queue 2`: every request is answered or refused
/// with 503 and `Retry-After` (a full queue), nothing else; a second round leaves memory where the
/// first left it.
#[test]
fn a_bounded_load_gets_answers_or_503s_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let server = serve(&db, &["--parallel", "4", "--queue", "2"]);
    let round = || {
        let threads: Vec<_> = (0..8)
            .map(|client| {
                let url = server.url.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut busy) = (0, 0);
                    for i in 0..20 {
                        let user = if (client + i) % 2 == 0 {
                            "alice"
                        } else {
                            "bob"
                        };
                        let body = chat_body(json!({"user": user, "max_tokens": 3}));
                        let mut resp = agent()
                            .post(format!("{url}/v1/chat/completions"))
                            .header("content-type", "application/json")
                            .send(&body)
                            .unwrap();
                        match resp.status().as_u16() {
                            200 => ok += 1,
                            503 => {
                                assert!(resp.headers().get("retry-after").is_some());
                                busy += 1;
                            }
                            s => {
                                panic!("status {s}: {}", resp.body_mut().read_to_string().unwrap())
                            }
                        }
                    }
                    (ok, busy)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (ok1, busy1) = round();
    assert_eq!(ok1 + busy1, 160);
    assert!(ok1 > 0, "nothing was answered");
    let after_first = rss_kib(server.child.id());
    let (ok2, busy2) = round();
    assert_eq!(ok2 + busy2, 160);
    let after_second = rss_kib(server.child.id());
    eprintln!(
        "answered {ok1} + {ok2}, refused {busy1} + {busy2}; RSS {after_first} KiB then {after_second} KiB"
    );
    assert!(
        after_second <= after_first + after_first / 10 + 8192,
        "memory grew from {after_first} to {after_second} KiB"
    );
    let (_, health) = get(&server, "/health", &[]);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["running"], 0, "{health}");
    assert!(
        health["max_sequences_in_a_batch"].as_u64().unwrap() >= 2,
        "{health}"
    );
}

fn delete(server: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().delete(format!("{}{path}", server.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

/// `--allow-writes`: a client adds a user and their history, fits them in the background while chat
/// goes on, reads the fit's state, is answered through the new profile, and forgets the user. Without
/// the flag, and with another user's key, nothing changes.
#[test]
fn personal_data_over_the_api_with_allow_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());

    // read-only by default
    {
        let server = serve(&db, &[]);
        let (status, _, body) = post(&server, "/v1/chameleon/users", &[], r#"{"name": "carol"}"#);
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("--allow-writes"), "{body}");
        let (status, body) = delete(&server, "/v1/chameleon/users/alice", &[]);
        assert_eq!(status, 403, "{body}");
    }
    assert!(chameleon(&db, &["user", "list"]).contains("alice"));

    let keys = dir.path().join("keys");
    std::fs::write(&keys, "k-admin\nk-bob bob\n").unwrap();
    let server = serve(
        &db,
        &["--allow-writes", "--api-key-file", keys.to_str().unwrap()],
    );
    let admin = [("authorization", "Bearer k-admin")];
    let bobs = [("authorization", "Bearer k-bob")];

    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users",
        &admin,
        r#"{"name": "carol"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users",
        &admin,
        r#"{"name": "carol"}"#,
    );
    assert_eq!(status, 409, "{body}");
    // a key bound to bob changes bob only
    let (status, _, body) = post(&server, "/v1/chameleon/users", &bobs, r#"{"name": "dave"}"#);
    assert_eq!(status, 403, "{body}");
    let (status, body) = delete(&server, "/v1/chameleon/users/carol", &bobs);
    assert_eq!(status, 403, "{body}");

    let films = [
        ("Recommend a film for tonight.", "Solaris, slow and strange"),
        (
            "A film for a long flight?",
            "Stalker: nothing happens, beautifully",
        ),
        (
            "Something to watch with friends?",
            "Arrival, then talk about it for hours",
        ),
        ("What should I avoid?", "Anything loud with car chases"),
        (
            "A film about memory?",
            "Eternal Sunshine of the Spotless Mind",
        ),
        ("A classic?", "2001: A Space Odyssey, the long cut"),
    ];
    let items: Vec<Value> = films
        .iter()
        .map(|(i, o)| json!({"input": i, "output": o}))
        .collect();
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users/carol/history",
        &admin,
        &json!({"items": items}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["added"], 6);
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users/nobody/history",
        &admin,
        r#"{"items": [{"output": "x"}]}"#,
    );
    assert_eq!(status, 404, "{body}");

    let (status, body) = get(&server, "/v1/chameleon/users/carol/fit", &admin);
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["state"].clone()
        ),
        (200, json!("none"))
    );
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users/carol/fit",
        &admin,
        r#"{"route": "align", "seed": 1}"#,
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["state"],
        "running"
    );
    // one fit at a time
    let (status, _, body) = post(&server, "/v1/chameleon/users/alice/fit", &admin, "");
    assert_eq!(status, 409, "{body}");
    // chat goes on while it runs
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &admin,
        &chat_body(json!({"user": "alice"})),
    );
    assert_eq!(status, 200, "{body}");
    // forgetting a user being fitted waits for the fit
    let (status, body) = delete(&server, "/v1/chameleon/users/carol", &admin);
    assert!(status == 409 || status == 200, "{status} {body}");
    let forgotten_early = status == 200;

    // poll the state until the fit ends (bounded, so a hung fit fails the test instead of hanging it)
    let mut last = Value::Null;
    if !forgotten_early {
        for _ in 0..1200 {
            let (_, body) = get(&server, "/v1/chameleon/users/carol/fit", &admin);
            last = serde_json::from_str(&body).unwrap();
            if last["state"] != "running" {
                break;
            }
            assert!(
                last["stage"].is_string() || last["stage"].is_null(),
                "{last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(last["state"], "done", "{last}");
        assert!(
            last["report"]["owner"].as_str().unwrap().contains("carol"),
            "{last}"
        );

        // carol is now answered through her profile
        let (status, profile, body) = post(
            &server,
            "/v1/chat/completions",
            &admin,
            &chat_body(json!({"user": "carol"})),
        );
        assert_eq!(status, 200, "{body}");
        assert!(profile.contains("carol"), "{profile} {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["chameleon"]["profile"], true, "{body}");

        let (status, body) = delete(&server, "/v1/chameleon/users/carol", &admin);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["rows"]["history"], 6, "{body}");
        assert_eq!(v["rows"]["profiles"], 1, "{body}");
    }
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &admin,
        &chat_body(json!({"model": "smollm2-135m:carol"})),
    );
    assert_eq!(status, 404, "{body}");
    drop(server);
    assert!(!chameleon(&db, &["user", "list"]).contains("carol"));
}

/// SIGKILL of the server while a background fit runs and history is being written: the store passes
/// `integrity_check` and holds every write the server acknowledged.
#[test]
fn a_server_killed_during_a_fit_and_writes_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let mut server = serve(&db, &["--allow-writes"]);
    for name in ["erin", "frank"] {
        let (status, _, body) = post(
            &server,
            "/v1/chameleon/users",
            &[],
            &json!({"name": name}).to_string(),
        );
        assert_eq!(status, 201, "{body}");
    }
    let items: Vec<Value> = (0..8)
        .map(|i| json!({"input": format!("A film, take {i}?"), "output": format!("Solaris, the {i}th time")}))
        .collect();
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users/erin/history",
        &[],
        &json!({"items": items}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(
        &server,
        "/v1/chameleon/users/erin/fit",
        &[],
        r#"{"route": "align"}"#,
    );
    assert_eq!(status, 202, "{body}");

    // a writer adds frank's items one request at a time, counting the acknowledged ones
    let url = server.url.clone();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0.. {
                let body = json!({"items": [{"input": "q", "output": format!("answer {i}")}]});
                // a refused connection (the server is gone) ends the writer
                let sent = agent()
                    .post(format!("{url}/v1/chameleon/users/frank/history"))
                    .header("content-type", "application/json")
                    .send(body.to_string())
                    .map(|r| r.status().as_u16());
                match sent {
                    Ok(200) => {
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        })
    };
    // kill while the fit is still running and writes are going on
    let mut running = false;
    for _ in 0..400 {
        let (_, body) = get(&server, "/v1/chameleon/users/erin/fit", &[]);
        let state: Value = serde_json::from_str(&body).unwrap();
        running = state["state"] == "running";
        if acked.load(std::sync::atomic::Ordering::SeqCst) >= 20 || !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running, "the fit ended before the kill; give it more items");
    let before_kill = acked.load(std::sync::atomic::Ordering::SeqCst);
    server.child.kill().unwrap(); // SIGKILL on unix
    server.child.wait().unwrap();
    writer.join().unwrap();
    let acknowledged = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before_kill > 0 && acknowledged >= before_kill);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM history h JOIN users u ON u.id = h.user_id WHERE u.name = 'frank'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("{acknowledged} writes acknowledged, {stored} stored");
    assert!(
        stored >= acknowledged as i64,
        "{stored} stored, {acknowledged} acknowledged"
    );
    // and the store opens and serves again
    drop(conn);
    assert!(chameleon(&db, &["history", "list", "--user", "frank"]).contains("answer 0"));
}

/// A conversation's next turn reads only its new tokens: the cells of the turn before stay with its
/// sequence and are continued when the edit is the same (OpenAI's `cached_tokens` says how many);
/// another user's edit never continues them. The continued answer is the answer read from scratch.
#[test]
fn a_next_turn_continues_the_cached_conversation_under_the_same_edit_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let usage = |body: &str| -> (Value, String) {
        let v: Value = serde_json::from_str(body).unwrap();
        (v["usage"].clone(), content(&v))
    };
    let turn = |server: &Server, user: &str, messages: &Value| {
        let body = json!({
            "model": "smollm2-135m", "user": user, "messages": messages,
            "max_tokens": 16, "temperature": 0,
        });
        let (status, _, body) = post(server, "/v1/chat/completions", &[], &body.to_string());
        assert_eq!(status, 200, "{body}");
        usage(&body)
    };
    let server = serve(&db, &[]);
    let first = json!([{"role": "user", "content": PROMPT}]);
    let (u1, a1) = turn(&server, "alice", &first);
    assert_eq!(u1["prompt_tokens_details"]["cached_tokens"], 0, "{u1}");
    let second = json!([
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "And one for a sunny afternoon?"},
    ]);
    let (u2, _) = turn(&server, "alice", &second);
    let cached = u2["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let first_prompt = u1["prompt_tokens"].as_u64().unwrap();
    eprintln!(
        "turn 1: {first_prompt} prompt tokens; turn 2: {cached} of {} cached",
        u2["prompt_tokens"]
    );
    assert!(
        cached >= first_prompt,
        "the whole first turn is reused: {u1} {u2}"
    );
    // bob's plan (none) is not alice's: her cells are not continued for him
    let (u3, b_cold) = turn(&server, "bob", &second);
    assert_eq!(u3["prompt_tokens_details"]["cached_tokens"], 0, "{u3}");
    // his own are, and the answer is the one read from scratch
    let (u4, b_warm) = turn(&server, "bob", &second);
    assert!(
        u4["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{u4}"
    );
    assert_eq!(b_warm, b_cold);
}

/// Users `ana` and `ben` with profiles that only add vectors (the `align` route's edit, which runs as
/// llama.cpp's control vector), at layers 10-12, different for each; `cy` with none.
fn vector_store(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("v.db");
    for (name, seed) in [("ana", 7u64), ("ben", 77)] {
        import_profiled(
            &db,
            dir,
            name,
            |l| {
                (
                    json!(common::unit(576, seed + l as u64)),
                    json!(vec![0.0; 576]),
                )
            },
            json!({"fit": {"route": "align", "gamma": 4.0}, "align": {"scale": vec![4.0; 30]}}),
        );
    }
    chameleon(&db, &["user", "add", "cy"]);
    db
}

fn health(server: &Server) -> Value {
    let (status, body) = get(server, "/health", &[]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `--apply lora`: a vector profile runs as llama.cpp's control vector, one profile per batch. Each
/// user's answer is what `generate --user X --apply lora` (the same control vector) says, alone and
/// while other users' requests wait or run; the vector is installed once per change of profile.
#[test]
fn vector_profiles_run_in_the_graph_one_profile_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = vector_store(dir.path());
    let solo = |user: Option<&str>| match user {
        Some(u) => generate(&db, &["--user", u, "--apply", "lora"]),
        None => generate(&db, &[]),
    };
    let (ana, ben, plain) = (solo(Some("ana")), solo(Some("ben")), solo(None));
    assert_ne!(ana, plain, "the test profiles must change the answer");
    assert_ne!(ben, plain);
    assert_ne!(ana, ben);

    let server = serve(&db, &["--apply", "lora", "--parallel", "4"]);
    let ask = |user: Option<&str>| {
        let extra = user.map_or(json!({}), |u| json!({"user": u}));
        let (status, header, body) = post(&server, "/v1/chat/completions", &[], &chat_body(extra));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (content(&v), header)
    };
    // one after another: each alone, the vector changing with the profile, not for a repeat
    let (text, header) = ask(Some("ana"));
    assert_eq!(text, ana);
    assert_eq!(header, "user=ana; edit=yes; way=align@4");
    assert_eq!(health(&server)["vector_switches"], 1);
    assert_eq!(ask(Some("ana")).0, ana);
    assert_eq!(
        health(&server)["vector_switches"],
        1,
        "the same vector stays"
    );
    assert_eq!(ask(Some("ben")).0, ben);
    assert_eq!(ask(Some("cy")).0, plain, "a user without a profile");
    assert_eq!(ask(None).0, plain);
    assert_eq!(health(&server)["vector_switches"], 3, "ana, ben, then none");

    // at once: ben's and the plain request never share a batch with ana's vector, so each is its
    // solo answer; ana's two run together under hers
    let answers: Vec<(Option<&str>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = [Some("ana"), Some("ben"), Some("ana"), None]
            .into_iter()
            .map(|u| s.spawn(move || (u, ask(u).0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (user, text) in &answers {
        match user {
            Some("ben") => assert_eq!(text, &ben),
            None => assert_eq!(text, &plain),
            _ => {}
        }
    }
    let ana_texts: Vec<&String> = answers
        .iter()
        .filter(|(u, _)| *u == Some("ana"))
        .map(|(_, t)| t)
        .collect();
    assert_eq!(ana_texts[0], ana_texts[1]);
    let h = health(&server);
    assert!(h["vector_switches"].as_u64().unwrap() >= 5, "{h}");
}

/// Open a streaming chat request on a raw connection and read until `chunks` SSE data lines have
/// arrived; the connection, still open, is returned with them.
fn open_stream(server: &Server, body: &str, chunks: usize) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let host = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while String::from_utf8_lossy(&raw).matches("data: ").count() < chunks {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    stream
}

/// A client that leaves mid-stream frees its sequence within a few decode steps (its answer would
/// have run on for hundreds of tokens), and SIGTERM with a request in flight stops the server
/// cleanly: the stream ends and the process exits with status 0.
#[test]
fn a_client_that_leaves_frees_its_sequence_and_sigterm_stops_cleanly() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    chameleon(&db, &["user", "add", "ann"]);
    let mut server = serve(&db, &["--parallel", "2"]);
    let long = |stream: bool, max_tokens: u32| {
        json!({
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": "Tell me everything you know about the history of Rome."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": stream,
        })
        .to_string()
    };
    // the same greedy answer runs to the limit when nobody leaves
    let (status, _, body) = post(&server, "/v1/chat/completions", &[], &long(false, 200));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 200, "{body}");

    let stream = open_stream(&server, &long(true, 1000), 8);
    let before = health(&server);
    assert_eq!(before["running"], 1, "{before}");
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let h = health(&server);
        if h["running"] == 0 {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sequence is still running after its client left: {h}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let steps = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    assert!(
        steps < 100,
        "{steps} decode steps after the client left (the answer runs past 200 tokens)"
    );

    // SIGTERM with a stream in flight
    let mut stream = open_stream(&server, &long(true, 1000), 4);
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    // the client is not left hanging: its stream reaches its end
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    assert!(end.is_ok(), "the stream did not end: {end:?}");
}

/// No prompt text reaches the server's log unless `--log-prompts` asks for it: not a user's request,
/// not one that fails (a prompt longer than the context).
#[test]
fn prompts_stay_out_of_the_log_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    chameleon(&db, &["user", "add", "ann"]);
    let secret = "my neighbour's wifi password is zebra-lighthouse";
    let ask = |server: &Server| {
        let body = json!({
            "model": "smollm2-135m:ann",
            "messages": [{"role": "user", "content": secret}],
            "max_tokens": 4,
            "temperature": 0,
        });
        let (status, _, reply) = post(server, "/v1/chat/completions", &[], &body.to_string());
        assert_eq!(status, 200, "{reply}");
        // longer than the context: an error, whose message must not quote it either
        let long = format!("{secret} ").repeat(400);
        let body = json!({"messages": [{"role": "user", "content": long}], "max_tokens": 4});
        let (status, _, reply) = post(server, "/v1/chat/completions", &[], &body.to_string());
        assert!(status >= 400, "{status} {reply}");
        assert!(
            !reply.contains("zebra"),
            "the error quotes the prompt: {reply}"
        );
        // the log is written before the answer is sent, but read by another thread
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = server.log.lock().unwrap().clone();
            if log.contains("request 2") || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let quiet = serve(&db, &[]);
    let log = ask(&quiet);
    assert!(log.contains("request 1 for"), "{log}");
    assert!(!log.contains("zebra"), "a prompt reached the log: {log}");
    drop(quiet);
    let told = serve(&db, &["--log-prompts"]);
    let log = ask(&told);
    assert!(
        log.contains("zebra-lighthouse"),
        "--log-prompts logged no prompt: {log}"
    );
}

/// `stop` (a string or a list) ends the answer before the first stop text, which is not returned;
/// `seed` makes a sampled answer reproducible; unknown fields are ignored.
#[test]
fn stop_texts_and_seeds_behave_as_in_the_openai_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    chameleon(&db, &["user", "add", "ann"]);
    let server = serve(&db, &[]);
    let answer = |extra: Value| -> (String, String) {
        let (status, _, body) = post(&server, "/v1/chat/completions", &[], &chat_body(extra));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            content(&v),
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let (full, _) = answer(json!({}));
    // fields the server does not know are ignored, as OpenAI-compatible servers do
    let (same, _) = answer(json!({"presence_penalty": 0, "a_future_field": {"x": [1, 2]}}));
    assert_eq!(same, full);
    // a word from the middle of the greedy answer
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "a longer answer is needed: {full:?}");
    let word = words[words.len() / 2];
    let cut = &full[..full.find(word).unwrap()];
    for stop in [json!(word), json!(["no such text here", word])] {
        let (text, finish) = answer(json!({ "stop": stop }));
        assert_eq!(text, cut, "stop {stop}");
        assert_eq!(finish, "stop", "stop {stop}");
    }
    // sampling: the same seed, the same answer
    let sampled = |seed: u64| answer(json!({"temperature": 1.0, "top_p": 0.95, "seed": seed})).0;
    assert_eq!(sampled(7), sampled(7));
    let others: Vec<String> = (1..=4).map(sampled).collect();
    assert!(
        others.iter().any(|o| *o != others[0]),
        "four seeds gave one answer: {others:?}"
    );
}
