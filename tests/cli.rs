//! The command line, driven as a process: demo, doctor, generate, edit,
//! completions and help.

mod common;

use std::process::Command;

use common::*;

fn run(args: &[&str], env: &[(&str, String)], cwd: &std::path::Path) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("LOG_LEVEL", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_works_offline_and_names_real_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let (code, out, err) = run(&["demo", "--size", "3MiB"], &[], dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("LOCAL FAKE Gemini"));
    assert!(
        out.contains("GEMINI_API_KEY"),
        "says how to switch to the real API"
    );
    let mut checked = 0;
    for line in out.lines() {
        let t = line.trim_start();
        let Some(rest) = t
            .strip_prefix("generated ")
            .or_else(|| t.strip_prefix("edited "))
        else {
            continue;
        };
        let path = rest.trim();
        let bytes = std::fs::read(path).expect("the named file exists");
        let sha = sha256_hex(&bytes);
        assert!(out.contains(&sha), "sha256 of {path} is printed");
        checked += 1;
    }
    assert_eq!(checked, 2, "{out}");
    // Pictures a person recognises, not noise: few colours, and the edit
    // ("make it pink") visibly redder than the image it started from.
    let mut means = Vec::new();
    for prefix in ["generated", "edited"] {
        let file = std::fs::read_dir(dir.path().join("generated_imgs/demo"))
            .expect("demo folder")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .expect("demo image");
        let png = std::fs::read(&file).expect("read");
        let (_, _, px) = nano_banana_mcp::testkit::images::read_back(&png).expect("a picture");
        let colours: std::collections::HashSet<[u8; 3]> = px.iter().copied().collect();
        assert!(colours.len() < 64, "{prefix}: {} colours", colours.len());
        let n = px.len() as f64;
        means.push([0, 1, 2].map(|i| px.iter().map(|p| f64::from(p[i])).sum::<f64>() / n));
    }
    assert!(
        means[1][0] > means[0][0] + 40.0,
        "the edit shows: {means:?}"
    );

    assert!(!out.contains("DOES NOT match") && !out.contains("MISMATCH"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_and_edit_print_where_the_image_is() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let env = vec![
        ("GEMINI_API_KEY", TEST_KEY.to_string()),
        ("GEMINI_BASE_URL", fake.base_url()),
    ];
    let d = dir.path().to_path_buf();
    let env2 = env.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &["generate", "a cat fake:size=300000", "--out", "imgs"],
            &env2,
            &d,
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    let path = out.trim().to_string();
    let bytes = std::fs::read(&path).expect("printed path exists");
    assert_eq!(
        sha256_hex(&bytes),
        fake.state.sent().last().expect("sent").sha256
    );
    assert!(err.contains("committed"), "progress on stderr: {err}");
    let d = dir.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &["edit", &path, "pinker fake:size=100000", "--out", "imgs"],
            &env,
            &d,
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::metadata(out.trim()).is_ok());
    assert_eq!(
        fake.state.requests().last().expect("req").inputs[0].sha256,
        sha256_hex(&bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_broken_setting() {
    let fake = fake().await;
    let dir = tempfile::tempdir().expect("tmp");
    let base = vec![
        ("GEMINI_API_KEY", TEST_KEY.to_string()),
        ("GEMINI_BASE_URL", fake.base_url()),
    ];
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("GEMINI_BASE_URL", fake.base_url())],
            "export GEMINI_API_KEY",
        ),
        (
            [
                base.clone(),
                vec![("GEMINI_MODEL", "gemini-2.5-flash-image-preview".into())],
            ]
            .concat(),
            "GEMINI_MODEL=gemini-3.1-flash-image",
        ),
        (
            [
                base.clone(),
                vec![("GEMINI_API_KEY", "AIzaWRONG-0000000000".into())],
            ]
            .concat(),
            "valid key",
        ),
        (
            [
                base.clone(),
                vec![(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    "AccountName=x;Nonsense".into(),
                )],
            ]
            .concat(),
            "connection string",
        ),
        (
            [
                base.clone(),
                vec![(
                    "AZURE_STORAGE_CONNECTION_STRING",
                    azurite_connection_string("http://127.0.0.1:9/devstoreaccount1"),
                )],
            ]
            .concat(),
            "reachable",
        ),
    ];
    for (env, want) in cases {
        let d = dir.path().to_path_buf();
        let (code, out, _) = tokio::task::spawn_blocking(move || run(&["doctor"], &env, &d))
            .await
            .expect("join");
        assert_ne!(code, 0, "doctor passed but should mention {want}: {out}");
        assert!(out.contains(want), "{out} does not mention {want:?}");
        assert!(out.contains("fix:"));
        assert!(!out.contains(TEST_KEY) && !out.contains(AZURITE_KEY));
    }
    // Healthy: fake Gemini and (when available) Azurite.
    let mut env = base.clone();
    if let Some(ep) = azurite() {
        env.push((
            "AZURE_STORAGE_CONNECTION_STRING",
            azurite_connection_string(&ep),
        ));
        env.push(("AZURE_STORAGE_CONTAINER_NAME", unique("doctor")));
    }
    let d = dir.path().to_path_buf();
    let (code, out, _) = tokio::task::spawn_blocking(move || run(&["doctor"], &env, &d))
        .await
        .expect("join");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("All checks passed"));
}

