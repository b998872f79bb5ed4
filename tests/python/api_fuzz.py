"""Property-based testing of the embedded API server from its own OpenAPI document, with
schemathesis (PyPI; nobody here wrote it). Run by tests/apiserver_fuzz.rs with the server's
kubeconfig, a folder for the merged document and the report, and the examples per operation.

Every group-version document the server lists at /openapi/v3 is fetched and merged into one,
and schemathesis sends schema-valid and schema-invalid requests to every operation in it,
checking that no answer is a 5xx or a dropped connection, that every status code and content
type is one the document names, and that every body matches its schema. Two passes: names
fuzzed too (most of them name nothing: 404), then names pinned to one object of each kind made
beforehand, so that replacing and patching existing objects and their status is fuzzed (deletes
are left to the first pass, which would otherwise remove what the second one works on).

Left out, on purpose:
- `watch` on lists: a watch is a stream held open until its timeout (the kubectl, kube-rs and
  Python client tests cover it); every other list parameter is fuzzed.
- The `positive_data_acceptance` check (schema-valid input must be accepted): Kubernetes' API
  has rules no OpenAPI document states, as Kubernetes' own does not (the name in the body must be
  the one in the path and a DNS-1123 name, resourceVersion is a precondition), so schema-valid
  requests are rightly refused with 400, 404, 409 or 422, each a Status the document names.
- The kinds served only because kubectl's default prune list names them (Services, Endpoints,
  Deployments, ...): plain stored objects on exactly the path ConfigMaps take, which is fuzzed;
  fuzzing each of them again would double the run for nothing new.
"""

import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import yaml

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
])

# Server-side apply bodies are YAML; JSON is YAML, so they are sent as JSON.
HOOKS = '''
import json
import schemathesis


@schemathesis.serializer("application/apply-patch+yaml")
class ApplyPatch:
    def as_requests(self, context, value):
        return {"data": json.dumps(value).encode(), "headers": {"Content-Type": "application/apply-patch+yaml"}}

    def as_werkzeug(self, context, value):
        return {"data": json.dumps(value).encode()}
'''


def server_of(kubeconfig):
    with open(kubeconfig) as file:
        config = yaml.safe_load(file)
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    return cluster["server"], user["token"], cluster["certificate-authority-data"]


def fetch(url, token, context):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context) as answer:
        return json.load(answer)


def merged_document(server, token, context):
    index = fetch(f"{server}/openapi/v3", token, context)
    merged = None
    for entry in index["paths"].values():
        document = fetch(server + entry["serverRelativeURL"], token, context)
        if merged is None:
            merged = document
            continue
        merged["paths"].update(document["paths"])
        merged["components"]["schemas"].update(document["components"]["schemas"])
    merged["paths"] = {
        path: operations for path, operations in merged["paths"].items()
        if not any(part in PRUNE_LIST_ONLY for part in path.split("/"))
    }
    for path in merged["paths"].values():
        listing = path.get("get")
        if listing and listing.get("x-kubernetes-action") == "list":
            listing["parameters"] = [p for p in listing["parameters"] if p["name"] != "watch"]
    return merged


FIXTURE = "fuzz"

# URL segments of the kinds served only for `kubectl apply --prune` (see the module's notes).
PRUNE_LIST_ONLY = {
    "endpoints", "persistentvolumeclaims", "persistentvolumes", "replicationcontrollers",
    "services", "batch", "networking.k8s.io", "apps",
}


def fixtures():
    """One object of each kind, named FIXTURE, in namespace FIXTURE (the namespace first)."""
    meta = {"name": FIXTURE, "namespace": FIXTURE}
    group = "/apis/lxd-operator.dev/v1alpha1"
    return [
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FIXTURE}}),
        (f"/api/v1/namespaces/{FIXTURE}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}),
        (f"/api/v1/namespaces/{FIXTURE}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"a": "b"}}),
        (f"/api/v1/namespaces/{FIXTURE}/events", {"apiVersion": "v1", "kind": "Event", "metadata": meta, "reason": "Fuzz", "message": "m", "type": "Normal", "involvedObject": {"kind": "ConfigMap", "name": FIXTURE, "namespace": FIXTURE}}),
        (f"/api/v1/namespaces/{FIXTURE}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": FIXTURE, "containers": [{"name": "a", "image": "busybox"}]}}),
        ("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": FIXTURE}, "status": {"capacity": {"cpu": "2", "memory": "1Gi"}}}),
        (f"/apis/coordination.k8s.io/v1/namespaces/{FIXTURE}/leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
        (f"{group}/lxdclusters", {"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdCluster", "metadata": {"name": FIXTURE}, "spec": {"endpoints": ["https://127.0.0.1:1"], "clientCertSecretRef": {"name": FIXTURE, "namespace": FIXTURE}}}),
        (f"{group}/lxdplacementpolicies", {"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdPlacementPolicy", "metadata": {"name": FIXTURE}, "spec": {}}),
        (f"{group}/namespaces/{FIXTURE}/lxdcontainers", {"apiVersion": "lxd-operator.dev/v1alpha1", "kind": "LxdContainer", "metadata": meta, "spec": {"clusterRef": {"name": FIXTURE}, "image": {"alias": "busybox"}}}),
    ]


