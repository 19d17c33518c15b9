//! A real SeaweedFS cluster for the scale-out tests: `tests/support/seaweed.py
//! --serve` starts one (one master, three volume servers, a filer with its
//! S3 API, AWS-like flags), prints its endpoint and keys, and stops when its
//! stdin closes — also when this test process dies.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/seaweed.py");

pub struct SeaweedFs {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl SeaweedFs {
    pub fn start() -> Self {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .args([SCRIPT, "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running tests/support/seaweed.py --serve (pip install -r tests/python/requirements.txt)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("seaweed.py --serve printed {line:?}: {e}"));
        let field = |name: &str| info[name].as_str().unwrap().to_owned();
        SeaweedFs {
            endpoint: field("endpoint"),
            access_key: field("access_key"),
            secret_key: field("secret_key"),
            stdin: child.stdin.take(),
            child,
        }
    }

    /// The flags that put a gateway in front of this cluster.
    pub fn gateway_args(&self) -> Vec<String> {
        ["--backend", "s3", "--upstream-endpoint", &self.endpoint]
            .into_iter()
            .chain(["--upstream-access-key", &self.access_key, "--upstream-secret-key", &self.secret_key])
            .map(str::to_owned)
            .collect()
    }

    /// A client that talks to the upstream directly, not through sealgate.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_credential_types::Credentials::from_keys(&self.access_key, &self.secret_key, None);
        let config = aws_sdk_s3::Config::builder()
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // Closing stdin stops the cluster and removes its directories.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