#[test]
fn help_and_completions() {
    let dir = tempfile::tempdir().expect("tmp");
    for cmd in ["generate", "edit", "demo", "doctor", "serve"] {
        let (code, out, _) = run(&[cmd, "--help"], &[], dir.path());
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{cmd}: {out}");
        if cmd != "serve" {
            assert!(out.contains("Example"), "{cmd} help has examples");
        }
    }
    let (code, out, _) = run(&["completions", "bash"], &[], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("nano-banana-mcp"));
    let (code, _, err) = run(&["--block-size", "nope"], &[], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.lines().count() <= 6,
        "bad config is one clear error: {err}"
    );
}

#[test]
fn each_subcommand_shows_its_own_options() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = std::process::Command::new(env!("CARGO_BIN_EXE_nano-banana-fake-gemini"))
        .arg("--help")
        .output()
        .expect("fake --help");
    let out = String::from_utf8_lossy(&fake.stdout);
    assert!(fake.status.success());
    assert!(
        out.contains("fake:NAME") && out.contains("truncate"),
        "{out}"
    );
    for server_option in ["--azure-container", "--block-size", "--auth-token"] {
        assert!(
            !out.contains(server_option),
            "the fake shows {server_option}"
        );
    }
    let (_, out, _) = run(&["generate", "--help"], &[], dir.path());
    assert!(out.contains("--gemini-model") && !out.contains("--auth-token"));
    // An option before its subcommand would be ignored: it is refused.
    let (code, _, err) = run(&["--block-size", "1MiB", "generate", "x"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--block-size must come after the subcommand"),
        "{err}"
    );
}

#[test]
fn serve_is_the_default_command_and_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    // `--http` without `serve` reaches the HTTP settings: no token, no start.
    let (code, _, err) = run(&["--http", "127.0.0.1:9"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a bearer token"), "{err}");
    let (code, _, err) = run(&["serve", "--http", "127.0.0.1:9"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a bearer token"), "{err}");
    // A guessable token, or one that is only spaces, is no token.
    for (token, want) in [
        ("short-token", "is 11 characters; use at least 16"),
        ("  \n ", "needs a bearer token"),
    ] {
        let (code, _, err) = run(
            &["serve", "--http", "127.0.0.1:9"],
            &[("NANO_BANANA_AUTH_TOKEN", token.to_string())],
            dir.path(),
        );
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(want), "{token:?}: {err}");
        assert!(
            !err.contains("short-token"),
            "the token is not echoed: {err}"
        );
    }
}

#[test]
fn the_server_binary_carries_no_fake_gemini() {
    // Directive names that only the fake's code contains.
    let server = std::fs::read(bin()).expect("server binary");
    let fake = std::fs::read(env!("CARGO_BIN_EXE_nano-banana-fake-gemini")).expect("fake binary");
    for marker in [&b"truncate-after-image"[..], b"midstream-error"] {
        let has = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker);
        assert!(
            has(&fake),
            "the fake knows {:?}",
            String::from_utf8_lossy(marker)
        );
        assert!(
            !has(&server),
            "the server binary contains the fake's {:?}",
            String::from_utf8_lossy(marker)
        );
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (code, _, err) = run(&["fake-gemini", "--help"], &[], dir.path());
    assert_eq!(code, 2, "fake-gemini is not a server subcommand: {err}");
}
