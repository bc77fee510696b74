//! The test cluster for the Kubernetes end-to-end tests that run whole tables through the
//! executor (`behaviour_k8s.rs`, `conformance_k8s.rs`): its kubeconfig, and a namespace per test.
#![allow(dead_code)]

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

/// The test cluster's kubeconfig; `None` (after saying so) when the test must skip.
pub fn test_kubeconfig(test: &str) -> Option<PathBuf> {
    match std::env::var_os("TENON_TEST_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: CI=true but TENON_TEST_KUBECONFIG is not set: the Kubernetes tests must run in CI")
        }
        _ => {
            eprintln!("SKIPPED {test}: TENON_TEST_KUBECONFIG is not set (the kubeconfig of a throw-away test cluster)");
            None
        }
    }
}

/// Every name of every image the cluster's nodes report.
pub async fn node_images(client: &kube::Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items
        .into_iter()
        .flat_map(|n| n.status.and_then(|s| s.images).unwrap_or_default())
        .flat_map(|i| i.names.unwrap_or_default())
        .collect()
}

/// A namespace of its own, deleted when dropped; fails unless every image in `images` is on a node.
pub struct Namespaced {
    pub kubeconfig: PathBuf,
    pub ns: String,
    client: kube::Client,
    rt: tokio::runtime::Runtime,
    images: Vec<String>,
}

impl Namespaced {
    pub fn new(kubeconfig: PathBuf, prefix: &str, images: &[&str]) -> Namespaced {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client =
            rt.block_on(tenon::exec::kubernetes::client(Some(&kubeconfig), None)).expect("test cluster reachable");
        let names = rt.block_on(node_images(&client));
        for want in images {
            assert!(
                names.iter().any(|n| n == want),
                "image {want} is not on the test cluster: run tests/k8s/make-images.sh"
            );
        }
        let ns = format!(
            "{prefix}-{}",
            &tenon::hash::sha256_hex(format!("{:?}", std::time::Instant::now()).as_bytes())[..6]
        );
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        rt.block_on(Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &obj))
            .expect("create namespace");
        Namespaced { kubeconfig, ns, client, rt, images: names }
    }

    /// Every image name the nodes reported when the namespace was made.
    pub fn images(&self) -> Vec<String> {
        self.images.clone()
    }

    /// `--executor kubernetes` flags for this namespace.
    pub fn flags(&self) -> Vec<String> {
        let kc = self.kubeconfig.display().to_string();
        ["--executor", "kubernetes", "--k8s-kubeconfig", &kc, "--k8s-namespace", &self.ns].map(String::from).to_vec()
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        let _ = self.rt.block_on(Api::<Namespace>::all(self.client.clone()).delete(&self.ns, &DeleteParams::default()));
    }
}
