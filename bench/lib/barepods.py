"""Bare pods for bench/compare-k8s.sh: create COUNT busybox pods doing `echo hi`, follow them with
one watch until every one is Succeeded, then delete them (the DELETE calls return; their
teardown is not waited for). Talks to the API server directly (the kubeconfig's server, CA and
token or client certificate), so no client start-up is in the time: the cluster's own cost of a
pod, the floor tenon is measured against.

    python3 barepods.py KUBECONFIG NAMESPACE IMAGE COUNT PREFIX
"""
import base64
import http.client
import json
import os
import ssl
import sys
import tempfile
import threading
import urllib.parse


def load(kubeconfig):
    """server (host, port), ssl context, headers from the kubeconfig's current context."""
    try:
        import yaml  # noqa: F401
        cfg = yaml.safe_load(open(kubeconfig))
    except ImportError:
        # kubectl can print it as JSON
        import subprocess
        cfg = json.loads(subprocess.check_output(
            ["kubectl", "--kubeconfig", kubeconfig, "config", "view", "--raw", "-o", "json"]))
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    url = urllib.parse.urlparse(cluster["server"])
    sslctx = ssl.create_default_context()
    tmp = tempfile.mkdtemp()

    def material(key, data_key, name):
        if data_key in cluster or data_key in user:
            p = os.path.join(tmp, name)
            with open(p, "wb") as f:
                f.write(base64.b64decode(cluster.get(data_key) or user.get(data_key)))
            return p
        v = cluster.get(key) or user.get(key)
        return v and os.path.join(os.path.dirname(kubeconfig), v)

    ca = material("certificate-authority", "certificate-authority-data", "ca.crt")
    if ca:
        sslctx.load_verify_locations(ca)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if "token" in user:
        headers["Authorization"] = "Bearer " + user["token"]
    cert = material("client-certificate", "client-certificate-data", "client.crt")
    key = material("client-key", "client-key-data", "client.key")
    if cert and key:
        sslctx.load_cert_chain(cert, key)
    return (url.hostname, url.port or 443), sslctx, headers


def main():
    kubeconfig, ns, image, count, prefix = sys.argv[1:6]
    count = int(count)
    (host, port), sslctx, headers = load(kubeconfig)
    conn = lambda: http.client.HTTPSConnection(host, port, context=sslctx)
    base = f"/api/v1/namespaces/{ns}/pods"
    names = [f"{prefix}-{i}" for i in range(count)]
    label = f"bench-run={prefix}"
    # the watch first (from the list's resourceVersion), so no event can be missed
    w = conn()
    w.request("GET", f"{base}?labelSelector={urllib.parse.quote(label)}", headers=headers)
    rv = json.loads(w.getresponse().read())["metadata"]["resourceVersion"]
    w.request("GET", f"{base}?watch=1&resourceVersion={rv}&labelSelector={urllib.parse.quote(label)}",
              headers=headers)
    stream = w.getresponse()

    def create(chunk):
        c = conn()
        for n in chunk:
            body = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": n, "labels": {"bench-run": prefix}},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                         "automountServiceAccountToken": False,
                         "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                                         "command": ["sh", "-c", "echo hi"]}]},
            }
            c.request("POST", base, body=json.dumps(body), headers=headers)
            r = c.getresponse()
            out = r.read()
            if r.status != 201:
                sys.exit(f"create {n}: {r.status} {out[:300]!r}")

    # "at once": one connection per pod, as many in flight as there are pods
    threads = [threading.Thread(target=create, args=([n],)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = set()
    while len(done) < count:
        line = stream.readline()
        if not line:
            sys.exit("the watch ended")
        ev = json.loads(line)
        pod = ev["object"]
        phase = pod.get("status", {}).get("phase")
        if phase == "Failed":
            sys.exit(f"pod {pod['metadata']['name']} failed")
        if phase == "Succeeded":
            done.add(pod["metadata"]["name"])
    d = conn()
    d.request("DELETE", f"{base}?labelSelector={urllib.parse.quote(label)}",
              body=json.dumps({"gracePeriodSeconds": 0}), headers=headers)
    r = d.getresponse()
    r.read()
    if r.status >= 300:
        sys.exit(f"delete: {r.status}")


main()