def create(server, token, context, path, body):
    request = urllib.request.Request(
        server + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context):
            pass
    except urllib.error.HTTPError as error:
        raise SystemExit(f"cannot create the fixture at {path}: {error.code} {error.read().decode()}")


def pinned(document):
    """The document with every path's names limited to the fixtures'."""
    document = json.loads(json.dumps(document))
    for path in document["paths"].values():
        for parameter in path.get("parameters", []):
            if parameter["in"] == "path":
                parameter["schema"] = {"type": "string", "enum": [FIXTURE]}
    return document


def schemathesis(name, document, server, token, ca, workdir, examples, *extra):
    """Runs schemathesis on `document`; returns (operations, failed operations, tool errors)."""
    schema = os.path.join(workdir, f"openapi-{name}.json")
    with open(schema, "w") as file:
        json.dump(document, file)
    report = os.path.join(workdir, f"junit-{name}.xml")
    seed = os.environ.get("LXD_OPERATOR_FUZZ_SEED", "20261203")
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", schema,
        "--url", server,
        "--header", f"Authorization: Bearer {token}",
        "--tls-verify", ca,
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(examples),
        "--seed", seed,
        "--request-timeout", "10",
        "--workers", "2",
        "--no-color",
        "--report", "junit",
        "--report-junit-path", report,
        *extra,
    ]
    environment = dict(os.environ, SCHEMATHESIS_HOOKS="api_fuzz_hooks", PYTHONPATH=workdir)
    print(f"pass '{name}': {examples} examples an operation, seed {seed}", flush=True)
    # In the work folder: schemathesis keeps a cache of crashes in its current directory.
    subprocess.run(command, env=environment, cwd=workdir)
    # The report tells a finding about the server (a failure) from schemathesis failing in
    # itself (an error: its generator sometimes breaks on deep schemas, in Python's own AST).
    cases = ET.parse(report).getroot().iter("testcase")
    operations = failed = errors = 0
    for case in cases:
        operations += 1
        failed += case.find("failure") is not None
        errors += case.find("error") is not None
    print(f"pass '{name}': {operations} operations, {failed} with failures, {errors} schemathesis errors", flush=True)
    return operations, failed, errors


def main(kubeconfig, workdir, examples):
    import base64

    server, token, ca_data = server_of(kubeconfig)
    ca = os.path.join(workdir, "ca.crt")
    with open(ca, "wb") as file:
        file.write(base64.b64decode(ca_data))
    context = ssl.create_default_context(cafile=ca)
    document = merged_document(server, token, context)
    with open(os.path.join(workdir, "api_fuzz_hooks.py"), "w") as file:
        file.write(HOOKS)

    # Existing objects first: the pass with names fuzzed deletes collections, fixtures included.
    for path, body in fixtures():
        create(server, token, context, path, body)
    passes = [
        schemathesis(
            "fixtures", pinned(document), server, token, ca, workdir, examples,
            # Schema-valid requests only: the pinned names are narrower than what the server takes.
            "--exclude-method", "DELETE", "--mode", "positive",
        ),
        schemathesis("names", document, server, token, ca, workdir, examples),
    ]
    operations = sum(p[0] for p in passes)
    failed = sum(p[1] for p in passes)
    errors = sum(p[2] for p in passes)
    print(f"api fuzz: {operations} operations tested, {failed} with failures, {errors} schemathesis errors")
    # A few operations lost to the tool's own errors are tolerated; most must have run.
    return 1 if failed or errors * 10 > operations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
